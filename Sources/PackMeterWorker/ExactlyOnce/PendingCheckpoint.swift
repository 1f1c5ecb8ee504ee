import PackMeterCore

/// A checkpoint whose engine copy is taken, waiting for its barrier in the `OutputLedger`.
struct PendingCheckpoint {
    let partition: Int32
    /// The first input offset the checkpoint does not cover.
    let nextOffset: Int64
    let copy: EngineCopy
    let counters: ProcessingCounters
    /// Outputs at or past `nextOffset` an earlier run already wrote (see `ExactlyOnce.swift`).
    let alreadyWritten: [WrittenOutput]
    let createdMs: Int64
    /// Which opening of the partition the copy belongs to. If the partition is lost
    /// meanwhile (or lost and opened again), the copy is dropped: it is no longer this
    /// worker's to write.
    let generation: ShardGeneration
}

/// Tells one opening of a partition from the next: a shard taken over, lost and opened
/// again gets a new generation.
struct ShardGeneration: Hashable, Sendable {
    let rawValue: UInt64
}

/// An engine copy on its way to the checkpoint writer.
// Sound as `@unchecked Sendable`: the copy is made for the writer and nothing else keeps a
// reference to it.
struct EngineCopy: @unchecked Sendable {
    let engine: PartitionEngine
}
