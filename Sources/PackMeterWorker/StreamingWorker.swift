import CPackMeterSupport
import Dispatch
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterRuntime
import Synchronization

/// The streaming worker (`packmeter run` and `packmeter replay`): consumes the input topic,
/// bills each input partition with its own engine (shard = partition, one writer: the
/// worker thread), produces overage records and dead letters, and checkpoints.
///
/// **Guarantees.** Outputs go through an idempotent producer; nothing is done until its
/// outputs are acknowledged: a checkpoint covering offset N is written only after every
/// output of the records before N is acknowledged (a barrier in the `OutputLedger`, so
/// processing does not wait for it), and offsets are committed to the group only after the
/// checkpoint covering them is durable. On (re)start each partition resumes
/// from its newest checkpoint (or the partition's start), and the outputs already written
/// past that checkpoint are found in the output topics and not emitted again
/// (`OutputRecovery`): after a crash at any instant, outputs and balances are those of an
/// uninterrupted run.
///
/// **Threads.** `run()` blocks its thread; librdkafka fetches and sends on its own threads;
/// checkpoints are encoded, compressed and written on a background queue from a copy of
/// the engine taken between batches. Partitions take their checkpoints in eight staggered
/// slots of the interval, so each pause copies about an eighth of the state. Readers (HTTP, status) get a published snapshot or
/// have their queries answered by the worker thread between batches, never by locking an
/// engine.
public final class StreamingWorker: @unchecked Sendable {
    public let options: WorkerOptions
    public let logger: Logger
    let store: CheckpointStore

    private let stopRequested = Atomic<Bool>(false)
    private let published = Mutex(WorkerStatus())
    private let queries = Mutex<[BalanceQuery]>([])
    private let completedWrites = Mutex<[CheckpointWrite]>([])
    private let writerQueue = DispatchQueue(label: "packmeter.checkpoint-writer")

    // Owned by the worker thread.
    private var consumer: KafkaConsumer?
    private var producer: KafkaProducer?
    private var overageTopic: ProducerTopic?
    private var dlqTopic: ProducerTopic?
    private var shards: [Int32: Shard] = [:]
    private var ledger: OutputLedger
    private var status = WorkerStatus()
    private var retired = ProcessingCounters()
    private var nextCheckpointAt = 0.0
    private var checkpointSlot = 0
    /// A checkpoint interval is split in this many slots; partition p checkpoints in slot p % slots.
    static let checkpointSlots = 8
    private var nextStatusAt = 0.0
    private var nextPublishAt = 0.0
    private var lastStatusRecords: UInt64 = 0
    private var lastStatusTime = 0.0
    private var replayProgress = ProgressBar()
    private var replayTotal: Int64 = 0
    private var replayStarted = 0.0
    /// Restored partitions whose checkpoint offsets are to be committed once assigned (a
    /// worker may have died between writing a checkpoint and committing it).
    private var restoredCommits: Set<Int32> = []
    /// When a failed commit of `restoredCommits` is tried again.
    private var nextRestoredCommitAt = 0.0
    public private(set) var finalReport: [AccountReport] = []

    struct CheckpointWrite {
        var partition: Int32
        var nextOffset: Int64
        var path: String?
        var bytes: Int
        var error: Error?
    }

    final class BalanceQuery: @unchecked Sendable {
        let account: String
        let month: BillingMonth?
        let done = DispatchSemaphore(value: 0)
        var answer: AccountBalances?
        init(account: String, month: BillingMonth?) {
            self.account = account
            self.month = month
        }
    }

    public init(options: WorkerOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        store = CheckpointStore(directory: options.checkpointDirectory, keep: options.keepCheckpoints, logger: logger)
        ledger = OutputLedger(topics: [options.outputTopic, options.dlqTopic])
    }

    // MARK: - Public surface for readers

    /// Asks the worker to finish the batch in hand, checkpoint, commit and return from `run`.
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    public var isStopRequested: Bool { stopRequested.load(ordering: .relaxed) }

    public var currentStatus: WorkerStatus { published.withLock { $0 } }

    /// An account's balances, answered by the worker thread between batches.
    public func balances(account: String, month: BillingMonth?, timeoutSeconds: Double = 5) -> AccountBalances?? {
        let query = BalanceQuery(account: account, month: month)
        queries.withLock { $0.append(query) }
        guard query.done.wait(timeout: .now() + timeoutSeconds) == .success else { return nil }
        return .some(query.answer)
    }

    // MARK: - Run

