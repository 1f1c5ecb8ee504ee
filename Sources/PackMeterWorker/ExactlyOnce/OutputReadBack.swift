import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// After a restart, finds which records of the partitions being opened already have their
/// output (an overage record or a dead letter) in the output topics, so that they are not
/// written a second time. Reads every output partition from where the restored checkpoints
/// say (`scanStarts`) to its current end; see `ExactlyOnce.swift` for why that is enough.
struct OutputReadBack {
    struct Result {
        /// Per input partition, the outputs already written, ascending.
        var written: [Int32: [WrittenOutput]]
        /// Every output partition's end when the scan began (after the caller's flush).
        var highWatermarks: [String: [Int32: Int64]]
        var recordsScanned: Int
        var seconds: Double
    }

    let brokers: String
    let inputTopic: String
    let outputTopics: OutputTopics
    let logger: Logger

    /// `resume[p]` is where partition p resumes; `scanFrom[topic][q]` where to start reading
    /// output partition q (absent: from its beginning).
    /// `progress` is called after every poll, so that a long read-back does not look stuck.
    func scan(resume: [Int32: Int64], scanFrom: [String: [Int32: Int64]], progress: () -> Void = {}) throws -> Result {
        let started = monotonicSeconds()
        let consumer = try KafkaConsumer(bootstrapServers: brokers, groupID: nil, logger: logger)
        var assignment: [(TopicPartition, Int64)] = []
        var ends: [TopicPartition: Int64] = [:]
        var highs: [String: [Int32: Int64]] = [:]
        for topic in outputTopics.names {
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
        var written: [Int32: [WrittenOutput]] = [:]
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
            progress()
            for i in 0..<n {
                let message = batch[i]
                if let error = message.error {
                    if error.code == KafkaError.partitionEOF { continue }
                    throw error
                }
                scanned += 1
                if let source = OutputSource.parse(message.value), source.topic == inputTopic,
                   let from = resume[source.partition], source.offset >= from {
                    // A notice is one of possibly several outputs of its record: its id tells which.
                    let isNotice = outputTopics.notices.map { message.topicIs($0) } ?? false
                    let identity = isNotice ? OutputSource.noticeIdentity(message.value) ?? 0 : 0
                    written[source.partition, default: []].append(WrittenOutput(offset: source.offset, identity: identity))
                }
                for topic in outputTopics.names {
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

extension OutputReadBack {
    /// Where to start reading back each output partition: the smallest end offset any of the
    /// restored checkpoints recorded for it. A partition or topic a checkpoint does not
    /// list, or a partition opened without a checkpoint (nil), is read from its start
    /// (absent from the result).
    static func scanStarts(_ recorded: [[String: [Int32: Int64]]?], outputTopics: OutputTopics) -> [String: [Int32: Int64]] {
        var starts: [String: [Int32: Int64]] = [:]
        for topic in outputTopics.names {
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
}
