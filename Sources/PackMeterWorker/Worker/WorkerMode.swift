import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// What tells `run` from `replay`: where the partitions come from, whether offsets are
/// committed, and when the work is done. Everything else the two share.
protocol WorkerMode: AnyObject {
    var consumer: KafkaConsumer { get }
    /// The consumer group's offsets; nil where there is no group.
    var group: Checkpointer.GroupOffsets? { get }
    /// Takes partitions: joins the group (live) or opens and assigns the range (replay).
    func start(_ running: RunningWorker) throws
    /// After each turn of the loop; true once the work is done.
    func turnIsLast(now: Double, shards: ShardSet) -> Bool
    /// Once the loop has ended, before the final checkpoints.
    func loopEnded(shards: ShardSet)
    /// After the final checkpoints: leaves the group (live).
    func leave()
}

/// `packmeter run`: a member of the consumer group until stopped. Partitions come and go
/// with rebalances, which the running worker answers.
final class LiveMode: WorkerMode {
    let consumer: KafkaConsumer
    private let auditor: CommitAuditor
    private let relay: RebalanceRelay
    private let options: WorkerOptions
    private let logger: Logger

    /// Passes the consumer's rebalance events to the running worker, which exists only after the
    /// consumer does.
    private final class RebalanceRelay {
        weak var running: RunningWorker?

        func handle(_ event: KafkaConsumer.RebalanceEvent) throws -> [TopicPartition: Int64] {
            guard let running else { return [:] }
            return try running.rebalance(event)
        }
    }

    init(options: WorkerOptions, configuration: KafkaConfiguration, logger: Logger) throws {
        let relay = RebalanceRelay()
        self.relay = relay
        self.options = options
        self.logger = logger
        var settings = KafkaConfiguration(Self.groupSettings(instanceID: options.instanceID))
        for (name, value) in configuration.properties { settings.set(name, value) }
        consumer = try KafkaConsumer(bootstrapServers: options.brokers, groupID: options.group, configuration: settings,
                                     logger: logger) { event in try relay.handle(event) }
        auditor = CommitAuditor(consumer: consumer, topic: options.inputTopic, logger: logger)
    }

