import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// One run of a `StreamingWorker`, from the Kafka handles opened to the final checkpoint:
/// the parts that hold state while the worker runs, and the loop that turns them.
///
/// Every part is owned by the worker thread (checked in debug builds by each part's
/// `ThreadOwner`); the billing threads borrow shards only inside `ShardSet.bill`.
final class RunningWorker {
    let inputPartitionCount: Int
    let shards: ShardSet
    private let worker: StreamingWorker
    private let options: WorkerOptions
    private let logger: Logger
    private let producer: KafkaProducer
    private let sink: OutputSink
    private let mode: WorkerMode
    private let status: StatusPublisher
    private let opener: PartitionOpener
    private let checkpointer: Checkpointer
    private let brokerWatch: BrokerWatch
    private let members: MemberDirectory?

    init(worker: StreamingWorker, store: any CheckpointStore, inputPartitionCount: Int, status: StatusPublisher,
         members: MemberDirectory?) throws {
        self.members = members
        let options = worker.options
        let logger = worker.logger
        self.worker = worker
        self.options = options
        self.logger = logger
        self.inputPartitionCount = inputPartitionCount
        self.status = status
        let consumerConfiguration = KafkaConfiguration(options.kafkaProperties)
        let producerConfiguration = KafkaConfiguration(options.kafkaProperties.filter { !WorkerOptions.isConsumerProperty($0.0) })
        producer = try KafkaProducer(bootstrapServers: options.brokers, configuration: producerConfiguration, logger: logger)
        let topics = OutputTopics(overage: options.outputTopic, deadLetters: options.dlqTopic,
                                  notices: options.noticesTopic)
        let ledger = OutputLedger(topics: topics)
        producer.onDeliveries = { ledger.delivered($0) }
        let watch = BrokerWatch(producer: producer, topic: options.inputTopic, logger: logger)
        brokerWatch = watch
        status.brokersReachable = { watch.isReachable }
        let producer = self.producer
        let noticesTopic = try topics.notices.map { name throws in try producer.topic(name) }
        sink = OutputSink(producer: producer, overage: try producer.topic(options.outputTopic),
                          deadLetters: try producer.topic(options.dlqTopic), notices: noticesTopic,
                          ledger: ledger,
                          topic: options.inputTopic, logger: logger)
        switch options.mode {
        case .live:
            mode = try LiveMode(options: options, configuration: consumerConfiguration, logger: logger)
        case let .replay(from, to):
            mode = try ReplayMode(options: options, from: from, to: to, configuration: consumerConfiguration, logger: logger)
        }
        shards = ShardSet(inputTopic: options.inputTopic, logger: logger)
        opener = PartitionOpener(options: options, store: store, ledger: ledger, producer: producer, shards: shards,
                                 status: status, logger: logger)
        checkpointer = Checkpointer(store: store, ledger: ledger, shards: shards, producer: producer, status: status,
                                    group: mode.group, options: options, logger: logger)
    }

    /// Bills until the worker is asked to stop (live) or the range is done (replay), then
    /// checkpoints everything and leaves.
    func run() throws {
        let consumer = mode.consumer
        worker.wakeUp.withLock { $0 = { consumer.wakeUp() } }
        defer {
            worker.wakeUp.withLock { $0 = nil }
            brokerWatch.stop()
        }
        try mode.start(self)
        status.status.phase = .running
        let batch = MessageBatch(capacity: options.pollBatchMax)
        defer { batch.release() }
        while !worker.isStopRequested {
            if try turn(batch) { break }
        }
        mode.loopEnded(shards: shards)
        try shutdown()
    }

    /// One turn of the loop: poll and bill a batch, then everything else that is due.
    /// Returns true when the work is done.
    private func turn(_ batch: MessageBatch) throws -> Bool {
        let count = try mode.consumer.poll(into: batch, timeoutMs: 100)
        if count > 0 { try bill(batch, count: count) }
        batch.release()
        // The queue is drained; if it was full, its fetchers may be asleep.
        if count < batch.capacity && mode.consumer.fetchersMayBeParked { wakeParkedFetchers() }
        producer.poll(timeoutMs: 0)
        if let failure = producer.failure { throw failure }
        let now = monotonicSeconds()
        try checkpointer.turn(now: now)
        worker.answerQueries(from: shards)
        status.turn(now: now, shards: shards, consumer: mode.consumer)
        return mode.turnIsLast(now: now, shards: shards)
    }