    /// Runs until stopped (live) or until the replay range is done. Throws a fatal error.
    public func run() throws {
        status.startedAt = monotonicSeconds()
        // Fetch buffers, decompression buffers and checkpoint copies are freed and allocated
        // again all the time; glibc's defaults returned them to the kernel each time (a
        // third of the process's page faults in the Worker benchmark).
        pm_retain_freed_memory()
        let inputPartitions = try waitForCluster()
        let extra = KafkaConfiguration(options.kafkaProperties)
        let producerExtra = KafkaConfiguration(options.kafkaProperties.filter { !Self.isConsumerProperty($0.0) })
        let producer = try KafkaProducer(bootstrapServers: options.brokers, configuration: producerExtra, logger: logger)
        self.producer = producer
        let ledger = self.ledger
        producer.onDeliveries = { ledger.delivered($0) }
        overageTopic = try producer.topic(options.outputTopic)
        dlqTopic = try producer.topic(options.dlqTopic)

        switch options.mode {
        case .live:
            let consumer = try KafkaConsumer(bootstrapServers: options.brokers, groupID: options.group, configuration: extra,
                                             logger: logger) { [unowned self] event in
                try self.rebalance(event)
            }
            self.consumer = consumer
            try consumer.subscribe([options.inputTopic])
            logger.info("joined group '\(options.group)' on '\(options.inputTopic)' (\(inputPartitions) partitions)")
        case let .replay(from, to):
            let consumer = try KafkaConsumer(bootstrapServers: options.brokers, groupID: nil, configuration: extra, logger: logger)
            self.consumer = consumer
            try startReplay(consumer: consumer, partitions: inputPartitions, from: from, to: to)
        }
        status.phase = .running
        let now = monotonicSeconds()
        nextCheckpointAt = now + checkpointSlotSeconds
        nextStatusAt = now + Double(options.statusIntervalMs) / 1000
        lastStatusTime = now

        let batch = MessageBatch(capacity: options.pollBatchMax)
        do {
            while !isStopRequested {
                let n = try consumer!.poll(into: batch, timeoutMs: 100)
                if n > 0 { try process(batch, count: n) }
                batch.release()
                // The queue is drained; if it was full, its fetchers may be asleep.
                if n < batch.capacity && consumer!.fetchersMayBeParked { wakeParkedFetchers() }
                producer.poll(timeoutMs: 0)
                if let failure = producer.failure { throw failure }
                if !restoredCommits.isEmpty && monotonicSeconds() >= nextRestoredCommitAt { commitRestored() }
                writeCheckpointsPastBarriers()
                try drainCompletedWrites()
                let t = monotonicSeconds()
                if t >= nextCheckpointAt {
                    let slot = checkpointSlot
                    startCheckpoints(shards.values.filter { Int($0.partition) % Self.checkpointSlots == slot })
                    checkpointSlot = (checkpointSlot + 1) % Self.checkpointSlots
                    nextCheckpointAt = monotonicSeconds() + checkpointSlotSeconds
                }
                serveQueries()
                if t >= nextPublishAt { publish(); nextPublishAt = t + 0.25 }
                if t >= nextStatusAt { logStatus(); nextStatusAt = t + Double(options.statusIntervalMs) / 1000 }
                if case .replay = options.mode, options.progress { drawReplayProgress(final: false, now: t) }
                if case .replay = options.mode, !shards.isEmpty, shards.values.allSatisfy(\.done) { break }
            }
            if case .replay = options.mode, options.progress { drawReplayProgress(final: true) }
        } catch {
            batch.release()
            status.phase = .stopped
            publish()
            overageTopic = nil
            dlqTopic = nil
            self.producer = nil
            self.consumer = nil
            throw error
        }
        batch.release()
        try shutdown()
        // Let go of the Kafka handles now, not whenever the worker object goes.
        overageTopic = nil
        dlqTopic = nil
        self.producer = nil
        self.consumer = nil
    }

    private var checkpointSlotSeconds: Double {
        Double(options.checkpointIntervalMs) / 1000 / Double(Self.checkpointSlots)
    }

    /// librdkafka properties that only a consumer takes (the producer would warn about them).
    static func isConsumerProperty(_ name: String) -> Bool {
        ["group.", "session.timeout", "heartbeat.", "max.poll.", "partition.assignment", "auto.", "enable.auto",
         "fetch.", "queued.", "isolation.", "check.crcs", "enable.partition.eof", "coordinator.", "max.partition.fetch"]
            .contains { name.hasPrefix($0) }
    }