    /// The group settings for billing (docs/operations.md explains them; `--kafka-config`
    /// overrides). A member that dies is noticed within the session timeout, and only
    /// then do its partitions move on: 10 s rather than librdkafka's 45 s. A static member
    /// (`--instance-id`) is expected back after a restart, and gets its partitions back
    /// without a rebalance if it returns within 30 s.
    static func groupSettings(instanceID: String?) -> [(String, String)] {
        guard let instanceID else {
            return [("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "1000")]
        }
        return [("group.instance.id", instanceID), ("session.timeout.ms", "30000"), ("heartbeat.interval.ms", "1000")]
    }

    var group: Checkpointer.GroupOffsets? {
        Checkpointer.GroupOffsets(
            commit: { [consumer] offsets, wait throws(KafkaError) in try consumer.commit(offsets, wait: wait) },
            auditor: auditor)
    }

    func start(_ running: RunningWorker) throws {
        relay.running = running
        try consumer.subscribe([options.inputTopic])
        logger.info("joined group '\(options.group)' on '\(options.inputTopic)' (\(running.inputPartitionCount) partitions)")
    }

    func turnIsLast(now: Double, shards: ShardSet) -> Bool { false }

    func loopEnded(shards: ShardSet) {}

    func leave() {
        auditor.close()
        consumer.close()
    }
}

/// `packmeter replay`: every partition of the input topic from `--from` to `--to`, without a
/// group, then exit. Draws a progress line on standard error.
final class ReplayMode: WorkerMode {
    let consumer: KafkaConsumer
    private let options: WorkerOptions
    private let from: WorkerOptions.Position
    private let to: WorkerOptions.Position
    private let logger: Logger
    private var progress = ProgressBar()
    private var total: Int64 = 0
    private var startedAt = 0.0

    init(options: WorkerOptions, from: WorkerOptions.Position, to: WorkerOptions.Position, configuration: KafkaConfiguration,
         logger: Logger) throws {
        self.options = options
        self.from = from
        self.to = to
        self.logger = logger
        consumer = try KafkaConsumer(bootstrapServers: options.brokers, groupID: nil, configuration: configuration, logger: logger)
    }

    var group: Checkpointer.GroupOffsets? { nil }

    func start(_ running: RunningWorker) throws {
        let tps = (0..<Int32(running.inputPartitionCount)).map { TopicPartition(options.inputTopic, $0) }
        let (starts, stops) = try range(of: tps)
        try running.open(tps.map(\.partition))
        var assignment: [(TopicPartition, Int64)] = []
        for tp in tps {
            let shard = running.shards[tp.partition]!
            shard.stopOffset = stops[tp.partition]!
            if shard.checkpointedOffset < 0, let start = starts[tp.partition] {
                // No checkpoint of this replay yet: begin at --from.
                shard.nextOffset = start
            }
            shard.startOffset = max(shard.nextOffset, 0)
            if shard.nextOffset >= stops[tp.partition]! { shard.done = true }
            total += max(0, stops[tp.partition]! - shard.startOffset)
            assignment.append((tp, shard.nextOffset))
        }
        try consumer.assign(assignment)
        startedAt = monotonicSeconds()
        logger.info("replaying \(options.inputTopic): \(tps.count) partitions, about \(total) records, into '\(options.outputTopic)' and '\(options.dlqTopic)'")
    }

    /// Per partition, where `--from` starts (absent: the partition's start or the replay's
    /// own checkpoint) and where `--to` stops.
    private func range(of tps: [TopicPartition]) throws -> (starts: [Int32: Int64], stops: [Int32: Int64]) {
        var stops: [Int32: Int64] = [:]
        var nonEmpty: [TopicPartition] = []
        for tp in tps {
            let (low, high) = try consumer.watermarks(tp, timeoutMs: 10_000)
            stops[tp.partition] = high
            if low < high { nonEmpty.append(tp) }
        }
        if case .time = from { try requireTimeIndex(nonEmpty) } else if case .time = to { try requireTimeIndex(nonEmpty) }
        if case let .time(ms) = to {
            for (tp, offset) in try consumer.offsets(forTime: ms, tps, timeoutMs: 10_000) {
                stops[tp.partition] = offset < 0 ? stops[tp.partition]! : min(offset, stops[tp.partition]!)
            }
        }
        var starts: [Int32: Int64] = [:]
        if case let .time(ms) = from {
            for (tp, offset) in try consumer.offsets(forTime: ms, tps, timeoutMs: 10_000) {
                starts[tp.partition] = offset < 0 ? stops[tp.partition]! : offset
            }
        }
        return (starts, stops)
    }

    /// Refuses `--from`/`--to TIME` where the brokers cannot map a time to an offset: asked for
    /// the first record at or after the epoch, a partition holding records must name one.
    /// (librdkafka's mock cluster answers -1 to every such question.)
    private func requireTimeIndex(_ nonEmpty: [TopicPartition]) throws {
        guard !nonEmpty.isEmpty else { return }
        for (tp, offset) in try consumer.offsets(forTime: 0, nonEmpty, timeoutMs: 10_000) where offset < 0 {
            throw WorkerError("--from/--to TIME: the brokers at \(options.brokers) cannot map times to offsets (asked for the first record of \(tp.topic)[\(tp.partition)], which holds records, they answered none); replay by offsets (earliest, end) or use a broker with a time index",
                              kind: .configuration)
        }
    }

    func turnIsLast(now: Double, shards: ShardSet) -> Bool {
        if options.progress { drawProgress(now: now, shards: shards, final: false) }
        return !shards.isEmpty && shards.all.allSatisfy(\.done)
    }

    func leave() {}

    func loopEnded(shards: ShardSet) {
        if options.progress { drawProgress(now: monotonicSeconds(), shards: shards, final: true) }
    }

    /// `[######......] 1,234/5,678 records, 250k records/s, ETA 3 s`, when due (always when
    /// `final`).
    private func drawProgress(now: Double, shards: ShardSet, final: Bool) {
        progress.draw(now: now, force: final) {
            let done = shards.all.reduce(Int64(0)) { sum, shard in
                sum + max(0, min(shard.nextOffset, shard.stopOffset ?? shard.nextOffset) - shard.startOffset)
            }
            let rate = Double(done) / max(now - startedAt, 0.001)
            let total = max(self.total, done)
            let eta = rate > 0 ? Double(total - done) / rate : 0
            return "packmeter replay: \(ProgressBar.bar(done: done, total: total)) \(Summary.grouped(UInt64(done)))/\(Summary.grouped(UInt64(total))) records, \(Summary.compact(rate)) records/s, ETA \(Summary.format2(eta)) s"
        }
        if final { progress.finish() }
    }
}
