import PackMeterCore
import PackMeterKafka
import Synchronization

/// What the producer has had acknowledged, so that a checkpoint waits for the outputs of the
/// records it covers without stopping processing to flush (step 3 of `ExactlyOnce.swift`).
///
/// Every output is produced with an `OutputTag`. A checkpoint copies its engines and then
/// raises a *barrier* at the newest sequence number so far: the barrier completes when
/// every output numbered at or below it is acknowledged, and only then is the checkpoint
/// written. Meanwhile the barrier learns, for each output partition, the end of what was
/// written before it (the highest acknowledged offset + 1 among its outputs, or the
/// partition's end when this worker last read it back): where a restart must start reading
/// back.
// Sound as `@unchecked Sendable`: billing threads only call `reserve` (an atomic); everything
// else runs on the worker thread, which `owner` checks in debug builds. Delivery reports
// arrive on the worker thread too (`KafkaProducer.poll`).
final class OutputLedger: @unchecked Sendable {
    let topics: OutputTopics
    /// The newest sequence number handed out.
    private let sequence = Atomic<UInt64>(0)
    private(set) var acknowledged: UInt64 = 0
    /// Per topic, per partition: an offset at or past which lie only outputs not yet
    /// acknowledged or produced later.
    private var ends: [PartitionEnds]
    private var barriers: [Barrier] = []
    private let owner = ThreadOwner("OutputLedger")

    final class Barrier {
        /// Every output with a sequence number at or below this one must be acknowledged.
        let lastSequence: UInt64
        var unacknowledged: Int
        var ends: [PartitionEnds]
        let checkpoints: [PendingCheckpoint]

        init(lastSequence: UInt64, unacknowledged: Int, ends: [PartitionEnds], checkpoints: [PendingCheckpoint]) {
            self.lastSequence = lastSequence
            self.unacknowledged = unacknowledged
            self.ends = ends
            self.checkpoints = checkpoints
        }
    }

    init(topics: OutputTopics) {
        self.topics = topics
        ends = OutputTopic.allCases.map { _ in PartitionEnds() }
    }

    /// The newest sequence number handed out; every output numbered at or below it is
    /// produced whenever the worker thread is between batches.
    var produced: UInt64 { sequence.load(ordering: .acquiring) }

    /// Hands out `count` consecutive sequence numbers; returns the first.
    func reserve(_ count: Int) -> UInt64 {
        sequence.wrappingAdd(UInt64(count), ordering: .acquiringAndReleasing).oldValue + 1
    }

    /// Counts acknowledged outputs. Failed deliveries are not counted: the producer keeps
    /// the first failure and the worker stops on it.
    func delivered(_ reports: UnsafeBufferPointer<DeliveryReport>) {
        owner.check()
        // A local copy: a stored property would be checked for exclusive access per report.
        var ends = self.ends
        self.ends = []
        defer { self.ends = ends }
        var acknowledgedNow: UInt64 = 0
        for report in reports where report.errorCode == 0 {
            acknowledgedNow += 1
            let tag = OutputTag(rawValue: report.tag)
            let topic = tag.topic.rawValue
            let end = report.offset + 1
            ends[topic].raise(report.partition, to: end)
            guard !barriers.isEmpty else { continue }
            for barrier in barriers where tag.sequence <= barrier.lastSequence {
                barrier.unacknowledged -= 1
                barrier.ends[topic].raise(report.partition, to: end)
            }
        }
        acknowledged += acknowledgedNow
    }

    /// Output partitions' ends as read back after a flush: everything produced from now on
    /// lands at or past them.
    func raise(to highWatermarks: [String: [Int32: Int64]]) {
        owner.check()
        for topic in topics.used {
            for (q, high) in highWatermarks[topics[topic]] ?? [:] { ends[topic.rawValue].raise(q, to: high) }
        }
    }

    /// Raises a barrier for `checkpoints`, whose engines were copied after every output of
    /// the records they cover was produced.
    func raiseBarrier(for checkpoints: [PendingCheckpoint]) {
        owner.check()
        barriers.append(Barrier(lastSequence: produced, unacknowledged: Int(produced - acknowledged), ends: ends,
                                checkpoints: checkpoints))
    }

    var hasPendingBarriers: Bool { !barriers.isEmpty }

    /// The barriers whose outputs are all acknowledged, removed from the ledger, with the
    /// end offsets their checkpoints record.
    func takeCompleted() -> [(checkpoints: [PendingCheckpoint], endOffsets: [String: [Int32: Int64]])] {
        owner.check()
        guard barriers.contains(where: { $0.unacknowledged == 0 }) else { return [] }
        var done: [(checkpoints: [PendingCheckpoint], endOffsets: [String: [Int32: Int64]])] = []
        barriers.removeAll { barrier in
            guard barrier.unacknowledged == 0 else { return false }
            done.append((barrier.checkpoints, Dictionary(uniqueKeysWithValues: zip(topics.names, barrier.ends.map(\.dictionary)))))
            return true
        }
        return done
    }
}

/// Per output partition, the end of what is known written. An array by partition: every
/// acknowledged output updates it.
struct PartitionEnds {
    /// -1 for a partition without an end yet.
    private var ends: [Int64] = []

    /// Makes the end of `partition` at least `end`.
    mutating func raise(_ partition: Int32, to end: Int64) {
        let p = Int(partition)
        guard p >= 0 else { return }
        if p >= ends.count { ends.append(contentsOf: repeatElement(-1, count: p + 1 - ends.count)) }
        if end > ends[p] { ends[p] = end }
    }

    var dictionary: [Int32: Int64] {
        var out: [Int32: Int64] = [:]
        for (p, end) in ends.enumerated() where end >= 0 { out[Int32(p)] = end }
        return out
    }
}
