import CRdKafka
import Glibc
import Logging

/// A Kafka consumer: a consumer group member (`subscribe`) or a manually assigned reader
/// (`assign`). Owns its `rd_kafka_t`. Used from one thread: `poll` serves the rebalance
/// callback on the calling thread, so the handler runs where the partitions' state lives.
// Sound as `@unchecked Sendable`: it is handed to the thread that uses it and used from that
// one thread; the high-watermark cache it reads is librdkafka's, behind librdkafka's lock.
public final class KafkaConsumer: @unchecked Sendable {
    /// A partition assignment change. For `assigned`, the handler returns where to start
    /// reading each partition (`KafkaOffset.beginning` or an offset); for `revoked` it
    /// finishes the partitions' work (checkpoint, commit) before they go; `lost` means the
    /// group moved on without us (no commit is possible).
    public enum RebalanceEvent: Sendable {
        case assigned([TopicPartition])
        case revoked([TopicPartition])
        case lost([TopicPartition])
    }

    public typealias RebalanceHandler = (RebalanceEvent) throws -> [TopicPartition: Int64]

    // Sound as `@unchecked Sendable`: its fields are touched only inside `poll`, on the
    // consumer's thread.
    final class Context: HandleContext, @unchecked Sendable {
        var rebalance: RebalanceHandler?
        /// An error raised inside a callback, rethrown by the next `poll`.
        var pendingError: Error?
        /// Whether the group has given this member an assignment (maybe empty) yet.
        var everAssigned = false
    }

    let handle: OpaquePointer
    private let queue: OpaquePointer
    private let context: Context
    private var closed = false
    private var subscribed = false
    public let logger: Logger
    /// `queued.min.messages` and `queued.max.messages.kbytes` (in bytes) as configured.
    private let queueLimits: (messages: Int, bytes: Int)

    /// Whether the consumer queue reached a limit above which librdkafka stops fetching,
    /// since the last `seek`. librdkafka 2.0 then does not look at the queue again until
    /// something else wakes its broker thread, up to a second later (librdkafka
    /// 2.2 adds `fetch.queue.backoff.ms` for this). Seeking the partitions to where the
    /// reader stands wakes them.
    public private(set) var fetchersMayBeParked = false

