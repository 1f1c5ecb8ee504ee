import Foundation
import Logging
import PackMeterCore
import PackMeterFiles
import PackMeterKafka
import Synchronization

/// Checkpoints in a compacted Kafka topic (`--checkpoint-topic`), for workers that share no
/// file system: partition p of the topic holds the checkpoints of input partition p, as
/// Kafka Streams keeps a store's changelog.
///
/// A checkpoint is a `CheckpointFile` cut into chunks below the brokers' message size
/// limit, each a record keyed `chunk/{next offset}/{write}/{i}` (`write` is random per
/// write), followed, once every chunk is acknowledged, by its head record
/// `head/{next offset}` listing the chunks' offsets. A checkpoint exists only once its head
/// does: a writer killed half-way leaves chunks no head names, and the previous checkpoint
/// stays in force. A chunk key is never written twice, so compaction removes no chunk a
/// head still names; once a checkpoint is older than the newest `keep` (or its head was
/// written again), its records get tombstones (null values) and compaction lets them go.
/// Where the brokers do not compact, retention takes the old ones instead.
///
/// Restoring reads the partition's tail, widening the window until it holds a head, and
/// uses the newest head whose chunks read back whole and verify.
public final class TopicCheckpointStore: CheckpointStore {
    public let topic: String
    public let brokers: String
    public let keep: Int
    public let logger: Logger
    /// The largest chunk: below the default `message.max.bytes` (1 MB) of brokers and
    /// librdkafka, with room for the record's key and framing.
    public static let chunkBytes = 512 * 1024

    private let producer: KafkaProducer
    /// Opened on the first write: opening it asks the brokers about the topic, and some
    /// create a missing topic on that question (with one partition), before `prepare` can.
    private let producerTopic = Mutex<ProducerTopic?>(nil)
    private let kafkaProperties: [(String, String)]
    /// The reader used by restores (one at a time), made when first needed.
    private let reader = Mutex<KafkaConsumer?>(nil)
    /// Tails read ahead by `prepareRestore`, taken by `restore`.
    private let prefetched = Mutex<[Int32: Tail]>([:])
    /// Per partition, the checkpoints known to be in the topic (newest last) and the chunk
    /// keys of torn writes, which the next write of that partition tombstones.
    private let known = Mutex<[Int32: Known]>([:])
    /// Offsets of the records of one write, by tag, filled in by delivery reports.
    private let delivered = Delivered()

    private final class Delivered: Sendable {
        let offsets = Mutex<[UInt64: Int64]>([:])
    }

    public var location: String { "topic \(topic)" }

    struct Known {
        var heads: [Head] = []
        var orphanKeys: Set<String> = []
    }

    /// What a head record says.
    struct Head: Equatable {
        var nextOffset: Int64
        /// Tells apart the chunks of two writes of the same offset.
        var write: String
        /// The chunks' offsets in the partition, in order.
        var chunks: [Int64]
        var bytes: Int
        var writer: String
        /// Where the head itself is.
        var offset: Int64 = -1

        func json() -> String {
            "{\"format\":1,\"next_offset\":\(nextOffset),\"write\":\"\(write)\",\"bytes\":\(bytes),\"writer\":\"\(writer)\",\"chunks\":[\(chunks.map(String.init).joined(separator: ","))]}"
        }

        /// The keys of its chunks.
        var chunkKeys: [String] { chunks.indices.map { TopicCheckpointStore.chunkKey(nextOffset, write, $0) } }

        init(nextOffset: Int64, write: String, chunks: [Int64], bytes: Int, writer: String) {
            self.nextOffset = nextOffset
            self.write = write
            self.chunks = chunks
            self.bytes = bytes
            self.writer = writer
        }

        init?(json bytes: UnsafeRawBufferPointer, offset: Int64) {
            guard let value = try? JSONValue.parse(String(decoding: bytes, as: UTF8.self)), value["format"]?.intValue == 1,
                  let next = value["next_offset"]?.intValue, let size = value["bytes"]?.intValue,
                  let write = value["write"]?.stringValue, let chunks = value["chunks"]?.arrayValue?.compactMap(\.intValue)
            else { return nil }
            self.init(nextOffset: next, write: write, chunks: chunks, bytes: Int(size), writer: value["writer"]?.stringValue ?? "")
            self.offset = offset
        }
    }