    /// Waits for the brokers and the three topics, with backoff; returns the input topic's
    /// partition count.
    private func waitForCluster() throws -> Int {
        let deadline = monotonicSeconds() + Double(options.startupTimeoutMs) / 1000
        var delay = 0.5
        var probe: KafkaConsumer?
        while true {
            let problem: String
            switch probeCluster(&probe) {
            case let .success(partitions): return partitions
            case let .failure(why): problem = why.message
            }
            guard monotonicSeconds() + delay < deadline else {
                throw WorkerError("gave up after \(DurationText.format(milliseconds: options.startupTimeoutMs)): \(problem)")
            }
            logger.warning("waiting for the cluster: \(problem); retrying in \(String(format: "%.1f", delay)) s")
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 10)
        }
    }

    /// One look at the cluster: the input topic's partition count, or what is wrong.
    private func probeCluster(_ probe: inout KafkaConsumer?) -> Result<Int, WorkerError> {
        do {
            if probe == nil {
                probe = try KafkaConsumer(bootstrapServers: options.brokers, groupID: nil,
                                          configuration: KafkaConfiguration([("log_level", "3")]), logger: logger)
            }
            var counts: [String: Int] = [:]
            var missing: [String] = []
            for topic in [options.inputTopic, options.outputTopic, options.dlqTopic] {
                if let count = try probe!.partitionCount(topic, timeoutMs: 5000) { counts[topic] = count } else { missing.append(topic) }
            }
            if missing.isEmpty { return .success(counts[options.inputTopic]!) }
            let names = missing.map { "'\($0)'" }.joined(separator: ", ")
            return .failure(WorkerError("topic\(missing.count > 1 ? "s" : "") \(names) \(missing.count > 1 ? "do" : "does") not exist on \(options.brokers)"))
        } catch {
            return .failure(WorkerError("cannot reach the brokers at \(options.brokers): \(error.message) (\(error.name))"))
        }
    }

    // MARK: - Partitions

    /// A restored shard for partition `p`, from its newest checkpoint or empty.
    private func openShard(_ p: Int32) throws -> (Shard, CheckpointHeader?) {
        let started = monotonicSeconds()
        let restored = try store.restore(topic: options.inputTopic, partition: p, configuration: options.engine)
        let engine = restored?.engine ?? PartitionEngine(catalog: options.engine.catalog, calendar: options.engine.calendar,
                                                         allowedLatenessMs: options.engine.allowedLatenessMs,
                                                         dedupeCapacity: options.engine.dedupeCapacity)
        let processor = PartitionProcessor(engine: engine, topic: options.inputTopic, partition: p,
                                           maxFutureSkewMs: options.engine.maxFutureSkewMs)
        let shard = Shard(partition: p, processor: processor, nextOffset: restored?.header.nextOffset ?? 0)
        if let restored {
            shard.checkpointedOffset = restored.header.nextOffset
            shard.baseCounters = restored.header.counters
            logger.info("restored \(options.inputTopic)[\(p)] from \(restored.path): offset \(restored.header.nextOffset), \(engine.accountCount) accounts, \(String(format: "%.2f", monotonicSeconds() - started)) s")
        } else {
            logger.info("no checkpoint for \(options.inputTopic)[\(p)]: starting from the beginning of the partition")
        }
        status.restoreSeconds += monotonicSeconds() - started
        return (shard, restored?.header)
    }

    /// Opens shards and finds their already-written outputs. Each is read from its
    /// `nextOffset`: a concrete offset, 0 when there is no checkpoint, never the logical
    /// "beginning", which librdkafka resolves with a request that can wait behind another
    /// partition's long-poll fetch (a late start of up to a second was seen). An offset
    /// below the log's start is reset to it (auto.offset.reset).
    private func open(_ partitions: [Int32]) throws {
        status.phase = .recovering
        publish()
        // Our own outputs still in flight (of partitions we lost or gave up) must be in the
        // log before it is read back, or they would be missed and emitted again.
        try producer?.flush(timeoutMs: 60_000)
        var opened: [(Shard, CheckpointHeader?)] = []
        for p in partitions { opened.append(try openShard(p)) }
        let scanFrom = Self.scanStarts(opened.map { $0.1?.outputEndOffsets }, outputTopics: ledger.topics)
        let fromStart = scanFrom.isEmpty
        let recovery = OutputRecovery(brokers: options.brokers, inputTopic: options.inputTopic, outputTopics: ledger.topics, logger: logger)
        let resume = Dictionary(uniqueKeysWithValues: opened.map { ($0.0.partition, $0.0.nextOffset) })
        logger.info("reading back outputs of partitions \(resume.keys.sorted()) (resuming at \(resume.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " "))) from \(fromStart ? "the start" : scanFrom.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " "))" }.joined(separator: "; ")) of the output topics")
        let found = try recovery.scan(resume: resume, scanFrom: scanFrom)
        ledger.raise(to: found.highWatermarks)
        status.recoveryRecordsScanned += found.recordsScanned
        status.recoverySeconds += found.seconds
        for (shard, header) in opened {
            // What this partition's checkpoint knew to be written before its end offsets,
            // and what was written after them.
            shard.written = Array(Set((header?.alreadyWritten ?? []) + (found.written[shard.partition] ?? []))).sorted()
            if !shard.written.isEmpty {
                logger.info("\(options.inputTopic)[\(shard.partition)]: \(shard.written.count) outputs past the checkpoint are already written and will not be emitted again")
            }
            shards[shard.partition] = shard
            // The group's committed offsets follow the checkpoints, also backwards when there
            // is none (rebuilding from the start), so lag is the work left.
            restoredCommits.insert(shard.partition)
        }
        logger.info("read back \(found.recordsScanned) output records in \(String(format: "%.2f", found.seconds)) s")
        status.phase = .running
    }

    /// Where to start reading back each output partition: the smallest end offset any of the
    /// restored checkpoints recorded for it. A partition or topic a checkpoint does not
    /// list, or a partition restored without a checkpoint (nil), is read from its start
    /// (absent from the result).
    static func scanStarts(_ recorded: [[String: [Int32: Int64]]?], outputTopics: [String]) -> [String: [Int32: Int64]] {
        var starts: [String: [Int32: Int64]] = [:]
        for topic in outputTopics {
            let ends = recorded.map { $0?[topic] }
            guard !ends.isEmpty, !ends.contains(where: { $0 == nil }) else { continue }
            let partitions = Set(ends.flatMap { $0!.keys })
            for q in partitions {
                let from = ends.map { $0![q] ?? 0 }.min()!
                if from > 0 { starts[topic, default: [:]][q] = from }
            }
        }
        return starts
    }

    private func rebalance(_ event: KafkaConsumer.RebalanceEvent) throws -> [TopicPartition: Int64] {
        switch event {
        case let .assigned(tps):
            let mine = tps.filter { $0.topic == options.inputTopic }.map(\.partition)
            logger.info("assigned \(options.inputTopic) partitions \(mine.sorted())")
            try open(mine)
            return Dictionary(uniqueKeysWithValues: mine.map { (TopicPartition(options.inputTopic, $0), shards[$0]!.nextOffset) })
        case let .revoked(tps):
            let mine = tps.map(\.partition).filter { shards[$0] != nil }
            logger.info("revoked \(options.inputTopic) partitions \(mine.sorted()): checkpointing them")
            try checkpointNow(only: Set(mine))
            for p in mine { retire(p) }
            return [:]
        case let .lost(tps):
            let mine = tps.map(\.partition).filter { shards[$0] != nil }
            logger.warning("lost \(options.inputTopic) partitions \(mine.sorted()) without a rebalance; their work since the last checkpoint is dropped")
            for p in mine { shards[p] = nil }
            return [:]
        }
    }

    private func retire(_ p: Int32) {
        guard let shard = shards.removeValue(forKey: p) else { return }
        retired.add(shard.processor.counters)
        if status.positions[p] != nil { status.positions[p] = nil }
    }

    private func startReplay(consumer: KafkaConsumer, partitions: Int, from: WorkerOptions.Position, to: WorkerOptions.Position) throws {
        let tps = (0..<Int32(partitions)).map { TopicPartition(options.inputTopic, $0) }
        var stops: [Int32: Int64] = [:]
        for tp in tps {
            let (_, high) = try consumer.watermarks(tp, timeoutMs: 10_000)
            stops[tp.partition] = high
        }
        if case let .time(ms) = to {
            for (tp, offset) in try consumer.offsets(forTime: ms, tps, timeoutMs: 10_000) {
                stops[tp.partition] = offset < 0 ? stops[tp.partition]! : min(offset, stops[tp.partition]!)
            }
        }
        var fromOffsets: [Int32: Int64] = [:]
        if case let .time(ms) = from {
            for (tp, offset) in try consumer.offsets(forTime: ms, tps, timeoutMs: 10_000) {
                fromOffsets[tp.partition] = offset < 0 ? stops[tp.partition]! : offset
            }
        }
        try open(tps.map(\.partition))
        var assignment: [(TopicPartition, Int64)] = []
        for tp in tps {
            let shard = shards[tp.partition]!
            shard.stopOffset = stops[tp.partition]!
            if shard.checkpointedOffset < 0, let start = fromOffsets[tp.partition] {
                // No checkpoint of this replay yet: begin at --from.
                shard.nextOffset = start
            }
            shard.startOffset = max(shard.nextOffset, 0)
            if shard.nextOffset >= shard.stopOffset! { shard.done = true }
            assignment.append((tp, shard.nextOffset))
        }
        try consumer.assign(assignment)
        let total = tps.reduce(Int64(0)) { sum, tp in
            let shard = shards[tp.partition]!
            return sum + max(0, shard.stopOffset! - max(shard.nextOffset, 0))
        }
        replayTotal = total
        replayStarted = monotonicSeconds()
        logger.info("replaying \(options.inputTopic): \(partitions) partitions, about \(total) records, into '\(options.outputTopic)' and '\(options.dlqTopic)'")
    }

    // MARK: - Processing

    private func process(_ batch: MessageBatch, count: Int) throws {
        if status.firstRecordAt == nil {
            status.firstRecordAt = monotonicSeconds()
            status.cpuSecondsAtFirstRecord = processCPUSeconds()
            status.checkpointsStartedAtFirstRecord = status.checkpointsStarted
        }
        // Only the messages' partitions are read here: each shard takes its runs of the
        // batch (a fetched message set at a time) and does the rest on a billing thread.
        var touched: [Shard] = []
        var run: (shard: Shard, start: Int)?
        for i in 0..<count {
            let partition = batch.partition(at: i)
            let failed = batch.isError(at: i)
            if let open = run, open.shard.partition == partition, !failed { continue }
            if let open = run { open.shard.runs.append(open.start..<i) }
            run = nil
            if failed {
                let error = batch[i].error!
                if error.code == KafkaError.partitionEOF { continue }
                if error.code == KafkaError.unknownTopicOrPartition || error.code == KafkaError.unknownTopic {
                    throw WorkerError("input topic '\(options.inputTopic)' went away: \(error)")
                }
                logger.error("consume error: \(error)")
                continue
            }
            guard let shard = shards[partition], !shard.done else { continue }
            if shard.runs.isEmpty { touched.append(shard) }
            run = (shard, i)
        }
        if let open = run { open.shard.runs.append(open.start..<count) }
        // Partitions share nothing while they are billed, so the batch's partitions are
        // taken, billed and produced on every core, each by one thread.
        let sink = OutputSink(producer: producer!, overage: overageTopic!, deadLetters: dlqTopic!, ledger: ledger,
                              topic: options.inputTopic, logger: logger)
        if touched.count > 1 {
            // Largest first, so that no thread is left with a big one at the end.
            touched.sort { $0.runsLength > $1.runsLength }
            let work = BillingWork(touched, batch: batch, sink: sink)
            DispatchQueue.concurrentPerform(iterations: touched.count) { work.shards[$0].take(work.batch, producingTo: work.sink) }
        } else {
            touched.first?.take(batch, producingTo: sink)
        }
        for shard in touched {
            if let failure = shard.failure {
                shard.failure = nil
                throw failure
            }
            // What a full producer queue left over: here the queue's deliveries can be served.
            if shard.hasOutputsLeft {
                status.producerQueueFull += 1
                try shard.produceRest(to: sink)
            }
            status.outputsSuppressed += shard.suppressed
            status.recordsLostToRetention += shard.lostToRetention
            shard.suppressed = 0
            shard.lostToRetention = 0
            if let stop = shard.stopOffset, shard.nextOffset >= stop { shard.done = true }
        }
        status.lastBatchAt = monotonicSeconds()
        status.cpuSecondsAtLastBatch = processCPUSeconds()
        status.checkpointsStartedAtLastBatch = status.checkpointsStarted
    }

    /// A worker working through a backlog bills slower than librdkafka fetches, so the
    /// consumer queue fills up again and again, and librdkafka 2.0 then stops fetching
    /// until something wakes its broker thread, up to a second later (see
    /// `KafkaConsumer.fetchersMayBeParked`). Once the worker has drained the queue, seeking
    /// its partitions to their next offsets wakes the fetchers: that is where billing
    /// stands, so nothing is skipped or read twice.
    private func wakeParkedFetchers() {
        guard let consumer else { return }
        let positions = shards.values.filter { !$0.done }.map { (TopicPartition(options.inputTopic, $0.partition), $0.nextOffset) }
        do {
            try consumer.seek(positions, timeoutMs: 1000)
            status.fetchWakeups += 1
        } catch {
            logger.warning("could not restart fetching of \(positions.map(\.0)): \(error)")
        }
    }

    // MARK: - Checkpoints

    /// Starts checkpoints of `candidates` that advanced: copies their engines (the only pause
    /// processing sees) and raises a barrier behind every output produced so far; they are
    /// written once it completes (`writeCheckpointsPastBarriers`).
    private func startCheckpoints(_ candidates: [Shard]) {
        let started = monotonicSeconds()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var pending: [PendingCheckpoint] = []
        for shard in candidates where shard.nextOffset > shard.checkpointedOffset && !shard.writeInFlight {
            var counters = shard.baseCounters
            counters.add(shard.processor.counters)
            pending.append(PendingCheckpoint(partition: shard.partition, nextOffset: shard.nextOffset,
                                             copy: EngineCopy(engine: shard.processor.engine.copy()), counters: counters,
                                             alreadyWritten: shard.writtenFrom(shard.nextOffset), createdMs: now, shard: shard))
            shard.writeInFlight = true
        }
        guard !pending.isEmpty else { return }
        status.checkpointsStarted += pending.count
        ledger.raiseBarrier(for: pending)
        let stallMs = (monotonicSeconds() - started) * 1000
        status.lastCheckpointStallMs = stallMs
        status.maxCheckpointStallMs = max(status.maxCheckpointStallMs, stallMs)
    }

    /// Hands the checkpoints whose outputs are all acknowledged to the writer.
    private func writeCheckpointsPastBarriers() {
        for (checkpoints, ends) in ledger.takeCompleted() {
            for pending in checkpoints {
                if let owner = pending.shard, shards[pending.partition] !== owner {
                    logger.info("\(options.inputTopic)[\(pending.partition)] was lost before its checkpoint at \(pending.nextOffset) could be written; dropping it")
                    continue
                }
                let header = CheckpointHeader(topic: options.inputTopic, partition: pending.partition, nextOffset: pending.nextOffset,
                                              configuration: options.engine, counters: pending.counters, createdMs: pending.createdMs,
                                              outputEndOffsets: ends, alreadyWritten: pending.alreadyWritten)
                let (partition, offset, copy) = (pending.partition, pending.nextOffset, pending.copy)
                writerQueue.async { [store, self] in
                    var result = CheckpointWrite(partition: partition, nextOffset: offset, path: nil, bytes: 0, error: nil)
                    do {
                        (result.path, result.bytes) = try store.write(copy.engine, header: header)
                    } catch {
                        result.error = error
                    }
                    self.completedWrites.withLock { $0.append(result) }
                }
            }
        }
    }

    /// Checkpoints `only` (all shards when nil) and waits until they are durable and
    /// committed: on revocation and at shutdown.
    private func checkpointNow(only: Set<Int32>? = nil) throws {
        // After a fatal error the producer is gone and nothing more is declared done.
        guard let producer, only?.isEmpty != true else { return }
        // Let the checkpoints already under way finish first.
        try producer.flush(timeoutMs: 60_000)
        writeCheckpointsPastBarriers()
        writerQueue.sync {}
        try drainCompletedWrites()
        startCheckpoints(shards.values.filter { only == nil || only!.contains($0.partition) })
        try producer.flush(timeoutMs: 60_000)
        writeCheckpointsPastBarriers()
        writerQueue.sync {}
        try drainCompletedWrites(waitForCommit: true)
    }

    /// Marks durable checkpoints and commits the offsets they cover: in the background
    /// while running (a commit only moves the group's lag; positions come from the
    /// checkpoints), waiting for the coordinator with `waitForCommit`.
    private func drainCompletedWrites(waitForCommit: Bool = false) throws {
        let done = completedWrites.withLock { list -> [CheckpointWrite] in
            defer { list.removeAll() }
            return list
        }
        guard !done.isEmpty else { return }
        var commits: [(TopicPartition, Int64)] = []
        for write in done {
            if let error = write.error { throw WorkerError("cannot write a checkpoint of \(options.inputTopic)[\(write.partition)]: \(error)") }
            status.checkpointsWritten += 1
            status.checkpointBytes = write.bytes
            status.lastCheckpointPath = write.path
            guard let shard = shards[write.partition] else { continue }
            shard.writeInFlight = false
            shard.checkpointedOffset = max(shard.checkpointedOffset, write.nextOffset)
            commits.append((TopicPartition(options.inputTopic, write.partition), write.nextOffset))
        }
        if case .live = options.mode, !commits.isEmpty {
            do {
                try consumer?.commit(commits, wait: waitForCommit)
            } catch {
                // A failed commit only delays lag reporting: positions come from checkpoints.
                logger.warning("could not commit offsets: \(error)")
            }
        }
    }

    /// Sets the group's committed offsets to the offsets the partitions' checkpoints cover
    /// (0 without one) before the work is under way, waiting for the coordinator: until then
    /// the group may still show offsets no usable checkpoint covers (a newest checkpoint
    /// found damaged, or deleted), and anyone reading the lag would take unfinished work
    /// for done. A checkpoint written since is what is committed; a failed commit is tried
    /// again a second later.
    private func commitRestored() {
        let commits = restoredCommits.sorted().compactMap { p -> (TopicPartition, Int64)? in
            guard let shard = shards[p] else { return nil }
            return (TopicPartition(options.inputTopic, p), max(0, shard.checkpointedOffset))
        }
        guard case .live = options.mode, !commits.isEmpty else {
            restoredCommits.removeAll()
            return
        }
        do {
            try consumer?.commit(commits, wait: true)
            restoredCommits.removeAll()
            logger.info("group offsets set to the restored positions: \(commits.map { "\($0.0.partition):\($0.1)" }.joined(separator: " "))")
        } catch {
            restoredCommits = Set(commits.map(\.0.partition))
            nextRestoredCommitAt = monotonicSeconds() + 1
            logger.warning("could not commit restored offsets (trying again): \(error)")
        }
    }

    // MARK: - Stop

    private func shutdown() throws {
        status.phase = .stopping
        publish()
        logger.info("stopping: writing checkpoints")
        try checkpointNow()
        finalReport = busiestAccounts(limit: 10)
        if case .live = options.mode {
            consumer?.close()
        }
        for p in Array(shards.keys) { retire(p) }
        try producer?.flush(timeoutMs: 60_000)
        status.phase = .stopped
        logStatus()
        logger.info("stopped cleanly")
    }

    /// The accounts with the most billable calls across this worker's partitions.
    private func busiestAccounts(limit: Int) -> [AccountReport] {
        var reports: [AccountReport] = []
        for shard in shards.values.sorted(by: { $0.partition < $1.partition }) {
            let engine = shard.processor.engine
            for (account, calls) in engine.busiestAccounts(limit: limit) {
                reports.append(AccountReport(account: engine.name(of: account), partition: shard.partition,
                                             billableCalls: calls, balances: engine.balances(of: account)))
            }
        }
        return Array(reports.sorted { $0.billableCalls > $1.billableCalls }.prefix(limit))
    }

    // MARK: - Readers

    private func serveQueries() {
        let pending = queries.withLock { list -> [BalanceQuery] in
            defer { list.removeAll() }
            return list
        }
        for query in pending {
            for shard in shards.values {
                if let b = shard.processor.engine.balances(ofAccountNamed: query.account, month: query.month) {
                    query.answer = b
                    break
                }
            }
            query.done.signal()
        }
    }

    private func publish() {
        var counters = retired
        var accounts = 0
        var balances = 0
        var remembered = 0
        var evictions: (UInt64, UInt64) = (0, 0)
        for shard in shards.values {
            counters.add(shard.baseCounters)
            counters.add(shard.processor.counters)
            let engine = shard.processor.engine
            accounts += engine.accountCount
            balances += engine.liveBalanceCount
            remembered += engine.rememberedIDs
            evictions.0 += engine.dedupeEvictions.all
            evictions.1 += engine.dedupeEvictions.openMonth
            let end = consumer?.cachedHighWatermark(TopicPartition(options.inputTopic, shard.partition))
            status.positions[shard.partition] = (shard.nextOffset, end.map { max($0, shard.nextOffset) } ?? (shard.stopOffset))
        }
        status.counters = counters
        status.accounts = accounts
        status.liveBalances = balances
        status.rememberedIDs = remembered
        status.dedupeEvictions = evictions.0
        status.dedupeEvictionsOpenMonth = evictions.1
        status.assignedPartitions = shards.keys.sorted()
        status.updatedAt = monotonicSeconds()
        let snapshot = status
        published.withLock { $0 = snapshot }
    }

    /// `[######......] 1,234/5,678 records, 250k records/s, ETA 3 s` on standard error, when
    /// the progress line is due (always when `final`).
    private func drawReplayProgress(final: Bool, now: Double = monotonicSeconds()) {
        replayProgress.draw(now: now, force: final) {
            let done = shards.values.reduce(Int64(0)) { sum, shard in
                sum + max(0, min(shard.nextOffset, shard.stopOffset ?? shard.nextOffset) - shard.startOffset)
            }
            let rate = Double(done) / max(now - replayStarted, 0.001)
            let total = max(replayTotal, done)
            let eta = rate > 0 ? Double(total - done) / rate : 0
            return "packmeter replay: \(ProgressBar.bar(done: done, total: total)) \(Summary.grouped(UInt64(done)))/\(Summary.grouped(UInt64(total))) records, \(Summary.compact(rate)) records/s, ETA \(Summary.format2(eta)) s"
        }
        if final { replayProgress.finish() }
    }

    private func logStatus() {
        publish()
        let now = monotonicSeconds()
        let read = status.counters.recordsRead
        let rate = Double(read - min(read, lastStatusRecords)) / max(now - lastStatusTime, 0.001)
        lastStatusRecords = read
        lastStatusTime = now
        logger.info("status", metadata: [
            "records_per_s": "\(Int(rate))",
            "records": "\(read)",
            "lag": "\(status.lag)",
            "partitions": "\(status.assignedPartitions.count)",
            "accounts": "\(status.accounts)",
            "overage_calls": "\(status.counters.callsOverage)",
            "dead_letters": "\(status.counters.rejectedTotal)",
            "checkpoint_stall_ms": "\(Int(status.lastCheckpointStallMs))",
            "fetch_wakeups": "\(status.fetchWakeups)",
            "producer_queue_full": "\(status.producerQueueFull)",
        ])
    }
}

