import Benchmark
import Dispatch
import Foundation
import HTTPTestClient
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterWorker
import PackMeterWorkload
import ServiceLifecycle
import Synchronization

// The worker's HTTP API under load: a worker on librdkafka's mock cluster in this process
// owns 8 partitions of 5,000 accounts; 50 client threads ask for balances of random
// accounts over fresh connections for the measured span, while 100 idle connections are
// held open. Reports balance answers per second, and the slowest /healthz answer taken
// meanwhile.
//
//   swift package benchmark --target HTTP

final class ServedWorker: @unchecked Sendable {
    let cluster: MockCluster
    let worker: StreamingWorker
    let address: String
    let accounts: [String]
    let group: ServiceGroup
    let logger: Logger

    init() async throws {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        logger = quiet
        cluster = try MockCluster(brokers: 1, logger: quiet)
        for topic in ["ocr.usage", "ocr.overage", "ocr.usage.dlq", "ocr.notices"] { try cluster.createTopic(topic, partitions: 8) }
        let configuration = EngineConfiguration(catalog: try Catalog.builtin(), calendar: try BillingCalendar(timeZoneIdentifier: "Asia/Shanghai"))
        var options = WorkloadGenerator.Options()
        options.accounts = 5_000
        var generator = WorkloadGenerator(options: options, catalog: configuration.catalog, calendar: configuration.calendar)
        let producer = try KafkaProducer(bootstrapServers: cluster.bootstrapServers, logger: quiet)
        try producer.produce(100_000, from: &generator, to: producer.topic("ocr.usage"))
        try producer.flush(timeoutMs: 60_000)
        accounts = (0..<options.accounts).map { generator.account($0) }
        var workerOptions = WorkerOptions(brokers: cluster.bootstrapServers, engine: configuration)
        workerOptions.checkpointDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-bench-http-\(getpid())").path
        worker = StreamingWorker(options: workerOptions, logger: quiet)
        let port = freePort()
        address = "127.0.0.1:\(port)"
        let server = try await WorkerHTTP.start(address: address, worker: worker, logger: quiet)
        group = ServiceGroup(services: [server, WorkerService(worker: worker)], logger: quiet)
        let group = self.group
        Task { try await group.run() }
        let deadline = Date().addingTimeInterval(120)
        while httpGet(address: address, path: "/readyz")?.status != 200 || worker.currentStatus.lag > 0 {
            precondition(Date() < deadline, "the worker did not become ready")
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Balance answers from 50 clients over `seconds`, and the slowest health answer.
    func load(seconds: Double) -> (answers: Int, slowestHealthMs: Int) {
        let idle = (0..<100).compactMap { _ in connectLoopback(address) }
        defer { idle.forEach { close($0) } }
        let stop = Date().addingTimeInterval(seconds)
        let answers = Tally()
        let clients = DispatchGroup()
        for client in 0..<50 {
            DispatchQueue.global().async(group: clients) { [accounts, address] in
                var random = SplitMix(seed: UInt64(client))
                var mine = 0
                while Date() < stop {
                    let account = accounts[Int(random.next() % UInt64(accounts.count))]
                    if httpGet(address: address, path: "/v1/accounts/\(account)/balances", timeout: 5)?.status == 200 { mine += 1 }
                }
                answers.count.add(mine, ordering: .relaxed)
            }
        }
        var slowest = 0.0
        while Date() < stop {
            let started = Date()
            _ = httpGet(address: address, path: "/healthz")
            slowest = max(slowest, Date().timeIntervalSince(started))
            usleep(50_000)
        }
        clients.wait()
        return (answers.count.load(ordering: .relaxed), Int(slowest * 1000))
    }
}

/// A count many client threads add to.
final class Tally: Sendable {
    let count = Atomic<Int>(0)
}

let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.custom("balance answers/s", polarity: .prefersLarger, useScalingFactor: false),
                  .custom("slowest /healthz (ms)", useScalingFactor: false)],
        maxDuration: .seconds(60), maxIterations: 5)

    Benchmark("HTTP: balances with 50 clients and 100 idle connections", configuration: configuration) { benchmark, served in
        let seconds = 3.0
        let (answers, slowest) = served.load(seconds: seconds)
        benchmark.measurement(.custom("balance answers/s", polarity: .prefersLarger, useScalingFactor: false), Int(Double(answers) / seconds))
        benchmark.measurement(.custom("slowest /healthz (ms)", useScalingFactor: false), slowest)
    } setup: {
        try await ServedWorker()
    }
}
