import PackMeterCore

// # Exactly once without Kafka transactions
//
// The promise (docs/contract.md, Guarantees): kill the worker at any instant, start it again
// with the same checkpoints, and the balances and the set of output records are those of a
// run that was never interrupted. No output `id` is written twice, none is lost. It holds on
// any broker, because it rests on three facts rather than on transactions:
//
// 1. **Billing is deterministic.** A partition's engine is a pure function of the log, so
//    input record (p, o) always produces the same output bytes. Resuming partition p from a
//    checkpoint at offset N regenerates exactly the outputs of the records from N on.
// 2. **The idempotent producer keeps each output partition in order.** Whatever is produced
//    after a moment T lands after whatever was acknowledged before T, in every output
//    partition.
// 3. **Nothing counts as done before its outputs are acknowledged.** Every output carries an
//    `OutputTag`: a sequence number and the topic it went to. A checkpoint copies its engine
//    between batches and raises a barrier in the `OutputLedger` at the newest sequence
//    number. The barrier completes once every output numbered at or below it is
//    acknowledged; while it waits, it learns from the delivery reports the end of what was
//    written before it in every output partition. Only then is the checkpoint written, with
//    those end offsets (`PendingCheckpoint` → `CheckpointHeader.outputEndOffsets`), and only
//    once it is durable is the offset committed to the group.
//
// After a restart, `OutputReadBack` reads every output partition from the smallest end
// offset the restored checkpoints recorded (`OutputReadBack.scanStarts`) to its current end,
// and collects the outputs whose source is a record at or past the partition's checkpoint:
// those were written by a run that got further before it died. By fact 2, every output of
// the checkpointing run that the checkpoint does not cover lies past those end offsets. An
// output an even earlier run wrote before them is listed in the checkpoint itself
// (`alreadyWritten`): the run that took the checkpoint had found it when it started. With
// both, the shard knows every output already written, and skips exactly those when it bills
// the records again.
//
// A partition restored without a checkpoint reads the output topics from their start. A
// partition lost before its barrier completed drops its pending checkpoint: it is no
// longer this worker's to write.
//
// The one limit: a worker frozen longer than the group's session timeout, while another
// member takes its partitions over, may still produce one batch for them before it learns
// they are gone (a zombie; fencing it needs transactions). Downstream can deduplicate on
// `id`.

/// Which output topic an output goes to.
enum OutputTopic: Int, CaseIterable, Sendable {
    case overage = 0
    case deadLetters = 1
    case notices = 2

    init(_ kind: OutputBatch.Kind) {
        switch kind {
        case .overage: self = .overage
        case .deadLetter: self = .deadLetters
        case .notice: self = .notices
        }
    }
}

/// The output topics' names, by `OutputTopic`. Without a notices topic, notices are off.
struct OutputTopics: Sendable {
    let overage: String
    let deadLetters: String
    let notices: String?

    init(overage: String, deadLetters: String, notices: String? = nil) {
        self.overage = overage
        self.deadLetters = deadLetters
        self.notices = notices
    }

    /// The topics in use, in `OutputTopic` order.
    var used: [OutputTopic] { notices == nil ? [.overage, .deadLetters] : OutputTopic.allCases }

    subscript(topic: OutputTopic) -> String {
        switch topic {
        case .overage: overage
        case .deadLetters: deadLetters
        case .notices: notices ?? ""
        }
    }

    /// The names of the topics in use, in `OutputTopic` order.
    var names: [String] { used.map { self[$0] } }
}

/// The librdkafka tag of one output: its sequence number (for the ledger's barriers) and
/// its topic (for the ledger's end offsets), packed in the 64 bits a message can carry.
struct OutputTag: Equatable {
    let rawValue: UInt64

    private static let topicShift: UInt64 = 62
    private static let sequenceMask: UInt64 = (1 << 62) - 1

    @inline(__always)
    init(sequence: UInt64, topic: OutputTopic) {
        rawValue = sequence | UInt64(topic.rawValue) << Self.topicShift
    }

    init(rawValue: UInt64) { self.rawValue = rawValue }

    var sequence: UInt64 { rawValue & Self.sequenceMask }
    var topic: OutputTopic { OutputTopic(rawValue: Int(rawValue >> Self.topicShift)) ?? .overage }
}
