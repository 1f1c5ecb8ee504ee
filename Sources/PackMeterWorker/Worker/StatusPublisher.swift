import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// The worker's status: kept by the worker thread, published to readers (HTTP, metrics, the
/// demo) a few times a second, and logged as a status line every `--status-interval`.
final class StatusPublisher {
    /// The worker thread's own copy, which its parts update as they go.
    var status = WorkerStatus()
    /// Hands a copy to the readers.
    private let deliver: (WorkerStatus) -> Void
    /// Whether the brokers answered the last look (`BrokerWatch`); true until one is set.
    var brokersReachable: () -> Bool = { true }
    private let logger: Logger
    private let inputTopic: String
    private let statusIntervalSeconds: Double
    private var nextPublishAt = 0.0
    private var nextLineAt = 0.0
    private var lastLine = (records: UInt64(0), at: 0.0)
    private let owner = ThreadOwner("StatusPublisher")

    static let publishIntervalSeconds = 0.25

    init(options: WorkerOptions, logger: Logger, deliver: @escaping (WorkerStatus) -> Void) {
        self.deliver = deliver
        self.logger = logger
        inputTopic = options.inputTopic
        statusIntervalSeconds = Double(options.statusIntervalMs) / 1000
        let now = monotonicSeconds()
        status.startedAt = now
        status.startedAtMs = wallClockMs()
        nextLineAt = now + statusIntervalSeconds
        lastLine.at = now
        publish()
    }

    /// Publishes when due, and logs the status line when due.
    func turn(now: Double, shards: ShardSet, consumer: KafkaConsumer) {
        if now >= nextPublishAt {
            publish(shards: shards, consumer: consumer)
            nextPublishAt = now + Self.publishIntervalSeconds
        }
        if now >= nextLineAt {
            logLine(shards: shards, consumer: consumer)
            nextLineAt = now + statusIntervalSeconds
        }
    }

    /// Refreshes the figures taken from the shards and hands readers a copy.
    func publish(shards: ShardSet, consumer: KafkaConsumer?) {
        owner.check()
        var accounts = 0
        var balances = 0
        var remembered = 0
        status.positions = [:]
        status.checkpointTakenMs = [:]
        for shard in shards.all {
            let engine = shard.processor.engine
            accounts += engine.accountCount
            balances += engine.liveBalanceCount
            remembered += engine.rememberedIDs
            let end = consumer?.cachedHighWatermark(TopicPartition(inputTopic, shard.partition))
            status.positions[shard.partition] = (shard.nextOffset, end.map { max($0, shard.nextOffset) } ?? shard.stopOffset)
            // A checkpoint that covers everything billed is as good as new.
            let upToDate = shard.nextOffset <= max(0, shard.checkpointedOffset)
            status.checkpointTakenMs[shard.partition] = upToDate ? wallClockMs() : shard.checkpointTakenMs
        }
        let totals = shards.totals
        status.counters = totals.counters
        status.recordsRebilled = totals.recordsRebilled
        status.dedupeEvictions = totals.dedupeEvictions.all
        status.dedupeEvictionsOpenMonth = totals.dedupeEvictions.openMonth
        status.accounts = accounts
        status.liveBalances = balances
        status.rememberedIDs = remembered
        status.assignedPartitions = shards.partitions
        publish()
    }

    /// Hands readers a copy of the status as it stands, marked as of now (`/healthz` reads
    /// how long ago that was).
    func publish() {
        owner.check()
        status.updatedAt = monotonicSeconds()
        status.brokersReachable = brokersReachable()
        deliver(status)
    }

    /// Publishes, then logs one status line.
    func logLine(shards: ShardSet, consumer: KafkaConsumer?) {
        publish(shards: shards, consumer: consumer)
        let now = monotonicSeconds()
        let read = status.counters.recordsRead
        let rate = Double(read - min(read, lastLine.records)) / max(now - lastLine.at, 0.001)
        lastLine = (read, now)
        logger.info("status", metadata: [
            "records_per_s": "\(Int(rate))",
            "records": "\(read)",
            "lag": "\(status.lag)",
            "partitions": "\(status.assignedPartitions.count)",
            "accounts": "\(status.accounts)",
            "overage_calls": "\(status.counters.callsOverage)",
            "dead_letters": "\(status.counters.rejectedTotal)",
            "checkpoint_stall_ms": "\(Int(status.lastCheckpointStallMs))",
            "rebilled": "\(status.recordsRebilled)",
            "fetch_wakeups": "\(status.fetchWakeups)",
            "producer_queue_full": "\(status.producerQueueFull)",
        ])
    }
}