    /// - Parameters:
    ///   - groupID: the consumer group, or nil for a reader that only uses `assign`.
    public init(bootstrapServers: String, groupID: String?, configuration extra: KafkaConfiguration = KafkaConfiguration(),
                logger: Logger, rebalance: RebalanceHandler? = nil) throws(KafkaError) {
        var configuration = KafkaConfiguration([
            ("bootstrap.servers", bootstrapServers),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.partition.eof", "false"),
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "4194304"),
            ("queued.min.messages", "100000"),
            ("queued.max.messages.kbytes", "65536"),
        ])
        configuration.set("group.id", groupID ?? "packmeter-reader")
        for (name, value) in extra.properties { configuration.set(name, value) }
        let limit = { (name: String) in configuration.properties.last { $0.0 == name }.flatMap { Int($0.1) } ?? 0 }
        queueLimits = (limit("queued.min.messages"), limit("queued.max.messages.kbytes") * 1024)
        let conf = try configuration.make()
        context = Context(logger: logger)
        context.rebalance = rebalance
        self.logger = logger
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
        LogSink.install(on: conf)
        if rebalance != nil {
            rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
                guard let rk, let partitions, let opaque else { return }
                let context = Unmanaged<Context>.fromOpaque(opaque).takeUnretainedValue()
                KafkaConsumer.serveRebalance(rk: rk, err: err, partitions: partitions, context: context)
            }
        }
        var errorText = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            let text = String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(code: RD_KAFKA_RESP_ERR__FAIL.rawValue, message: text, operation: "create consumer")
        }
        handle = rk
        rd_kafka_poll_set_consumer(rk)
        queue = rd_kafka_queue_get_consumer(rk)
    }

    deinit {
        rd_kafka_queue_destroy(queue)
        if !closed { rd_kafka_consumer_close(handle) }
        guard destroyIsSafe else {
            logger.debug("left librdkafka's consumer handle to the process exit: it joined the group but was never assigned")
            return
        }
        rd_kafka_destroy(handle)
    }

    /// librdkafka before 2.3 aborts in `rd_kafka_destroy` when a cooperative-sticky consumer
    /// has joined its group but not yet received its first assignment (librdkafka issue
    /// 4312: the sticky assignor's state is still null). Whether it joined cannot be told
    /// once it has left (the member id is cleared), so a subscribed consumer never assigned
    /// is closed (it leaves the group) but not destroyed: the process ends soon after, and
    /// a rolling restart may stop a worker at any moment.
    private var destroyIsSafe: Bool { !subscribed || context.everAssigned }

    private static func serveRebalance(rk: OpaquePointer, err: rd_kafka_resp_err_t,
                                       partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>, context: Context) {
        let list = PartitionList(copying: partitions)
        let topicPartitions = list.entries.map(\.0)
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        do {
            switch err {
            case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                context.everAssigned = true
                let starts = try context.rebalance?(.assigned(topicPartitions)) ?? [:]
                let assignment = PartitionList(topicPartitions.map { ($0, starts[$0] ?? KafkaOffset.stored) })
                if cooperative {
                    if let error = rd_kafka_incremental_assign(rk, assignment.pointer) {
                        throw KafkaError(consuming: error, operation: "assign \(topicPartitions)")
                    }
                } else {
                    let code = rd_kafka_assign(rk, assignment.pointer)
                    if code != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(code, operation: "assign \(topicPartitions)") }
                }
            case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                let lost = rd_kafka_assignment_lost(rk) != 0
                _ = try context.rebalance?(lost ? .lost(topicPartitions) : .revoked(topicPartitions))
                if cooperative {
                    if let error = rd_kafka_incremental_unassign(rk, list.pointer) {
                        throw KafkaError(consuming: error, operation: "unassign \(topicPartitions)")
                    }
                } else {
                    rd_kafka_assign(rk, nil)
                }
            default:
                context.logSink.logger.error("rebalance failed: \(String(cString: rd_kafka_err2str(err)))")
                rd_kafka_assign(rk, nil)
            }
        } catch {
            if context.pendingError == nil { context.pendingError = error }
        }
    }

    /// Joins the group for `topics`; partitions arrive through the rebalance handler.
    public func subscribe(_ topics: [String]) throws(KafkaError) {
        let list = PartitionList(capacity: topics.count)
        for topic in topics { list.add(TopicPartition(topic, Int32(RD_KAFKA_PARTITION_UA)), offset: KafkaOffset.invalid) }
        subscribed = true
        let err = rd_kafka_subscribe(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "subscribe to \(topics)") }
    }

    /// Reads exactly these partitions from these offsets (no group membership).
    public func assign(_ partitions: [(TopicPartition, Int64)]) throws(KafkaError) {
        let list = PartitionList(partitions)
        let err = rd_kafka_assign(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "assign \(partitions.map(\.0))") }
    }

    /// Ends a `poll` waiting on another thread at once (it returns what it has, maybe
    /// nothing). Thread-safe.
    public func wakeUp() {
        rd_kafka_queue_yield(queue)
    }

    /// Fills `batch` with the messages already fetched, up to its capacity; when there are
    /// none, waits up to `timeoutMs` for the first. Rebalance callbacks run inside this
    /// call. Returns the number of messages.
    ///
    /// (librdkafka's batch call waits for a *full* batch until the timeout; taking what is
    /// there instead lets the caller work while the next fetch is under way.)
    @discardableResult
    public func poll(into batch: MessageBatch, timeoutMs: Int32) throws -> Int {
        batch.release()
        var n = rd_kafka_consume_batch_queue(queue, 0, batch.buffer, batch.capacity)
        if n == 0 && timeoutMs > 0 && context.pendingError == nil, let first = rd_kafka_consume_queue(queue, timeoutMs) {
            batch.buffer[0] = first
            let more = rd_kafka_consume_batch_queue(queue, 0, batch.buffer + 1, batch.capacity - 1)
            n = more < 0 ? 1 : 1 + more
        }
        if let error = context.pendingError {
            context.pendingError = nil
            if n > 0 { batch.count = n }
            throw error
        }
        guard n >= 0 else { throw KafkaError(rd_kafka_last_error(), operation: "poll") }
        batch.count = n
        if n > 0 && !fetchersMayBeParked { noteQueueLength(taken: batch) }
        return n
    }

    /// The queue held what is left plus what this poll took; the payload bytes are
    /// estimated from up to 64 of the messages taken (each one is a cache miss here).
    /// Within 90% of a limit counts as reached.
    private func noteQueueLength(taken batch: MessageBatch) {
        let held = rd_kafka_queue_length(queue) + batch.count
        let step = max(1, batch.count / 64)
        var bytes = 0
        var sampled = 0
        for i in stride(from: 0, to: batch.count, by: step) {
            bytes += batch.buffer[i]!.pointee.len
            sampled += 1
        }
        let estimatedBytes = Double(bytes) / Double(sampled) * Double(held)
        fetchersMayBeParked = held * 10 >= queueLimits.messages * 9 || estimatedBytes >= Double(queueLimits.bytes) * 0.9
    }

    /// Moves the fetch position of assigned partitions to `positions` (the next offset to
    /// read), and wakes their fetchers. Messages fetched for the old position are dropped,
    /// never delivered. Waits up to `timeoutMs` for the fetchers to take the new positions.
    public func seek(_ positions: [(TopicPartition, Int64)], timeoutMs: Int32) throws(KafkaError) {
        fetchersMayBeParked = false
        guard !positions.isEmpty else { return }
        let list = PartitionList(positions)
        if let error = rd_kafka_seek_partitions(handle, list.pointer, timeoutMs) {
            let failure = KafkaError(rd_kafka_error_code(error), operation: "seek \(positions.map(\.0))")
            rd_kafka_error_destroy(error)
            throw failure
        }
        for (tp, _, err) in list.entries where err != 0 {
            throw KafkaError(rd_kafka_resp_err_t(rawValue: err), operation: "seek \(tp)")
        }
    }

    /// Commits `offsets` (the next offset to read, per partition) to the group. With
    /// `wait`, returns once the coordinator has them; without, sends the request and
    /// returns (a failure is only logged by librdkafka, and the next commit covers it).
    public func commit(_ offsets: [(TopicPartition, Int64)], wait: Bool = true) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = PartitionList(offsets)
        let err = rd_kafka_commit(handle, list.pointer, wait ? 0 : 1)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET {
            throw KafkaError(err, operation: "commit offsets")
        }
    }

    /// The group's committed offsets for `partitions` (`KafkaOffset.invalid` where none).
    /// Unlike the rest of this type, callable from any thread: librdkafka answers it on a
    /// queue of its own.
    public func committed(_ partitions: [TopicPartition], timeoutMs: Int32) throws(KafkaError) -> [TopicPartition: Int64] {
        let list = PartitionList(partitions.map { ($0, KafkaOffset.invalid) })
        let err = rd_kafka_committed(handle, list.pointer, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "read committed offsets") }
        var result: [TopicPartition: Int64] = [:]
        for (tp, offset, _) in list.entries { result[tp] = offset }
        return result
    }

    /// The low and high watermarks (first and next offset) of a partition, from the broker.
    public func watermarks(_ tp: TopicPartition, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        try KafkaMetadata.watermarks(handle: handle, tp, timeoutMs: timeoutMs)
    }

    /// The partition's high watermark as last seen in fetch responses (no broker request),
    /// or nil if not known yet.
    public func cachedHighWatermark(_ tp: TopicPartition) -> Int64? {
        var low: Int64 = 0
        var high: Int64 = 0
        let err = rd_kafka_get_watermark_offsets(handle, tp.topic, tp.partition, &low, &high)
        return err == RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 ? high : nil
    }

    /// For each partition, the first offset whose timestamp is at or after `timestampMs`
    /// (the partition's end offset if there is none).
    public func offsets(forTime timestampMs: Int64, _ partitions: [TopicPartition], timeoutMs: Int32) throws(KafkaError) -> [TopicPartition: Int64] {
        let list = PartitionList(partitions.map { ($0, timestampMs) })
        let err = rd_kafka_offsets_for_times(handle, list.pointer, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "look up offsets for a time") }
        var result: [TopicPartition: Int64] = [:]
        for (tp, offset, code) in list.entries {
            if code != 0 { throw KafkaError(code: code, message: "offset lookup failed for \(tp)", operation: "look up offsets for a time") }
            result[tp] = offset
        }
        return result
    }

    /// The number of partitions of `topic`, or nil if the cluster does not have it.
    public func partitionCount(_ topic: String, timeoutMs: Int32) throws(KafkaError) -> Int? {
        try KafkaMetadata.partitionCount(handle: handle, topic, timeoutMs: timeoutMs)
    }

    /// Leaves the group (revoking partitions through the handler) and stops fetching.
    public func close() {
        guard !closed else { return }
        closed = true
        rd_kafka_consumer_close(handle)
    }
}

