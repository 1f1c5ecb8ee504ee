import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterRuntime

/// After a restart, finds which records of the partitions being restored already have their
/// output (an overage record or a dead letter) in the output topics, so they are not
/// emitted a second time (CONTRACT.md: no output `id` emitted twice).
///
/// Processing is deterministic: the output of input record (p, o) is the same bytes every
/// time. A checkpoint of partition p covering offsets below N records, per output
/// partition, an end offset at or past which lie all the outputs produced after the
/// checkpoint's copy was taken, so every output this run produced for offsets ≥ N
/// (`OutputLedger`).
/// Outputs for offsets ≥ N that an earlier run (one that got further before dying) wrote
/// may lie before them: the run that took the checkpoint knew those (it had found them when
/// it started) and the checkpoint lists them (`alreadyWritten`). The scan reads every output
/// partition from the smallest recorded end offset to its current end and collects the
/// (p, o ≥ N) it finds; with the checkpoint's list, that is every output already written.
/// Without a checkpoint it reads from the start.
struct OutputRecovery {
    struct Result {
        /// Per input partition, the input offsets whose output is already written, ascending.
        var written: [Int32: [Int64]]
        /// Every output partition's end when the scan began (after the caller's flush).
        var highWatermarks: [String: [Int32: Int64]]
        var recordsScanned: Int
        var seconds: Double
    }

    let brokers: String
    let inputTopic: String
    let outputTopics: [String]
    let logger: Logger

    /// `resume[p]` is where partition p resumes; `scanFrom[topic][q]` where to start reading
    /// output partition q (absent: from its beginning).
    func scan(resume: [Int32: Int64], scanFrom: [String: [Int32: Int64]]) throws -> Result {
        let started = monotonicSeconds()
        let consumer = try KafkaConsumer(bootstrapServers: brokers, groupID: nil, logger: logger)
        var assignment: [(TopicPartition, Int64)] = []
        var ends: [TopicPartition: Int64] = [:]
        var highs: [String: [Int32: Int64]] = [:]
        for topic in outputTopics {
            guard let count = try consumer.partitionCount(topic, timeoutMs: 10_000) else {
                throw WorkerError("output topic '\(topic)' does not exist on \(brokers)")
            }
            for q in 0..<Int32(count) {
                let tp = TopicPartition(topic, q)
                let (low, high) = try consumer.watermarks(tp, timeoutMs: 10_000)
                highs[topic, default: [:]][q] = high
                let start = max(low, scanFrom[topic]?[q] ?? low)
                if start < high {
                    assignment.append((tp, start))
                    ends[tp] = high
                }
            }
        }
        var written: [Int32: [Int64]] = [:]
        var scanned = 0
        guard !assignment.isEmpty else { return Result(written: [:], highWatermarks: highs, recordsScanned: 0, seconds: monotonicSeconds() - started) }
        try consumer.assign(assignment)
        let batch = MessageBatch(capacity: 8192)
        var remaining = Set(ends.keys)
        let deadline = monotonicSeconds() + 300
        while !remaining.isEmpty {
            guard monotonicSeconds() < deadline else {
                throw WorkerError("reading back the output topics took more than 300 s; \(remaining.count) partitions unfinished")
            }
            let n = try consumer.poll(into: batch, timeoutMs: 200)
            for i in 0..<n {
                let message = batch[i]
                if let error = message.error {
                    if error.code == KafkaError.partitionEOF { continue }
                    throw error
                }
                scanned += 1
                if let source = OutputSource.parse(message.value), source.topic == inputTopic,
                   let from = resume[source.partition], source.offset >= from {
                    written[source.partition, default: []].append(source.offset)
                }
                for topic in outputTopics {
                    let tp = TopicPartition(topic, message.partition)
                    if let end = ends[tp], remaining.contains(tp), message.offset + 1 >= end, message.topicIs(topic) {
                        remaining.remove(tp)
                    }
                }
            }
        }
        batch.release()
        consumer.close()
        for p in written.keys { written[p]!.sort() }
        return Result(written: written, highWatermarks: highs, recordsScanned: scanned, seconds: monotonicSeconds() - started)
    }
}

/// A fatal condition of the worker, with the reason an operator needs.
public struct WorkerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