/// An engine copy on its way to the checkpoint writer. Sound as `@unchecked Sendable`: the
/// copy is made for the writer and nothing else keeps a reference to it.
struct EngineCopy: @unchecked Sendable {
    let engine: PartitionEngine
}

/// The shards of one batch, each taken by exactly one of `concurrentPerform`'s threads
/// while the worker thread waits for them all: a shard is only ever touched by one thread
/// at a time, and `concurrentPerform` orders those touches. A billing thread returns only
/// its shard's messages to librdkafka, produces with `KafkaProducer.offer` (which never
/// serves delivery reports) and takes sequence numbers from the ledger atomically. Hence
/// `@unchecked Sendable`.
struct BillingWork: @unchecked Sendable {
    let shards: [Shard]
    let batch: MessageBatch
    let sink: OutputSink
    init(_ shards: [Shard], batch: MessageBatch, sink: OutputSink) {
        self.shards = shards
        self.batch = batch
        self.sink = sink
    }
}

/// Where the shards' outputs go.
struct OutputSink {
    let producer: KafkaProducer
    let overage: ProducerTopic
    let deadLetters: ProducerTopic
    let ledger: OutputLedger
    /// The input topic, for log lines.
    let topic: String
    let logger: Logger
}

/// One input partition's engine and position, owned by the worker thread (and lent to a
/// billing thread for the span of `concurrentPerform`).
final class Shard {
    let partition: Int32
    let processor: PartitionProcessor
    /// The next input offset to process.
    var nextOffset: Int64
    /// The offset the newest durable checkpoint covers (-1: none).
    var checkpointedOffset: Int64 = -1
    var writeInFlight = false
    /// Counters of the run that wrote the checkpoint this shard was restored from.
    var baseCounters = ProcessingCounters()
    /// Replay: stop before this offset; where this run started.
    var stopOffset: Int64?
    var startOffset: Int64 = 0
    var done = false
    var sawRecord = false
    /// Input offsets whose output is already in the output topics, ascending.
    var written: [Int64] = []
    private var writtenCursor = 0
    /// This batch's messages of this partition, as index ranges of the batch.
    var runs: [Range<Int>] = []
    var runsLength: Int { runs.reduce(0) { $0 + $1.count } }
    var pending: [InputRecord] = []
    let output = OutputBatch()
    /// Which outputs of `output` to produce (all of them, or those listed when some were
    /// already written), how many of them are produced, and the sequence number of the first.
    private var producingAll = true
    private var toProduce: [Int32] = []
    private var producedCount = 0
    private var firstSequence: UInt64 = 0
    /// Counted while the shard is lent to a billing thread; the worker thread adds them to
    /// its status.
    var suppressed: UInt64 = 0
    var lostToRetention: UInt64 = 0
    /// A failure on the billing thread, for the worker thread to throw.
    var failure: KafkaError?