/// Messages from one poll. Their bytes stay valid until the next poll or `release()`.
// Sound as `@unchecked Sendable`: billing threads read disjoint runs of it and release only
// their own messages, while the polling thread waits for them (`concurrentPerform`).
public final class MessageBatch: @unchecked Sendable {
    @usableFromInline let buffer: UnsafeMutablePointer<UnsafeMutablePointer<rd_kafka_message_t>?>
    public let capacity: Int
    public internal(set) var count = 0

    public init(capacity: Int = 8192) {
        self.capacity = capacity
        buffer = .allocate(capacity: capacity)
        buffer.initialize(repeating: nil, count: capacity)
    }

    deinit {
        release()
        buffer.deallocate()
    }

    /// One message, seen through Swift types.
    public struct Message {
        public let partition: Int32
        public let offset: Int64
        public let key: UnsafeRawBufferPointer?
        public let value: UnsafeRawBufferPointer
        /// The record's timestamp in epoch ms, if it has one.
        public let timestampMs: Int64?
        /// 0, or the librdkafka error this "message" reports instead of data.
        public let errorCode: Int32
        @usableFromInline let raw: UnsafeMutablePointer<rd_kafka_message_t>

        @inlinable
        init(partition: Int32, offset: Int64, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer, timestampMs: Int64?,
             errorCode: Int32, raw: UnsafeMutablePointer<rd_kafka_message_t>) {
            self.partition = partition
            self.offset = offset
            self.key = key
            self.value = value
            self.timestampMs = timestampMs
            self.errorCode = errorCode
            self.raw = raw
        }

