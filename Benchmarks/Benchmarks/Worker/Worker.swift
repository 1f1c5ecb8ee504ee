import Benchmark
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import PackMeterWorkload
import PackMeterWorker

// The streaming worker through librdkafka's mock cluster on loopback, in this process: 8
// partitions of typical call records (about 10% end as overage), checkpoints on (every
// 100 ms: see `bill`). Each iteration bills the whole topic with a fresh group and
// checkpoint directory; the same binding polling and dropping the same records gives the
// ceiling. The mock keeps only the newest 5 MiB per partition, so the topic holds 320,000
// records.
//
//   swift package benchmark --target Worker

final class KafkaWorkload: @unchecked Sendable {
    let cluster: MockCluster
    let records: Int
    let configuration: EngineConfiguration
    var round = 0
    var pairs = 0
    let logger: Logger

    init(records: Int) {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        logger = quiet
        cluster = try! MockCluster(brokers: 1, logger: quiet)
        for topic in ["ocr.usage", "ocr.overage", "ocr.usage.dlq"] { try! cluster.createTopic(topic, partitions: 8) }
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        configuration = EngineConfiguration(catalog: catalog, calendar: calendar, notices: .defaults)
        var options = WorkloadGenerator.Options()
        options.accounts = 40_000
        options.accountEventsPerMille = 1
        options.brokenPerMille = 1
        options.duplicatesPerMille = 2
        // Account popularity Zipf 0.92: about 10% of the records end as overage records. An
        // overage record costs librdkafka more CPU than billing a whole input record, so
        // the share moves the rate.
        options.skew = 0.92
        var generator = WorkloadGenerator(options: options, catalog: catalog, calendar: calendar)
        // Loaded as `packmeter generate` loads a topic (linger.ms 100: large message sets).
        // The mock broker finds the set a fetch starts at by walking the partition's sets
        // from the oldest, so small sets would make it, not the worker, the bottleneck.
        let producer = try! KafkaProducer(bootstrapServers: cluster.bootstrapServers,
                                          configuration: KafkaConfiguration([("linger.ms", "100")]), logger: quiet)
        try! producer.produce(records, from: &generator, to: producer.topic("ocr.usage"))
        try! producer.flush(timeoutMs: 60_000)
        // What the mock kept (it drops the oldest beyond 5 MiB per partition).
        var kept: Int64 = 0
        for p in 0..<8 {
            let (low, high) = try! producer.watermarks(TopicPartition("ocr.usage", Int32(p)), timeoutMs: 10_000)
            kept += high - low
        }
        precondition(kept == Int64(records), "the mock cluster kept only \(kept) of \(records) records; produce fewer")
        self.records = records
    }

    /// What one billing pass measured.
    struct Pass {
        var eventsPerSecond: Double
        var coresBusy: Double
        var status: WorkerStatus
        var checkpointsWhileBilling: Int
    }

