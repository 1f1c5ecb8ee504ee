import Dispatch
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// Opens input partitions for billing: restores each from its newest usable checkpoint (or
/// starts it empty at offset 0), then reads the output topics back to find the outputs
/// already written past those checkpoints (`OutputReadBack`), so none is written twice.
struct PartitionOpener {
    let options: WorkerOptions
    let store: any CheckpointStore
    let ledger: OutputLedger
    let producer: KafkaProducer
    let shards: ShardSet
    let status: StatusPublisher
    let logger: Logger

    /// Opens `partitions` and adds their shards. Each shard resumes at a concrete offset (0
    /// without a checkpoint), never the logical "beginning", which librdkafka resolves with a
    /// request that can wait behind another partition's long-poll fetch.
    func open(_ partitions: [Int32]) throws {
        guard !partitions.isEmpty else { return }
        status.status.phase = .recovering
        status.publish()
        // Our own outputs still in flight (of partitions we lost or gave up) must be in the
        // log before it is read back, or they would be missed and written again.
        try producer.flush(timeoutMs: 60_000)
        let opened = try restore(partitions)
        let found = try readBack(opened)
        for (shard, header) in opened {
            // What the checkpoint knew to be written past its end offsets, and what was
            // written after them.
            shard.written = Array(Set((header?.alreadyWritten ?? []) + (found.written[shard.partition] ?? []))).sorted()
            // The newest output already written shows how far the partition was billed before
            // (by this worker or another): the records up to it are billed again.
            let billedBefore = (shard.written.last?.offset).map { $0 + 1 } ?? -1
            if !shard.written.isEmpty {
                logger.info("\(options.inputTopic)[\(shard.partition)]: \(shard.written.count) outputs past the checkpoint are already written and will not be emitted again; \(billedBefore - shard.nextOffset) records from \(shard.nextOffset) are billed again")
            }
            shards.insert(shard, billedBefore: billedBefore)
            status.status.partitionsOpened += 1
        }
        status.status.phase = .running
    }

    /// Shards for `partitions`, each restored from its newest usable checkpoint or empty.
    /// The checkpoints are read and decoded on every core at once.
    private func restore(_ partitions: [Int32]) throws -> [(Shard, CheckpointHeader?)] {
        let started = monotonicSeconds()
        store.prepareRestore(topic: options.inputTopic, partitions: partitions)
        let results = RestoreResults(count: partitions.count)
        let (store, options) = (self.store, self.options)
        DispatchQueue.concurrentPerform(iterations: partitions.count) { i in
            results.slots[i] = Result { () throws(CheckpointError) in
                try store.restore(topic: options.inputTopic, partition: partitions[i], configuration: options.engine)
            }
        }
        let seconds = monotonicSeconds() - started
        status.status.restoreSeconds += seconds
        var opened: [(Shard, CheckpointHeader?)] = []
        for (i, p) in partitions.enumerated() {
            let restored = try results.slots[i]!.get()
            let processor = options.engine.makeProcessor(topic: options.inputTopic, partition: p, engine: restored?.engine)
            let shard = Shard(partition: p, processor: processor, nextOffset: restored?.header.nextOffset ?? 0,
                              generation: shards.nextGeneration())
            shard.checkpointTakenMs = wallClockMs()
            if let restored {
                if restored.damagedSkipped > 0 { status.status.checkpointFallbacks += 1 }
                shard.checkpointedOffset = restored.header.nextOffset
                shard.checkpointTakenMs = restored.header.createdMs
                shard.baseCounters = restored.header.counters
                logger.info("restored \(options.inputTopic)[\(p)] from \(restored.path): offset \(restored.header.nextOffset), \(processor.engine.accountCount) accounts")
            } else {
                logger.info("no checkpoint for \(options.inputTopic)[\(p)]: starting from the beginning of the partition")
            }
            opened.append((shard, restored?.header))
        }
        logger.info("restored \(partitions.count) partitions in \(Summary.format2(seconds)) s")
        status.publish()
        return opened
    }

    /// The outputs already written for records at or past each shard's resume offset.
    private func readBack(_ opened: [(Shard, CheckpointHeader?)]) throws -> OutputReadBack.Result {
        let scanFrom = OutputReadBack.scanStarts(opened.map { $0.1?.outputEndOffsets }, outputTopics: ledger.topics)
        let resume = Dictionary(uniqueKeysWithValues: opened.map { ($0.0.partition, $0.0.nextOffset) })
        logger.info("reading back outputs of partitions \(resume.keys.sorted()) (resuming at \(Self.describe(resume))) from \(scanFrom.isEmpty ? "the start" : Self.describe(scanFrom)) of the output topics")
        let readBack = OutputReadBack(brokers: options.brokers, inputTopic: options.inputTopic, outputTopics: ledger.topics, logger: logger)
        var lastBeat = monotonicSeconds()
        let found = try readBack.scan(resume: resume, scanFrom: scanFrom) {
            guard monotonicSeconds() - lastBeat > 1 else { return }
            lastBeat = monotonicSeconds()
            status.publish()
        }
        ledger.raise(to: found.highWatermarks)
        status.status.recoveryRecordsScanned += found.recordsScanned
        status.status.recoverySeconds += found.seconds
        logger.info("read back \(found.recordsScanned) output records in \(Summary.format2(found.seconds)) s")
        return found
    }

    /// `0:120 1:98`, partitions in order.
    private static func describe(_ offsets: [Int32: Int64]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " ")
    }

    /// `ocr.overage 0:120 1:98; ocr.usage.dlq 0:7`, topics and partitions in order.
    private static func describe(_ offsets: [String: [Int32: Int64]]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key) \(describe($0.value))" }.joined(separator: "; ")
    }
}

/// The outcomes of restoring partitions on several threads, one slot per partition.
// Sound as `@unchecked Sendable`: the slots are fixed memory, each thread writes only its
// own, and they are read after `concurrentPerform` has returned.
private final class RestoreResults: @unchecked Sendable {
    let slots: UnsafeMutableBufferPointer<Result<RestoredCheckpoint?, CheckpointError>?>

    init(count: Int) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil)
    }

    deinit {
        slots.deinitialize()
        slots.deallocate()
    }
}
