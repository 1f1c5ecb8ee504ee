import Dispatch
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import Synchronization

/// Takes, writes and commits each partition's checkpoints (steps 3 of `ExactlyOnce.swift`).
///
/// The checkpoint interval is split into `slots`; partition p is checkpointed in slot
/// p mod `slots`, so each pause copies about that share of the state. A checkpoint copies
/// the shard's engine between batches (the only pause billing sees), waits behind a barrier
/// in the ledger until the outputs of the records it covers are acknowledged, is encoded and
/// written on a background queue, and once durable its offset is committed to the group.
final class Checkpointer {
    /// Commits offsets to the consumer group; nil where there is no group (replay).
    typealias Commit = (_ offsets: [(TopicPartition, Int64)], _ wait: Bool) throws(KafkaError) -> Void

    static let slots = 8

    private let store: CheckpointStore
    private let ledger: OutputLedger
    private let shards: ShardSet
    private let producer: KafkaProducer
    private let status: StatusPublisher
    private let commit: Commit?
    private let options: WorkerOptions
    private let logger: Logger
    private let writerQueue = DispatchQueue(label: "packmeter.checkpoint-writer")
    private let completedWrites = WriteMailbox()
    private let owner = ThreadOwner("Checkpointer")

    private var slot = 0
    private var nextSlotAt: Double
    /// Partitions opened whose checkpoint offsets are still to be committed (a worker may
    /// have died between writing a checkpoint and committing it, or the newest checkpoint
    /// may have been found damaged), and when a failed commit of them is tried again.
    private var restoredCommits: Set<Int32> = []
    private var nextRestoredCommitAt = 0.0

    /// The outcome of one background write.
    private struct CheckpointWrite: Sendable {
        var partition: Int32
        var nextOffset: Int64
        var createdMs: Int64
        var path: String?
        var bytes: Int
        var error: String?
    }

    /// Where the writer queue leaves its outcomes for the worker thread.
    private final class WriteMailbox: Sendable {
        private let writes = Mutex<[CheckpointWrite]>([])

        func post(_ write: CheckpointWrite) { writes.withLock { $0.append(write) } }

        func takeAll() -> [CheckpointWrite] {
            writes.withLock { list in
                defer { list.removeAll() }
                return list
            }
        }
    }

    init(store: CheckpointStore, ledger: OutputLedger, shards: ShardSet, producer: KafkaProducer, status: StatusPublisher,
         commit: Commit?, options: WorkerOptions, logger: Logger) {
        self.store = store
        self.ledger = ledger
        self.shards = shards
        self.producer = producer
        self.status = status
        self.commit = commit
        self.options = options
        self.logger = logger
        nextSlotAt = monotonicSeconds() + Double(options.checkpointIntervalMs) / 1000 / Double(Self.slots)
    }

    private var slotSeconds: Double { Double(options.checkpointIntervalMs) / 1000 / Double(Self.slots) }

    /// Notes partitions just opened: the group's committed offsets are set to the offsets
    /// their checkpoints cover (0 without one), also backwards, so that lag is the work left.
    func opened(_ partitions: [Int32]) {
        owner.check()
        restoredCommits.formUnion(partitions)
        nextRestoredCommitAt = 0
        status.status.restoredOffsetsToCommit = restoredCommits.count
    }

    /// One turn of the worker's loop: commits restored offsets, hands checkpoints past their
    /// barriers to the writer, takes in finished writes, and starts the slot that is due.
    func turn(now: Double) throws {
        owner.check()
        if !restoredCommits.isEmpty && now >= nextRestoredCommitAt { commitRestored() }
        writeCheckpointsPastBarriers()
        try takeFinishedWrites()
        guard now >= nextSlotAt else { return }
        let due = slot
        startCheckpoints(shards.all.filter { Int($0.partition) % Self.slots == due })
        slot = (slot + 1) % Self.slots
        nextSlotAt = monotonicSeconds() + slotSeconds
    }

    /// Checkpoints `only` (every shard when nil) and waits until they are durable and
    /// committed: on revocation and at shutdown.
    func checkpointNow(only: Set<Int32>? = nil) throws {
        owner.check()
        guard only?.isEmpty != true else { return }
        // Let the checkpoints already under way finish first.
        try waitForWrites(waitForCommit: false)
        startCheckpoints(shards.all.filter { only == nil || only!.contains($0.partition) })
        try waitForWrites(waitForCommit: true)
    }

    private func waitForWrites(waitForCommit: Bool) throws {
        try producer.flush(timeoutMs: 60_000)
        writeCheckpointsPastBarriers()
        writerQueue.sync {}
        try takeFinishedWrites(waitForCommit: waitForCommit)
    }

