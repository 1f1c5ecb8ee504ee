import Logging
import PackMeterCore
import PackMeterKafka

/// The shards of one batch, for the billing threads.
// Sound as `@unchecked Sendable`: each shard is taken by exactly one of `concurrentPerform`'s
// threads while the worker thread waits for them all, and `concurrentPerform` orders those
// touches. A billing thread returns only its shard's messages to librdkafka, produces with
// `KafkaProducer.offer` (which never serves delivery reports) and takes sequence numbers
// from the ledger atomically.
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
    /// Nil when notices are off (the engines then make none).
    let notices: ProducerTopic?
    let ledger: OutputLedger

    func topic(_ topic: OutputTopic) -> ProducerTopic {
        switch topic {
        case .overage: overage
        case .deadLetters: deadLetters
        case .notices: notices!
        }
    }
    /// The input topic, for log lines.
    let topic: String
    let logger: Logger
}

/// One input partition's engine and position: gathers the partition's runs of a batch,
/// bills them and produces their outputs. Owned by the worker thread, and lent to one
/// billing thread for the span of `concurrentPerform`.
final class Shard {
    let partition: Int32
    let processor: PartitionProcessor
    /// Which opening of the partition this is (see `PendingCheckpoint`).
    let generation: ShardGeneration
    /// The next input offset to process.
    var nextOffset: Int64
    /// The offset the newest durable checkpoint covers (-1: none).
    var checkpointedOffset: Int64 = -1
    var writeInFlight = false
    /// Counters of the run that wrote the checkpoint this shard was restored from.
    var baseCounters = ProcessingCounters()
    /// Records below this offset were already billed and counted by this process before the
    /// partition was taken away and given back: billing them again is not counted again.
    var recountBelow: Int64 = -1
    /// The counts of the records billed again below `recountBelow`.
    private(set) var rebilled = ProcessingCounters()
    /// The dedupe window's evictions when the shard was opened.
    var evictionsAtOpen: (all: UInt64, openMonth: UInt64) = (0, 0)
    /// When the newest durable checkpoint was taken (wall clock, ms), or when the shard was
    /// opened without one.
    var checkpointTakenMs: Int64 = 0
    /// Replay: stop before this offset; where this run started.
    var stopOffset: Int64?
    var startOffset: Int64 = 0
    var done = false
    var sawRecord = false
    /// Outputs already in the output topics, ascending.
    var written: [WrittenOutput] = []
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

    init(partition: Int32, processor: PartitionProcessor, nextOffset: Int64, generation: ShardGeneration) {
        self.partition = partition
        self.processor = processor
        self.nextOffset = nextOffset
        self.generation = generation
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

    /// Turns this partition's runs of `batch` into `pending` records. Works on locals, which
    /// are not checked for exclusive access per message as stored properties are.
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
        pending.withUnsafeBufferPointer { records in
            let again = records.prefix { $0.offset < recountBelow }.count
            if again > 0 {
                let before = processor.counters
                processor.process(UnsafeBufferPointer(rebasing: records[..<again]), into: output)
                var delta = processor.counters
                delta.subtract(before)
                rebilled.add(delta)
            }
            processor.process(UnsafeBufferPointer(rebasing: records[again...]), into: output)
        }
        pending.removeAll(keepingCapacity: true)
    }

    /// What this shard counts toward the process's totals: everything it billed but the
    /// records billed again.
    var countedCounters: ProcessingCounters {
        var counted = processor.counters
        counted.subtract(rebilled)
        return counted
    }

    /// The dedupe evictions since the shard was opened.
    var evictionsSinceOpen: (all: UInt64, openMonth: UInt64) {
        let now = processor.engine.dedupeEvictions
        return (now.all &- evictionsAtOpen.all, now.openMonth &- evictionsAtOpen.openMonth)
    }

    /// Leaves out the outputs already in the output topics and numbers the rest.
    private func numberOutputs(_ ledger: OutputLedger) {
        producedCount = 0
        producingAll = written.isEmpty
        toProduce.removeAll(keepingCapacity: true)
        if !producingAll {
            for (n, entry) in output.entries.enumerated() {
                let identity = entry.kind == .notice ? OutputSource.noticeIdentity(output.value(of: entry)) ?? 0 : 0
                if isWritten(entry.sourceOffset, identity: identity) { suppressed += 1 } else { toProduce.append(Int32(n)) }
            }
        }
        firstSequence = outputsToProduce == 0 ? 0 : ledger.reserve(outputsToProduce)
    }

    private func produce(to sink: OutputSink, waiting: Bool) throws(KafkaError) {
        let count = outputsToProduce
        while producedCount < count {
            let entry = output.entries[producingAll ? producedCount : Int(toProduce[producedCount])]
            let destination = OutputTopic(entry.kind)
            let topic = sink.topic(destination)
            let tag = OutputTag(sequence: firstSequence + UInt64(producedCount), topic: destination).rawValue
            if waiting {
                try sink.producer.produce(topic, key: output.key(of: entry), value: output.value(of: entry), tag: tag)
            } else if try !sink.producer.offer(topic, key: output.key(of: entry), value: output.value(of: entry), tag: tag) {
                return
            }
            producedCount += 1
        }
    }

    /// The already-written outputs of offsets at or after `offset`, for a checkpoint at `offset`.
    func writtenFrom(_ offset: Int64) -> [WrittenOutput] {
        guard writtenCursor < written.count else { return [] }
        return written[writtenCursor...].filter { $0.offset >= offset }
    }

    /// Whether output `identity` of input offset `offset` is already written. Offsets are
    /// asked in increasing order; one offset's outputs in any order.
    @inline(__always)
    func isWritten(_ offset: Int64, identity: Int64) -> Bool {
        guard writtenCursor < written.count else { return false }
        while writtenCursor < written.count && written[writtenCursor].offset < offset { writtenCursor += 1 }
        var i = writtenCursor
        while i < written.count && written[i].offset == offset {
            if written[i].identity == identity { return true }
            i += 1
        }
        return false
    }
}