    init(partition: Int32, processor: PartitionProcessor, nextOffset: Int64) {
        self.partition = partition
        self.processor = processor
        self.nextOffset = nextOffset
        pending.reserveCapacity(8192)
    }

    /// Takes this partition's runs of `batch`, bills them, produces their outputs (as far
    /// as the producer's queue has room) and returns the messages to librdkafka.
    func take(_ batch: MessageBatch, producingTo sink: OutputSink) {
        gather(batch, sink)
        billPending()
        numberOutputs(sink.ledger)
        do {
            try produce(to: sink, waiting: false)
        } catch {
            failure = error
        }
        for run in runs { batch.release(run) }
        runs.removeAll(keepingCapacity: true)
    }

    var hasOutputsLeft: Bool { producedCount < outputsToProduce }

    private var outputsToProduce: Int { producingAll ? output.count : toProduce.count }

    /// Produces the outputs `take` left for lack of room, serving delivery reports while the
    /// queue is full: on the worker thread only.
    func produceRest(to sink: OutputSink) throws(KafkaError) {
        try produce(to: sink, waiting: true)
    }

    /// Turns this partition's runs of `batch` into `pending` records. Works on locals: the
    /// shard's stored properties would each be checked for exclusive access per message.
    private func gather(_ batch: MessageBatch, _ sink: OutputSink) {
        var records = pending
        pending = []
        var next = nextOffset
        var seen = sawRecord
        defer {
            pending = records
            nextOffset = next
            sawRecord = seen
        }
        for run in runs {
            for i in run {
                let message = batch[i]
                if let stop = stopOffset, message.offset >= stop {
                    done = true
                    return
                }
                // Already billed: a fetch for the position before a seek.
                if message.offset < next { continue }
                if message.offset > next && (seen && records.isEmpty || !seen && checkpointedOffset >= 0) {
                    let gap = message.offset - next
                    lostToRetention += UInt64(gap)
                    sink.logger.error(seen
                        ? "\(sink.topic)[\(partition)]: records \(next)..<\(message.offset) are gone from the broker (retention) and were never billed"
                        : "\(sink.topic)[\(partition)]: resuming at \(next) but the partition now starts at \(message.offset); \(gap) records were never billed")
                }
                seen = true
                records.append(InputRecord(value: message.value, key: message.key, offset: message.offset,
                                           timestampMs: message.timestampMs ?? InputRecord.noTimestamp))
                next = message.offset + 1
            }
        }
    }