    static func chunkKey(_ nextOffset: Int64, _ write: String, _ index: Int) -> String { "chunk/\(padded(nextOffset))/\(write)/\(index)" }
    static func headKey(_ nextOffset: Int64) -> String { "head/\(padded(nextOffset))" }

    private static func padded(_ offset: Int64) -> String {
        let digits = String(offset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Which command writes: `run` or `replay` (in each head, for `claim`).
    private let writerName = Mutex<String>(CheckpointWriter.run.rawValue)

    public init(topic: String, brokers: String, keep: Int = 3, kafkaProperties: [(String, String)] = [], logger: Logger) throws(KafkaError) {
        self.topic = topic
        self.brokers = brokers
        self.keep = max(1, keep)
        self.logger = logger
        self.kafkaProperties = kafkaProperties
        // The state is lz4-compressed already; each write waits for its acknowledgements.
        var settings = KafkaConfiguration(kafkaProperties)
        settings.set("compression.codec", "none")
        settings.set("linger.ms", "0")
        settings.set("message.max.bytes", String(Self.chunkBytes + 64 * 1024))
        producer = try KafkaProducer(bootstrapServers: brokers, configuration: settings, logger: logger)
        producer.onDeliveries = { [delivered] reports in
            delivered.offsets.withLock { offsets in
                for report in reports where report.errorCode == 0 { offsets[report.tag] = report.offset }
            }
        }
    }

    /// Checks that the topic exists with a partition for each of the input's
    /// `inputPartitions`, creating it (compacted) where it does not exist and the brokers
    /// allow it.
    public func prepare(inputPartitions: Int) throws(WorkerError) {
        var count: Int?
        do {
            count = try producer.partitionCount(topic, timeoutMs: 10_000)
            if count == nil {
                try producer.createTopics([TopicSpec(topic, partitions: inputPartitions, configuration: Self.topicConfiguration)],
                                          timeoutMs: 10_000)
                logger.info("created the checkpoint topic '\(topic)' (\(inputPartitions) partitions, compacted)")
                for _ in 0..<50 where count == nil {
                    count = try producer.partitionCount(topic, timeoutMs: 10_000)
                    if count == nil { Thread.sleep(forTimeInterval: 0.1) }
                }
            }
        } catch {
            throw WorkerError("the checkpoint topic '\(topic)' does not exist on \(brokers) and could not be created (\(error.message)); create it with \(inputPartitions) partitions and cleanup.policy=compact",
                              kind: .configuration)
        }
        guard let count, count >= inputPartitions else {
            throw WorkerError("the checkpoint topic '\(topic)' has \(count.map(String.init) ?? "no") partitions; it needs one per input partition (\(inputPartitions))",
                              kind: .configuration)
        }
    }

    /// The topic configuration a created checkpoint topic gets: compacted, in segments
    /// small enough that compaction reaches old checkpoints soon.
    public static let topicConfiguration = [("cleanup.policy", "compact"), ("segment.bytes", "67108864"),
                                            ("min.cleanable.dirty.ratio", "0.1")]

    public func claim(for writer: CheckpointWriter) throws(CheckpointClaimError) {
        writerName.withLock { $0 = writer.rawValue }
        guard writer == .replay else { return }
        do {
            guard let count = try producer.partitionCount(topic, timeoutMs: 10_000) else { return }
            for tail in try readTails(Array(0..<Int32(count))).values {
                if let head = tail.heads.last, head.writer != CheckpointWriter.replay.rawValue {
                    throw CheckpointClaimError(message: "the checkpoint topic '\(topic)' holds checkpoints of packmeter \(head.writer.isEmpty ? "run" : head.writer) (a live group's state); replay keeps its own: give it another --checkpoint-topic or a --checkpoint-dir")
                }
            }
        } catch let error as CheckpointClaimError {
            throw error
        } catch {
            throw CheckpointClaimError(message: "cannot read the checkpoint topic '\(topic)': \(error)")
        }
    }

    // MARK: - Writing

    public func write(_ engine: PartitionEngine, header: CheckpointHeader) throws(CheckpointError) -> (path: String, bytes: Int) {
        let file = CheckpointFile.encode(engine, header: header)
        let p = header.partition
        let location = "\(topic)[\(p)]@\(header.nextOffset)"
        do {
            let chunkCount = max(1, (file.count + Self.chunkBytes - 1) / Self.chunkBytes)
            let write = String(UInt64.random(in: 1...UInt64.max), radix: 36)
            var records: [(key: String, range: Range<Int>)] = []
            for i in 0..<chunkCount {
                records.append((Self.chunkKey(header.nextOffset, write, i), i * Self.chunkBytes..<min(file.count, (i + 1) * Self.chunkBytes)))
            }
            let raw = file.bytes
            let offsets = try produceAndWait(records.map { ($0.key, UnsafeRawBufferPointer(rebasing: raw[$0.range])) }, partition: p)
            // A crash test's torn write: the chunks are in the topic, their head is not.
            if FaultInjection.crashThisCheckpointWrite() { FaultInjection.crash() }
            var head = Head(nextOffset: header.nextOffset, write: write, chunks: offsets, bytes: file.count,
                            writer: writerName.withLock { $0 })
            let headOffsets = try Array(head.json().utf8).withUnsafeBytes { raw throws(KafkaError) in
                try produceAndWait([(Self.headKey(header.nextOffset), raw)], partition: p)
            }
            head.offset = headOffsets[0]
            try prune(partition: p, adding: head)
            return (location, file.count)
        } catch {
            throw CheckpointError(path: location, problem: .io("cannot write to the checkpoint topic: \(error)"))
        }
    }

    /// Produces `records` to partition `partition` and waits until all are acknowledged;
    /// returns their offsets in order. A nil value is a tombstone.
    private func produceAndWait(_ records: [(String, UnsafeRawBufferPointer?)], partition: Int32) throws(KafkaError) -> [Int64] {
        guard !records.isEmpty else { return [] }
        delivered.offsets.withLock { $0.removeAll(keepingCapacity: true) }
        let producerTopic = try self.producerTopic.withLock { handle throws(KafkaError) in
            if handle == nil { handle = try producer.topic(topic) }
            return handle!
        }
        for (i, (key, value)) in records.enumerated() {
            let keyBytes = Array(key.utf8)
            let result = keyBytes.withUnsafeBytes { raw in
                Result { () throws(KafkaError) in
                    try producer.produce(producerTopic, key: raw, value: value ?? UnsafeRawBufferPointer(start: nil, count: 0),
                                         partition: partition, tag: UInt64(i + 1))
                }
            }
            try result.get()
        }
        try producer.flush(timeoutMs: 60_000)
        let offsets = delivered.offsets.withLock { got in (1...records.count).map { got[UInt64($0)] } }
        guard offsets.allSatisfy({ $0 != nil }) else {
            throw KafkaError(code: -1, message: "a record was not acknowledged", operation: "write to \(topic)[\(partition)]")
        }
        return offsets.map { $0! }
    }

    /// Notes `head` as the partition's newest checkpoint, and tombstones the records of
    /// checkpoints beyond the newest `keep`, of one whose head `head` replaced, and of torn
    /// writes.
    private func prune(partition p: Int32, adding head: Head) throws(KafkaError) {
        let (expired, replaced, orphans) = known.withLock { all -> ([Head], [Head], Set<String>) in
            var entry = all[p] ?? Known()
            let replaced = entry.heads.filter { $0.nextOffset == head.nextOffset && $0.write != head.write }
            entry.heads.removeAll { $0.nextOffset == head.nextOffset }
            entry.heads.append(head)
            let expired = Array(entry.heads.dropLast(keep))
            entry.heads.removeFirst(expired.count)
            let orphans = entry.orphanKeys
            entry.orphanKeys = []
            all[p] = entry
            return (expired, replaced, orphans)
        }
        var keys = Array(orphans) + replaced.flatMap(\.chunkKeys)
        for old in expired { keys += old.chunkKeys + [Self.headKey(old.nextOffset)] }
        _ = try produceAndWait(keys.map { ($0, nil) }, partition: p)
    }

    // MARK: - Reading

    /// What the tail of a partition holds: its heads (oldest first), the values of the
    /// chunks read on the way, and the chunk keys no head there names.
    struct Tail {
        var heads: [Head] = []
        var chunks: [Int64: [UInt8]] = [:]
        var orphanKeys: Set<String> = []
        var low: Int64 = 0
    }

    private func withReader<T>(_ body: (KafkaConsumer) throws -> T) throws -> T {
        try reader.withLock { reader in
            if reader == nil {
                var settings = KafkaConfiguration(kafkaProperties.filter { !$0.0.hasPrefix("group.") })
                settings.set("enable.partition.eof", "true")
                settings.set("fetch.wait.max.ms", "10")
                settings.set("fetch.message.max.bytes", String(Self.chunkBytes * 4))
                reader = try KafkaConsumer(bootstrapServers: brokers, groupID: nil, configuration: settings, logger: logger)
            }
            return try body(reader!)
        }
    }

    /// Reads the records of each partition in `ranges` (all of them at once), passing each
    /// to `visit` (partition, offset, key, value; a nil value is a tombstone).
    private func read(_ consumer: KafkaConsumer, _ ranges: [Int32: Range<Int64>],
                      visit: (Int32, Int64, String, UnsafeRawBufferPointer?) -> Void) throws {
        var remaining = Set(ranges.filter { !$0.value.isEmpty }.keys)
        guard !remaining.isEmpty else { return }
        try consumer.assign(remaining.map { (TopicPartition(topic, $0), ranges[$0]!.lowerBound) })
        defer { try? consumer.assign([]) }
        let batch = MessageBatch(capacity: 1024)
        defer { batch.release() }
        let deadline = monotonicSeconds() + 60
        while !remaining.isEmpty {
            guard monotonicSeconds() < deadline else {
                throw WorkerError("reading the tails of \(topic) partitions \(remaining.sorted()) took more than 60 s")
            }
            let n = try consumer.poll(into: batch, timeoutMs: 200)
            for i in 0..<n {
                let message = batch[i]
                let p = message.partition
                guard remaining.contains(p), let end = ranges[p]?.upperBound else { continue }
                if let error = message.error {
                    // The end of the partition (compaction leaves gaps below it).
                    if error.code == KafkaError.partitionEOF {
                        remaining.remove(p)
                        continue
                    }
                    throw error
                }
                guard message.offset < end else {
                    remaining.remove(p)
                    continue
                }
                let key = message.key.map { String(decoding: $0, as: UTF8.self) } ?? ""
                visit(p, message.offset, key, message.value.baseAddress == nil ? nil : message.value)
                if message.offset + 1 >= end { remaining.remove(p) }
            }
        }
    }

    /// Reads the tails of `partitions` together, widening a partition's window until it
    /// holds a head (or is the whole partition).
    func readTails(_ partitions: [Int32]) throws -> [Int32: Tail] {
        try withReader { consumer in
            var marks: [Int32: (low: Int64, high: Int64)] = [:]
            for p in partitions { marks[p] = try consumer.watermarks(TopicPartition(topic, p), timeoutMs: 10_000) }
            var window = Dictionary(uniqueKeysWithValues: partitions.map { ($0, Int64(64)) })
            var found: [Int32: Tail] = [:]
            var pending = Set(partitions)
            while !pending.isEmpty {
                var ranges: [Int32: Range<Int64>] = [:]
                var tails: [Int32: Tail] = [:]
                var chunkKeys: [Int32: [(Int64, String)]] = [:]
                for p in pending {
                    let (low, high) = marks[p]!
                    ranges[p] = max(low, high - window[p]!)..<high
                    tails[p] = Tail(low: low)
                }
                try read(consumer, ranges) { p, offset, key, value in
                    if key.hasPrefix("head/") {
                        if let value, let head = Head(json: value, offset: offset) {
                            tails[p]!.heads.removeAll { $0.nextOffset == head.nextOffset }
                            tails[p]!.heads.append(head)
                        } else if value == nil {
                            tails[p]!.heads.removeAll { Self.headKey($0.nextOffset) == key }
                        }
                    } else if key.hasPrefix("chunk/"), let value {
                        tails[p]!.chunks[offset] = Array(value)
                        chunkKeys[p, default: []].append((offset, key))
                    }
                }
                for p in pending {
                    var tail = tails[p]!
                    guard !tail.heads.isEmpty || ranges[p]!.lowerBound == tail.low else {
                        window[p]! *= 8
                        continue
                    }
                    // Chunks written after the newest head that no head names: a torn write.
                    let named = Set(tail.heads.flatMap(\.chunks))
                    let newest = tail.heads.map(\.offset).max() ?? -1
                    tail.orphanKeys = Set((chunkKeys[p] ?? []).filter { $0.0 > newest && !named.contains($0.0) }.map(\.1))
                    found[p] = tail
                    pending.remove(p)
                }
            }
            return found
        }
    }

    /// The tail of one partition.
    func readTail(partition p: Int32) throws -> Tail {
        try readTails([p])[p]!
    }

    /// Reads the tails of the partitions about to be restored in one pass; `restore` then
    /// takes each from here.
    public func prepareRestore(topic inputTopic: String, partitions: [Int32]) {
        do {
            let tails = try readTails(partitions)
            prefetched.withLock { $0.merge(tails) { $1 } }
        } catch {
            logger.warning("could not read the checkpoint topic's tails at once (reading them one by one): \(error)")
        }
    }

    /// The checkpoint a head names, read back from its chunks.
    private func bytes(of head: Head, partition p: Int32, tail: Tail) throws -> [UInt8]? {
        var chunks: [Int64: [UInt8]] = [:]
        for offset in head.chunks { if let chunk = tail.chunks[offset] { chunks[offset] = chunk } }
        let missing = head.chunks.filter { chunks[$0] == nil }
        if let first = missing.min(), let last = missing.max() {
            let wanted = Set(missing)
            try withReader { consumer in
                try read(consumer, [p: first..<last + 1]) { _, offset, _, value in
                    if wanted.contains(offset), let value { chunks[offset] = Array(value) }
                }
            }
        }
        guard head.chunks.allSatisfy({ chunks[$0] != nil }) else { return nil }
        let whole = head.chunks.flatMap { chunks[$0]! }
        return whole.count == head.bytes ? whole : nil
    }

    public func restore(topic inputTopic: String, partition: Int32, configuration: EngineConfiguration) throws(CheckpointError) -> RestoredCheckpoint? {
        let tail: Tail
        do {
            tail = try prefetched.withLock { $0.removeValue(forKey: partition) } ?? readTail(partition: partition)
        } catch {
            throw CheckpointError(path: "\(topic)[\(partition)]", problem: .io("cannot read the checkpoint topic: \(error)"))
        }
        known.withLock { $0[partition] = Known(heads: tail.heads.filter { $0.offset >= 0 }, orphanKeys: tail.orphanKeys) }
        return try Self.restoreNewest(Array(tail.heads.reversed()), topic: inputTopic, partition: partition, logger: logger,
                                      read: { (head, engine) throws(CheckpointError) in
                                          try self.read(head, partition: partition, tail: tail, into: engine, configuration: configuration)
                                      }, configuration: configuration)
    }

    private func read(_ head: Head, partition: Int32, tail: Tail, into engine: PartitionEngine?,
                      configuration: EngineConfiguration?) throws(CheckpointError) -> (CheckpointHeader, String) {
        let location = "\(topic)[\(partition)]@\(head.nextOffset)"
        let found: [UInt8]?
        do {
            found = try bytes(of: head, partition: partition, tail: tail)
        } catch {
            throw CheckpointError(path: location, problem: .io("cannot read the checkpoint topic: \(error)"))
        }
        guard let found else { throw CheckpointError(path: location, problem: .truncated) }
        let result: Result<CheckpointHeader, CheckpointError.Problem> = found.withUnsafeBytes { raw in
            Result { () throws(CheckpointError.Problem) in try CheckpointFile.parse(raw, into: engine, configuration: configuration) }
        }
        switch result {
        case let .success(header): return (header, location)
        case let .failure(problem): throw CheckpointError(path: location, problem: problem)
        }
    }

    public func partitions(topic inputTopic: String) throws(CheckpointError) -> [Int32] {
        do {
            guard let count = try producer.partitionCount(topic, timeoutMs: 10_000) else {
                throw CheckpointError(path: topic, problem: .io("the checkpoint topic does not exist on \(brokers)"))
            }
            return try (0..<Int32(count)).filter { p in
                let (low, high) = try producer.watermarks(TopicPartition(topic, p), timeoutMs: 10_000)
                return low < high
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(path: topic, problem: .io("cannot read the checkpoint topic: \(error)"))
        }
    }

    public func newestHeader(topic inputTopic: String, partition: Int32, warn: (CheckpointError) -> Void) throws(CheckpointError) -> (path: String, header: CheckpointHeader)? {
        let tail: Tail
        do {
            tail = try readTail(partition: partition)
        } catch {
            throw CheckpointError(path: "\(topic)[\(partition)]", problem: .io("cannot read the checkpoint topic: \(error)"))
        }
        for head in tail.heads.reversed() {
            do {
                let (header, location) = try read(head, partition: partition, tail: tail, into: nil, configuration: nil)
                return (location, header)
            } catch {
                guard error.isDamage else { throw error }
                warn(error)
            }
        }
        return nil
    }
}
