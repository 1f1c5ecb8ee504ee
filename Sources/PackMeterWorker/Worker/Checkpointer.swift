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
///
/// Commits are sent without waiting, and checked rather than trusted: the group's
/// committed offsets are read back (`CommitAuditor`) every interval, and every half second
/// while a commit is unconfirmed, and any that differ from what the durable checkpoints
/// cover (a commit lost to a rebalance, a generation that moved on) are committed again.
/// So once input stops, the committed offsets reach the partitions' ends within two
/// intervals, whatever happened before, and billing never waits for the coordinator but
/// on revocation and at shutdown.
final class Checkpointer {
    /// The consumer group's offsets; nil where there is no group (replay).
    struct GroupOffsets {
        /// Commits offsets; with `wait`, returns once the coordinator has them.
        var commit: (_ offsets: [(TopicPartition, Int64)], _ wait: Bool) throws(KafkaError) -> Void
        var auditor: CommitAuditor
    }

    static let slots = 8

    private let store: any CheckpointStore
    private let ledger: OutputLedger
    private let shards: ShardSet
    private let producer: KafkaProducer
    private let status: StatusPublisher
    private let group: GroupOffsets?
    private let options: WorkerOptions
    private let logger: Logger
    private let writerQueue = DispatchQueue(label: "packmeter.checkpoint-writer")
    private let completedWrites = WriteMailbox()
    private let owner = ThreadOwner("Checkpointer")

    private var slot = 0
    private var nextSlotAt: Double
    /// Partitions whose checkpointed offset is still to be committed. Opened partitions are
    /// among them: a worker may have died between writing a checkpoint and committing it,
    /// or the newest checkpoint may have been found damaged.
    private var uncommitted: Set<Int32> = []
    /// Partitions whose commit was sent and not yet seen in the group's committed offsets.
    private var unconfirmed: Set<Int32> = []
    /// When commits may next be sent. A commit that meets a rebalance can cost the worker
    /// its partitions (librdkafka 2.0 takes an ILLEGAL_GENERATION answer for a lost
    /// assignment), so they are sent in bulk, at most once a second.
    private var nextCommitAt = 0.0
    /// When the committed offsets are next read back and compared.
    private var nextAuditAt: Double
    /// Partitions opened whose offsets are not confirmed committed yet (readiness waits
    /// for them).
    private var opening: Set<Int32> = []

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

    init(store: any CheckpointStore, ledger: OutputLedger, shards: ShardSet, producer: KafkaProducer, status: StatusPublisher,
         group: GroupOffsets?, options: WorkerOptions, logger: Logger) {
        self.store = store
        self.ledger = ledger
        self.shards = shards
        self.producer = producer
        self.status = status
        self.group = group
        self.options = options
        self.logger = logger
        nextSlotAt = monotonicSeconds() + Double(options.checkpointIntervalMs) / 1000 / Double(Self.slots)
        nextAuditAt = monotonicSeconds() + Double(options.checkpointIntervalMs) / 1000
    }

    private var slotSeconds: Double { Double(options.checkpointIntervalMs) / 1000 / Double(Self.slots) }

    /// Notes partitions just opened: the group's committed offsets are set to the offsets
    /// their checkpoints cover (0 without one), also backwards, so that lag is the work left.
    func opened(_ partitions: [Int32]) {
        owner.check()
        uncommitted.formUnion(partitions)
        opening.formUnion(partitions)
        status.status.restoredOffsetsToCommit = opening.count
    }

    /// One turn of the worker's loop: commits restored offsets, hands checkpoints past their
    /// barriers to the writer, takes in finished writes, and starts the slot that is due.
    func turn(now: Double) throws {
        owner.check()
        writeCheckpointsPastBarriers()
        try takeFinishedWrites()
        if !uncommitted.isEmpty && (now >= nextCommitAt || !opening.isEmpty) {
            commitCheckpointed(wait: false)
            nextCommitAt = now + 1
        }
        takeAudit()
        if now >= nextAuditAt { startAudit(now: now) }
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
        try takeFinishedWrites()
        if waitForCommit { commitCheckpointed(wait: true) }
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

    /// Marks durable checkpoints; their offsets are to be committed.
    private func takeFinishedWrites() throws {
        let done = completedWrites.takeAll()
        guard !done.isEmpty else { return }
        for write in done {
            if let error = write.error { throw WorkerError("cannot write a checkpoint of \(options.inputTopic)[\(write.partition)]: \(error)") }
            status.status.checkpointsWritten += 1
            status.status.checkpointBytes = write.bytes
            status.status.checkpointBytesTotal += UInt64(write.bytes)
            status.status.lastCheckpointPath = write.path
            guard let shard = shards[write.partition] else { continue }
            shard.writeInFlight = false
            shard.checkpointedOffset = max(shard.checkpointedOffset, write.nextOffset)
            shard.checkpointTakenMs = max(shard.checkpointTakenMs, write.createdMs)
            uncommitted.insert(write.partition)
        }
    }

    /// Commits the offsets the owned partitions' durable checkpoints cover (0 without one),
    /// also backwards: until then the group may show offsets no usable checkpoint covers,
    /// and anyone reading the lag would take unfinished work for done. Without `wait` the
    /// commit is sent and the audit confirms it; a lost one is sent again.
    private func commitCheckpointed(wait: Bool) {
        defer { status.status.restoredOffsetsToCommit = opening.count }
        uncommitted = uncommitted.filter { shards[$0] != nil }
        opening = opening.filter { shards[$0] != nil }
        let commits = uncommitted.sorted().map { p in (TopicPartition(options.inputTopic, p), max(0, shards[p]!.checkpointedOffset)) }
        guard let group, !commits.isEmpty else {
            uncommitted.removeAll()
            if group == nil { opening.removeAll() }
            return
        }
        do {
            try group.commit(commits, wait)
            uncommitted.removeAll()
            unconfirmed.formUnion(commits.map(\.0.partition))
            if wait { opening.subtract(commits.map(\.0.partition)) }
            nextAuditAt = min(nextAuditAt, monotonicSeconds() + 0.5)
        } catch {
            logger.warning("could not commit offsets (trying again): \(error)")
        }
    }

    /// Asks the auditor to read the committed offsets of the owned partitions back: every
    /// interval, or half a second after a commit while any is unconfirmed.
    private func startAudit(now: Double) {
        guard let group, !group.auditor.isBusy else { return }
        var expected: [Int32: Int64] = [:]
        for shard in shards.all where !shard.writeInFlight && !uncommitted.contains(shard.partition) {
            expected[shard.partition] = max(0, shard.checkpointedOffset)
        }
        group.auditor.check(expected)
        // Partitions given up meanwhile are no longer this worker's to confirm.
        unconfirmed.formIntersection(expected.keys)
        let quickly = !unconfirmed.isEmpty || !opening.isEmpty
        nextAuditAt = now + (quickly ? 0.5 : Double(options.checkpointIntervalMs) / 1000)
    }

    /// Takes in what the auditor found: matching commits are confirmed, differing ones are
    /// made again (if the partition's checkpoint did not move meanwhile, the next audit
    /// looks again).
    private func takeAudit() {
        guard let finding = group?.auditor.take() else { return }
        for (p, offset) in finding.matching where shards[p].map({ max(0, $0.checkpointedOffset) }) == offset {
            unconfirmed.remove(p)
            opening.remove(p)
        }
        for p in finding.differing where shards[p] != nil { uncommitted.insert(p) }
        status.status.restoredOffsetsToCommit = opening.count
    }
}