    /// Copies the engines of `candidates` that advanced and raises a barrier behind every
    /// output produced so far; they are written once it completes.
    private func startCheckpoints(_ candidates: [Shard]) {
        let started = monotonicSeconds()
        let now = wallClockMs()
        var pending: [PendingCheckpoint] = []
        for shard in candidates where shard.nextOffset > shard.checkpointedOffset && !shard.writeInFlight {
            var counters = shard.baseCounters
            counters.add(shard.processor.counters)
            pending.append(PendingCheckpoint(partition: shard.partition, nextOffset: shard.nextOffset,
                                             copy: EngineCopy(engine: shard.processor.engine.copy()), counters: counters,
                                             alreadyWritten: shard.writtenFrom(shard.nextOffset), createdMs: now,
                                             generation: shard.generation))
            shard.writeInFlight = true
        }
        guard !pending.isEmpty else { return }
        status.status.checkpointsStarted += pending.count
        ledger.raiseBarrier(for: pending)
        let stallMs = (monotonicSeconds() - started) * 1000
        status.status.lastCheckpointStallMs = stallMs
        status.status.maxCheckpointStallMs = max(status.status.maxCheckpointStallMs, stallMs)
    }

    /// Hands the checkpoints whose outputs are all acknowledged to the writer.
    private func writeCheckpointsPastBarriers() {
        for (checkpoints, ends) in ledger.takeCompleted() {
            for pending in checkpoints {
                guard shards.holds(pending) else {
                    logger.info("\(options.inputTopic)[\(pending.partition)] was lost before its checkpoint at \(pending.nextOffset) could be written; dropping it")
                    continue
                }
                let header = CheckpointHeader(topic: options.inputTopic, partition: pending.partition, nextOffset: pending.nextOffset,
                                              configuration: options.engine, counters: pending.counters, createdMs: pending.createdMs,
                                              outputEndOffsets: ends, alreadyWritten: pending.alreadyWritten)
                let (partition, offset, createdMs, copy) = (pending.partition, pending.nextOffset, pending.createdMs, pending.copy)
                writerQueue.async { [store, completedWrites] in
                    var result = CheckpointWrite(partition: partition, nextOffset: offset, createdMs: createdMs, path: nil, bytes: 0,
                                                 error: nil)
                    do {
                        (result.path, result.bytes) = try store.write(copy.engine, header: header)
                    } catch {
                        result.error = "\(error)"
                    }
                    completedWrites.post(result)
                }
            }
        }
    }

    /// Marks durable checkpoints and commits the offsets they cover: in the background
    /// while running (a commit only moves the group's lag; positions come from the
    /// checkpoints), waiting for the coordinator with `waitForCommit`.
    private func takeFinishedWrites(waitForCommit: Bool = false) throws {
        let done = completedWrites.takeAll()
        guard !done.isEmpty else { return }
        var commits: [(TopicPartition, Int64)] = []
        for write in done {
            if let error = write.error { throw WorkerError("cannot write a checkpoint of \(options.inputTopic)[\(write.partition)]: \(error)") }
            status.status.checkpointsWritten += 1
            status.status.checkpointBytes = write.bytes
            status.status.lastCheckpointPath = write.path
            guard let shard = shards[write.partition] else { continue }
            shard.writeInFlight = false
            shard.checkpointedOffset = max(shard.checkpointedOffset, write.nextOffset)
            shard.checkpointTakenMs = max(shard.checkpointTakenMs, write.createdMs)
            commits.append((TopicPartition(options.inputTopic, write.partition), write.nextOffset))
        }
        guard let commit, !commits.isEmpty else { return }
        do {
            try commit(commits, waitForCommit)
        } catch {
            // A failed commit only delays lag reporting: positions come from checkpoints.
            logger.warning("could not commit offsets: \(error)")
        }
    }

    /// Sets the group's committed offsets to the offsets the opened partitions' checkpoints
    /// cover, waiting for the coordinator: until then the group may still show offsets no
    /// usable checkpoint covers, and anyone reading the lag would take unfinished work for
    /// done. A checkpoint written since is what is committed; a failed commit is tried again
    /// a second later.
    private func commitRestored() {
        let commits = restoredCommits.sorted().compactMap { p -> (TopicPartition, Int64)? in
            guard let shard = shards[p] else { return nil }
            return (TopicPartition(options.inputTopic, p), max(0, shard.checkpointedOffset))
        }
        defer { status.status.restoredOffsetsToCommit = restoredCommits.count }
        guard let commit, !commits.isEmpty else {
            restoredCommits.removeAll()
            return
        }
        do {
            try commit(commits, true)
            restoredCommits.removeAll()
            logger.info("group offsets set to the restored positions: \(commits.map { "\($0.0.partition):\($0.1)" }.joined(separator: " "))")
        } catch {
            restoredCommits = Set(commits.map(\.0.partition))
            nextRestoredCommitAt = monotonicSeconds() + 1
            logger.warning("could not commit restored offsets (trying again): \(error)")
        }
    }
}