        /// Whether the message is from `topic` (compares without building a String).
        public func topicIs(_ topic: String) -> Bool {
            guard let rkt = raw.pointee.rkt else { return false }
            return strcmp(rd_kafka_topic_name(rkt), topic) == 0
        }

        public var error: KafkaError? {
            errorCode == 0 ? nil : KafkaError(code: errorCode, message: String(cString: rd_kafka_message_errstr(raw)), operation: "consume")
        }
    }

    @inlinable
    public subscript(index: Int) -> Message {
        let m = buffer[index]!
        let value = UnsafeRawBufferPointer(start: m.pointee.payload, count: m.pointee.payload == nil ? 0 : m.pointee.len)
        let key = m.pointee.key.map { UnsafeRawBufferPointer(start: $0, count: m.pointee.key_len) }
        var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(m, &type)
        return Message(partition: m.pointee.partition, offset: m.pointee.offset, key: key, value: value,
                       timestampMs: type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts,
                       errorCode: m.pointee.err.rawValue, raw: m)
    }

    /// The partition of message `index`, without building the message.
    @inlinable
    public func partition(at index: Int) -> Int32 { buffer[index]!.pointee.partition }

    /// Whether message `index` reports an error instead of carrying data.
    @inlinable
    public func isError(at index: Int) -> Bool { buffer[index]!.pointee.err != RD_KAFKA_RESP_ERR_NO_ERROR }

    /// Returns the messages to librdkafka.
    public func release() {
        release(0..<count)
        count = 0
    }

    /// Returns the messages in `range` to librdkafka (those not returned yet). Different
    /// threads may return disjoint ranges at the same time.
    public func release(_ range: Range<Int>) {
        for i in range {
            if let m = buffer[i] { rd_kafka_message_destroy(m) }
            buffer[i] = nil
        }
    }
}

/// Metadata and watermark queries shared by consumers and producers.
enum KafkaMetadata {
    static func watermarks(handle: OpaquePointer, _ tp: TopicPartition, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        var low: Int64 = 0
        var high: Int64 = 0
        let err = rd_kafka_query_watermark_offsets(handle, tp.topic, tp.partition, &low, &high, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "read watermarks of \(tp)") }
        return (low, high)
    }

    static func partitionCount(handle: OpaquePointer, _ topic: String, timeoutMs: Int32) throws(KafkaError) -> Int? {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 1, nil, &metadata, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "read cluster metadata") }
        defer { rd_kafka_metadata_destroy(metadata) }
        guard let metadata else { return nil }
        for i in 0..<Int(metadata.pointee.topic_cnt) {
            let t = metadata.pointee.topics[i]
            if String(cString: t.topic) == topic {
                return t.err == RD_KAFKA_RESP_ERR_NO_ERROR ? Int(t.partition_cnt) : nil
            }
        }
        return nil
    }
}