    /// Bills the records gathered for this partition into `output`.
    func billPending() {
        output.removeAll()
        pending.withUnsafeBufferPointer { processor.process($0, into: output) }
        pending.removeAll(keepingCapacity: true)
    }

    /// Leaves out the outputs already in the output topics and numbers the rest.
    private func numberOutputs(_ ledger: OutputLedger) {
        producedCount = 0
        producingAll = written.isEmpty
        toProduce.removeAll(keepingCapacity: true)
        if !producingAll {
            for (n, entry) in output.entries.enumerated() {
                if isWritten(entry.sourceOffset) { suppressed += 1 } else { toProduce.append(Int32(n)) }
            }
        }
        firstSequence = outputsToProduce == 0 ? 0 : ledger.reserve(outputsToProduce)
    }

    private func produce(to sink: OutputSink, waiting: Bool) throws(KafkaError) {
        let count = outputsToProduce
        while producedCount < count {
            let entry = output.entries[producingAll ? producedCount : Int(toProduce[producedCount])]
            let overage = entry.kind == .overage
            let topic = overage ? sink.overage : sink.deadLetters
            let tag = OutputLedger.tag(firstSequence + UInt64(producedCount), topicIndex: overage ? 0 : 1)
            if waiting {
                try sink.producer.produce(topic, key: output.key(of: entry), value: output.value(of: entry), tag: tag)
            } else if try !sink.producer.offer(topic, key: output.key(of: entry), value: output.value(of: entry), tag: tag) {
                return
            }
            producedCount += 1
        }
    }

    /// The already-written offsets at or after `offset`, for a checkpoint at `offset`.
    func writtenFrom(_ offset: Int64) -> [Int64] {
        guard writtenCursor < written.count else { return [] }
        return written[writtenCursor...].filter { $0 >= offset }
    }

    /// Whether the output of input offset `offset` is already written. Offsets are asked in
    /// increasing order.
    @inline(__always)
    func isWritten(_ offset: Int64) -> Bool {
        guard writtenCursor < written.count else { return false }
        while writtenCursor < written.count && written[writtenCursor] < offset { writtenCursor += 1 }
        if writtenCursor < written.count && written[writtenCursor] == offset {
            writtenCursor += 1
            if writtenCursor == written.count { written = [] ; writtenCursor = 0 }
            return true
        }
        return false
    }
}