    /// Bills the topic once with a fresh worker; measures from the first batch polled to
    /// the last billed, on the worker thread (its published status is only refreshed every
    /// 250 ms). `measuring` brackets the wait for the benchmark's own clock.
    func pass(notices: Bool, measuring: (Bool) -> Void = { _ in }) -> Pass {
        round += 1
        var options = WorkerOptions(brokers: cluster.bootstrapServers, engine: configuration)
        options.group = "bench-\(round)"
        // Fresh output topics each round: on the old ones the worker would find its outputs
        // already written and rightly not produce them again.
        options.outputTopic = "ocr.overage.\(round)"
        options.dlqTopic = "ocr.usage.dlq.\(round)"
        try! cluster.createTopic(options.outputTopic, partitions: 8)
        try! cluster.createTopic(options.dlqTopic, partitions: 8)
        options.noticesTopic = notices ? "ocr.notices.\(round)" : nil
        if let topic = options.noticesTopic { try! cluster.createTopic(topic, partitions: 8) }
        options.checkpointDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-bench-\(getpid())-\(round)").path
        defer { try? FileManager.default.removeItem(atPath: options.checkpointDirectory) }
        // Every 100 ms, so that checkpoints fall inside a pass however fast it runs: far
        // more checkpoint work per record than the 5 s default.
        options.checkpointIntervalMs = 100
        options.statusIntervalMs = 3_600_000
        let worker = StreamingWorker(options: options, logger: logger)
        let probe = BatchTimes()
        worker.batchProbe = { probe.note($0) }
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            try! worker.run()
            done.signal()
        }
        thread.stackSize = 16 << 20
        thread.start()
        // The rate comes from the worker thread's probe, so this thread only needs to notice
        // the end, and looks seldom to leave the cores to the worker.
        while worker.currentStatus.counters.recordsRead == 0 { usleep(10_000) }
        measuring(true)
        let started = monotonicSeconds()
        while worker.currentStatus.counters.recordsRead < UInt64(records) {
            precondition(monotonicSeconds() - started < 120, "the worker billed only \(worker.currentStatus.counters.recordsRead) of \(records) records in 120 s")
            usleep(10_000)
        }
        measuring(false)
        worker.requestStop()
        done.wait()
        let status = worker.currentStatus
        precondition(status.outputsSuppressed == 0, "outputs were suppressed as already written")
        let (first, last) = (probe.first!, probe.last!)
        let elapsed = last.seconds - first.seconds
        // The whole process (billing, librdkafka's threads, the mock broker) over the same span.
        return Pass(eventsPerSecond: Double(records) / elapsed, coresBusy: (last.cpuSeconds - first.cpuSeconds) / elapsed,
                    status: status, checkpointsWhileBilling: last.checkpointsStarted - first.checkpointsStarted)
    }

    /// One pass with notices, as the benchmark's iteration.
    func bill(_ benchmark: Benchmark) {
        let pass = pass(notices: true) { $0 ? benchmark.startMeasurement() : benchmark.stopMeasurement() }
        let c = pass.status.counters
        benchmark.measurement(.custom("events/s", polarity: .prefersLarger, useScalingFactor: false), Int(pass.eventsPerSecond))
        benchmark.measurement(.custom("cores busy (%)", useScalingFactor: false), Int(pass.coresBusy * 100))
        benchmark.measurement(.custom("overage records per 1000", useScalingFactor: false), Int(c.overageRecords * 1000 / UInt64(records)))
        benchmark.measurement(.custom("notices per 1000", useScalingFactor: false), Int(c.noticesTotal * 1000 / UInt64(records)))
        benchmark.measurement(.custom("max checkpoint pause (ms)", useScalingFactor: false), Int(pass.status.maxCheckpointStallMs))
        benchmark.measurement(.custom("checkpoints while billing", useScalingFactor: false), pass.checkpointsWhileBilling)
    }

    /// A pass with notices and one without, in alternating order: the rate with notices as
    /// a share of the rate without, paired so that the machine's drift cancels.
    func compareNotices(_ benchmark: Benchmark) {
        pairs += 1
        let withFirst = pairs % 2 == 0
        let first = pass(notices: withFirst)
        let second = pass(notices: !withFirst)
        let (on, off) = withFirst ? (first, second) : (second, first)
        benchmark.measurement(.custom("events/s with notices", polarity: .prefersLarger, useScalingFactor: false), Int(on.eventsPerSecond))
        benchmark.measurement(.custom("events/s without", polarity: .prefersLarger, useScalingFactor: false), Int(off.eventsPerSecond))
        benchmark.measurement(.custom("with as % of without", polarity: .prefersLarger, useScalingFactor: false),
                              Int(on.eventsPerSecond / off.eventsPerSecond * 100))
    }

    /// Polls every record of the topic with the same binding and drops it.
    func drain(_ benchmark: Benchmark) {
        let consumer = try! KafkaConsumer(bootstrapServers: cluster.bootstrapServers, groupID: nil, logger: logger)
        try! consumer.assign((0..<8).map { (TopicPartition("ocr.usage", Int32($0)), KafkaOffset.beginning) })
        let batch = MessageBatch(capacity: 8192)
        var seen = 0
        var bytes = 0
        while seen == 0 { seen += try! consumer.poll(into: batch, timeoutMs: 100) }
        benchmark.startMeasurement()
        let started = monotonicSeconds()
        let cpuBefore = processCPUSeconds()
        while seen < records {
            let n = try! consumer.poll(into: batch, timeoutMs: 100)
            for i in 0..<n { bytes &+= batch[i].value.count }
            seen += n
        }
        benchmark.stopMeasurement()
        let elapsed = monotonicSeconds() - started
        benchmark.measurement(.custom("events/s", polarity: .prefersLarger, useScalingFactor: false), Int(Double(records) / elapsed))
        benchmark.measurement(.custom("cores busy (%)", useScalingFactor: false), Int((processCPUSeconds() - cpuBefore) / elapsed * 100))
        batch.release()
        blackHole(bytes)
        consumer.close()
    }
}

/// The worker thread's clock and the process's CPU time when the first batch was polled and
/// when the newest was billed, from the worker's `batchProbe`.
// Sound as `@unchecked Sendable`: written only by the worker thread, read after it stopped.
final class BatchTimes: @unchecked Sendable {
    struct Moment {
        var seconds: Double
        var cpuSeconds: Double
        var checkpointsStarted: Int
    }

    var first: Moment?
    var last: Moment?

    func note(_ probe: BatchProbe) {
        switch probe.moment {
        case .polled:
            guard first == nil else { return }
            first = Moment(seconds: monotonicSeconds(), cpuSeconds: processCPUSeconds(), checkpointsStarted: probe.checkpointsStarted)
        case .billed:
            last = Moment(seconds: monotonicSeconds(), cpuSeconds: processCPUSeconds(), checkpointsStarted: probe.checkpointsStarted)
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    let records = 320_000
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .peakMemoryResident, .custom("events/s", polarity: .prefersLarger, useScalingFactor: false),
                  .custom("overage records per 1000", useScalingFactor: false), .custom("notices per 1000", useScalingFactor: false),
                  .custom("max checkpoint pause (ms)", useScalingFactor: false), .custom("checkpoints while billing", useScalingFactor: false),
                  .custom("cores busy (%)", useScalingFactor: false)],
        // Eleven iterations: single iterations swing widely on a shared machine.
        maxDuration: .seconds(60), maxIterations: 11)

    // One KafkaWorkload for both, so that the two rates come from the same run.
    nonisolated(unsafe) var shared: KafkaWorkload?
    let workload: @Sendable () -> KafkaWorkload = {
        if let shared { return shared }
        let made = KafkaWorkload(records: records)
        shared = made
        return made
    }

    Benchmark("Worker: packmeter run, 8 partitions, 320k records", configuration: configuration) { benchmark in
        workload().bill(benchmark)
    }

    let paired = Benchmark.Configuration(
        metrics: [.custom("events/s with notices", polarity: .prefersLarger, useScalingFactor: false),
                  .custom("events/s without", polarity: .prefersLarger, useScalingFactor: false),
                  .custom("with as % of without", polarity: .prefersLarger, useScalingFactor: false)],
        maxDuration: .seconds(90), maxIterations: 11)

    Benchmark("Worker: with notices and without, paired", configuration: paired) { benchmark in
        workload().compareNotices(benchmark)
    }

    Benchmark("Worker: the same binding polling and dropping the same records", configuration: configuration) { benchmark in
        workload().drain(benchmark)
    }
}