    private func bill(_ batch: MessageBatch, count: Int) throws {
        if let probe = worker.batchProbe {
            probe(BatchProbe(moment: .polled, recordsRead: shards.recordsRead, checkpointsStarted: status.status.checkpointsStarted))
        }
        let result = try shards.bill(batch, count: count, sink: sink)
        if result.producerQueueWasFull { status.status.producerQueueFull += 1 }
        status.status.outputsSuppressed += result.outputsSuppressed
        status.status.recordsLostToRetention += result.recordsLostToRetention
        if let probe = worker.batchProbe {
            probe(BatchProbe(moment: .billed, recordsRead: shards.recordsRead, checkpointsStarted: status.status.checkpointsStarted))
        }
    }

    /// A worker working through a backlog bills slower than librdkafka fetches, so the
    /// consumer queue fills up again and again, and librdkafka 2.0 then stops fetching
    /// until something wakes its broker thread, up to a second later (see
    /// `KafkaConsumer.fetchersMayBeParked`). Seeking the partitions to where billing stands
    /// wakes the fetchers without skipping or repeating a record.
    private func wakeParkedFetchers() {
        let positions = shards.all.filter { !$0.done }.map { (TopicPartition(options.inputTopic, $0.partition), $0.nextOffset) }
        do {
            try mode.consumer.seek(positions, timeoutMs: 1000)
            status.status.fetchWakeups += 1
        } catch {
            logger.warning("could not restart fetching of \(positions.map(\.0)): \(error)")
        }
    }

    // MARK: - Partitions

    /// Opens partitions (restore and read-back) and notes their offsets for the group.
    func open(_ partitions: [Int32]) throws {
        try opener.open(partitions)
        checkpointer.opened(partitions)
    }

    /// The group's rebalance events, served inside `poll` on the worker thread.
    func rebalance(_ event: KafkaConsumer.RebalanceEvent) throws -> [TopicPartition: Int64] {
        defer { members?.announce(shards.partitions) }
        switch event {
        case let .assigned(tps):
            let mine = tps.filter { $0.topic == options.inputTopic }.map(\.partition)
            logger.info("assigned \(options.inputTopic) partitions \(mine.sorted())")
            status.status.rebalances.assigned += 1
            try open(mine)
            return Dictionary(uniqueKeysWithValues: mine.map { (TopicPartition(options.inputTopic, $0), shards[$0]!.nextOffset) })
        case let .revoked(tps):
            let mine = tps.map(\.partition).filter { shards[$0] != nil }
            logger.info("revoked \(options.inputTopic) partitions \(mine.sorted()): checkpointing them")
            status.status.rebalances.revoked += 1
            try checkpointer.checkpointNow(only: Set(mine))
            for p in mine { shards.retire(p) }
            return [:]
        case let .lost(tps):
            let mine = tps.map(\.partition).filter { shards[$0] != nil }
            logger.warning("lost \(options.inputTopic) partitions \(mine.sorted()) without a rebalance; their work since the last checkpoint is dropped")
            status.status.rebalances.lost += 1
            for p in mine { shards.drop(p) }
            return [:]
        }
    }

    // MARK: - Stop

    /// The graceful end: checkpoints every partition (waiting until durable and committed),
    /// leaves the group and flushes the producer.
    private func shutdown() throws {
        status.status.phase = .stopping
        status.publish()
        logger.info("stopping: writing checkpoints")
        try checkpointer.checkpointNow()
        worker.finalReport = shards.busiestAccounts(limit: 10)
        mode.leave()
        for p in shards.partitions { shards.retire(p) }
        try producer.flush(timeoutMs: 60_000)
        status.status.phase = .stopped
        status.logLine(shards: shards, consumer: nil)
        logger.info("stopped cleanly")
    }
}

/// What the worker tells `StreamingWorker.batchProbe` about each batch.
public struct BatchProbe: Sendable {
    public enum Moment: Sendable {
        /// Polled, about to be billed.
        case polled
        /// Billed, its outputs handed to the producer.
        case billed
    }

    public var moment: Moment
    /// Input records read since the worker started, restored counters included.
    public var recordsRead: UInt64
    /// Checkpoints begun since the worker started.
    public var checkpointsStarted: Int
}
