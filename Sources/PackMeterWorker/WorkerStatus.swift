import PackMeterCore

/// What the worker publishes for readers (status line, HTTP, metrics, the demo), refreshed
/// by the worker thread between batches.
public struct WorkerStatus: Sendable {
    public enum Phase: String, Sendable {
        case starting, recovering, running, stopping, stopped
    }

    public var phase = Phase.starting
    /// This process's counts: every record it billed, each once, whatever partitions came
    /// and went; they never go backwards.
    public var counters = ProcessingCounters()
    /// Records billed a second time: after a partition was taken away and given back, or
    /// taken over from a worker that had billed past its checkpoint (the counts above leave
    /// them out).
    public var recordsRebilled: UInt64 = 0
    /// Partitions opened (restored and read back) since the process started: on each
    /// assignment, so also every handover from another worker.
    public var partitionsOpened = 0
    /// Partitions restored from an older checkpoint because the newest was damaged.
    public var checkpointFallbacks = 0
    /// Rebalance events: partitions assigned, revoked (handed over), lost (taken away).
    public var rebalances: (assigned: Int, revoked: Int, lost: Int) = (0, 0, 0)
    public var assignedPartitions: [Int32] = []
    /// The input topic's partition count, once known.
    public var inputPartitions = 0
    /// Partitions opened whose restored positions are not yet the group's committed offsets.
    public var restoredOffsetsToCommit = 0
    /// Per partition: next offset to read and the partition's end as last seen.
    public var positions: [Int32: (next: Int64, end: Int64?)] = [:]
    public var accounts = 0
    public var liveBalances = 0
    public var rememberedIDs = 0
    /// Ids dropped from full dedupe windows since this process started, all of them and
    /// those whose month was still open (whose repeat would have been billed again).
    public var dedupeEvictions: UInt64 = 0
    public var dedupeEvictionsOpenMonth: UInt64 = 0
    /// Per owned partition, when its newest durable checkpoint was taken (epoch ms), or when
    /// it was opened without one.
    public var checkpointTakenMs: [Int32: Int64] = [:]
    /// Whether the brokers answered the last look (every `BrokerWatch.intervalSeconds`).
    public var brokersReachable = false
    public var outputsSuppressed: UInt64 = 0
    public var recordsLostToRetention: UInt64 = 0
    /// Times parked fetchers were woken (`RunningWorker.wakeParkedFetchers`).
    public var fetchWakeups = 0
    /// Batches whose outputs did not all fit in the producer's queue from the billing
    /// threads, the rest produced by the worker thread as deliveries freed room.
    public var producerQueueFull = 0
    public var checkpointsWritten = 0
    /// Checkpoints begun (engine copies taken).
    public var checkpointsStarted = 0
    /// The size of the newest checkpoint written, and of all of them.
    public var checkpointBytes = 0
    public var checkpointBytesTotal: UInt64 = 0
    public var lastCheckpointStallMs = 0.0
    public var maxCheckpointStallMs = 0.0
    public var lastCheckpointPath: String?
    public var recoveryRecordsScanned = 0
    public var recoverySeconds = 0.0
    public var restoreSeconds = 0.0
    public var startedAt = 0.0
    /// When the process's worker started, epoch ms.
    public var startedAtMs: Int64 = 0
    public var updatedAt = 0.0

    public init() {}

    /// Ready to be relied on (`/readyz`): billing, with partitions of its own, each restored
    /// and with its restored position committed to the group, and the brokers answering.
    public var isReady: Bool { notReadyBecause == nil }

    /// Why the worker is not ready, or nil.
    public var notReadyBecause: String? {
        if phase != .running { return "the worker is \(phase.rawValue)" }
        if assignedPartitions.isEmpty { return "the worker owns no partitions" }
        if restoredOffsetsToCommit > 0 { return "\(restoredOffsetsToCommit) partitions restored but their offsets not yet committed" }
        if !brokersReachable { return "the brokers do not answer" }
        return nil
    }

    /// A worker whose loop has not turned for this long is stuck (`/healthz`).
    public static let stuckAfterSeconds = 60.0

    /// Whether the worker's loop turned recently, as of `now` (monotonic seconds).
    public func isAlive(now: Double) -> Bool {
        phase == .stopped || now - updatedAt < Self.stuckAfterSeconds
    }

    /// Records behind the partitions' ends, where known.
    public var lag: Int64 {
        positions.values.reduce(0) { $0 + max(0, ($1.end ?? $1.next) - $1.next) }
    }
}

/// The end-of-run picture the demo prints: the busiest accounts and their balances.
public struct AccountReport: Sendable {
    public var account: String
    public var partition: Int32
    public var billableCalls: UInt64
    public var balances: AccountBalances
}
