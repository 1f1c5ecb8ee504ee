import Foundation
import HTTPTestClient
import Testing
import PackMeterKafka

/// What an operator meets around the billing core: the HTTP surface under load, truthful
/// metrics and health, signals at every moment.
@Suite("Operator surface: HTTP under load, metrics, health, signals", .serialized)
struct OperatorSurfaceTests {
    /// A broker with a billed workload and a worker that owns it, ready.
    func readyWorker(_ name: String, events: Int = 20_000) throws -> (dir: String, broker: MockBroker, worker: ChildProcess) {
        let dir = temporaryDirectory(name)
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: events, seed: 11)
        let worker = try ChildProcess("run", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"),
                                      logDirectory: dir)
        try worker.start()
        #expect(worker.waitUntilReady(), "\(worker.log.suffix(2000))")
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { worker.process.isRunning })
        return (dir, broker, worker)
    }

    /// Accounts the worker has state for, from its input topic's keys.
    func accounts(_ broker: MockBroker, limit: Int) throws -> [String] {
        let keys = try readTopic(brokers: broker.bootstrap, topic: "ocr.usage").values.joined().compactMap { $0.key }
        return Array(Set(keys.map { String(decoding: $0, as: UTF8.self) })).sorted().prefix(limit).map { $0 }
    }

    /// Health and metrics answer within 100 ms while 50 clients query balances and 100 idle
    /// connections are held (the load test of the HTTP surface; its throughput is the HTTP
    /// benchmark's to report).
    @Test func healthAndMetrics_answerWithin100ms_under50BalanceClients_and100IdleConnections() throws {
        let (_, broker, worker) = try readyWorker("httpload")
        defer { broker.stop() }
        let address = try #require(worker.httpAddress)
        let names = try accounts(broker, limit: 200)
        let idle = (0..<100).compactMap { _ in connectLoopback(address) }
        defer { idle.forEach { close($0) } }
        #expect(idle.count == 100)
        let stop = Date().addingTimeInterval(6)
        let answered = LockedCounter()
        let failed = LockedCounter()
        let clients = DispatchGroup()
        for client in 0..<50 {
            DispatchQueue.global().async(group: clients) {
                var n = client
                while Date() < stop {
                    let reply = httpGet(address: address, path: "/v1/accounts/\(names[n % names.count])/balances", timeout: 5)
                    if reply?.status == 200 { answered.add() } else { failed.add() }
                    n += 50
                }
            }
        }
        Thread.sleep(forTimeInterval: 1)
        var slowest = 0.0
        for path in Array(repeating: ["/healthz", "/metrics", "/readyz"], count: 10).joined() {
            let started = Date()
            let reply = httpGet(address: address, path: path)
            slowest = max(slowest, Date().timeIntervalSince(started))
            #expect(reply?.status == 200, "\(path): \(String(describing: reply))")
        }
        clients.wait()
        #expect(slowest < 0.1, "the slowest health or metrics answer took \(Int(slowest * 1000)) ms")
        #expect(answered.value > 100 && failed.value == 0, "\(answered.value) balance answers, \(failed.value) failures")
        worker.signal(SIGTERM)
        #expect(worker.wait() == 0, "\(worker.log.suffix(2000))")
    }

    /// `/readyz` went on answering ready for 20 s after the broker was killed.
    @Test func brokerKilled_readyzTurns503_andTheGaugeSaysSo_whileHealthzStaysAlive() throws {
        let (_, broker, worker) = try readyWorker("brokerdown", events: 5_000)
        let address = try #require(worker.httpAddress)
        #expect(worker.metric("packmeter_brokers_reachable") == 1)
        broker.child.signal(SIGKILL)
        _ = broker.child.wait()
        let deadline = Date().addingTimeInterval(15)
        var ready = httpGet(address: address, path: "/readyz")?.status
        while Date() < deadline && ready == 200 {
            Thread.sleep(forTimeInterval: 0.2)
            ready = httpGet(address: address, path: "/readyz")?.status
        }
        #expect(ready == 503)
        #expect(worker.metric("packmeter_brokers_reachable") == 0)
        #expect(httpGet(address: address, path: "/healthz")?.status == 200)
        worker.signal(SIGKILL)
        _ = worker.wait()
    }

    /// `/readyz` said ready for 39 s while the worker owned no partitions (and its balance
    /// answers were 404). With one input partition and two workers, one of them owns none.
    @Test func aWorkerOwningNoPartitions_isNotReady() throws {
        let dir = temporaryDirectory("idlemember")
        let broker = try MockBroker(topics: ["ocr.usage:1", "ocr.overage:1", "ocr.usage.dlq:1", "ocr.notices:1"], directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 1_000, seed: 12)
        let workers = try ["a", "b"].map {
            try ChildProcess("run-\($0)", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"), logDirectory: dir)
        }
        for worker in workers { try worker.start() }
        defer { for worker in workers { worker.signal(SIGKILL); _ = worker.wait() } }
        // One becomes ready; the other, once the group has settled, owns nothing.
        let deadline = Date().addingTimeInterval(60)
        var states: [Int?] = []
        while Date() < deadline {
            states = workers.map { $0.get("/readyz")?.status }
            let owned = workers.map { $0.metric("packmeter_assigned_partitions") ?? -1 }
            if states.contains(200) && owned.contains(0) { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        let owners = workers.map { $0.metric("packmeter_assigned_partitions") ?? -1 }
        #expect(owners.sorted() == [0, 1], "\(owners)")
        for (worker, owned) in zip(workers, owners) {
            #expect(worker.get("/readyz")?.status == (owned == 1 ? 200 : 503), "\(worker.name) owns \(owned): \(String(describing: worker.get("/readyz")))")
        }
    }

    /// SIGTERM and SIGINT were ignored while the worker waited for brokers at start: it
    /// exited 1 after the whole startup timeout.
    @Test(arguments: [SIGTERM, SIGINT])
    func stopSignal_whileWaitingForBrokers_exits0Promptly(signal: Int32) throws {
        let dir = temporaryDirectory("startstop")
        let worker = try ChildProcess("run", arguments: ["run", "--brokers", "127.0.0.1:9", "--checkpoint-dir", "\(dir)/ckpt",
                                                         "--startup-timeout", "60s", "--http", "127.0.0.1:\(freePort())"],
                                      logDirectory: dir)
        try worker.start()
        Thread.sleep(forTimeInterval: 2)
        #expect(worker.get("/readyz")?.status == 503)
        #expect(worker.get("/healthz")?.status == 200, "alive while it waits")
        let started = Date()
        worker.signal(signal)
        #expect(worker.wait(timeout: 30) == 0, "\(worker.log.suffix(2000))")
        #expect(Date().timeIntervalSince(started) < 5)
    }

    /// Counters fell when partitions were lost and counted records twice when they came
    /// back; here a worker is frozen past its session timeout, so that it loses all its
    /// partitions and gets them back, and its counters are checked all along and at the end
    /// against what the topics hold.
    @Test func counters_neverFall_andEqualTheTopics_afterPartitionsAreLostAndRegained() throws {
        let dir = temporaryDirectory("counters")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 60_000, seed: 46)
        let worker = try ChildProcess("run", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt",
                                                                         extra: slowFetching), logDirectory: dir)
        try worker.start()
        #expect(worker.waitUntilReady(), "\(worker.log.suffix(2000))")
        var last: Double = 0
        func sample() {
            guard let records = worker.metric("packmeter_records_total") else { return }
            #expect(records >= last, "records_total fell from \(last) to \(records)")
            last = records
        }
        Thread.sleep(forTimeInterval: 0.3)
        sample()
        worker.signal(SIGSTOP)
        Thread.sleep(forTimeInterval: 9)
        worker.signal(SIGCONT)
        let deadline = Date().addingTimeInterval(300)
        var done = false
        while !done && Date() < deadline && worker.process.isRunning {
            sample()
            done = try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage", timeout: 0.5)
        }
        #expect(done, "\(worker.log.suffix(3000))")
        Thread.sleep(forTimeInterval: 0.5)
        sample()
        let input = try readTopic(brokers: broker.bootstrap, topic: "ocr.usage").values.reduce(0) { $0 + $1.count }
        let overage = try readTopic(brokers: broker.bootstrap, topic: "ocr.overage").values.reduce(0) { $0 + $1.count }
        let deadLetters = try readTopic(brokers: broker.bootstrap, topic: "ocr.usage.dlq").values.reduce(0) { $0 + $1.count }
        let notices = try readTopic(brokers: broker.bootstrap, topic: "ocr.notices").values.reduce(0) { $0 + $1.count }
        #expect(worker.log.contains("lost ocr.usage partitions"), "the partitions were never lost:\n\(worker.log.suffix(2000))")
        #expect(worker.metric("packmeter_records_total") == Double(input))
        #expect(worker.metric("packmeter_overage_records_total") == Double(overage))
        #expect(worker.metric("packmeter_dead_letters_total") == Double(deadLetters))
        #expect(worker.metric("packmeter_notices_total") == Double(notices) && notices > 0)
        #expect((worker.metric("packmeter_records_rebilled_total") ?? 0) > 0, "nothing was billed twice: the test did not test")
        worker.signal(SIGTERM)
        #expect(worker.wait() == 0, "\(worker.log.suffix(2000))")
    }
}

/// A counter many threads add to.
final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
