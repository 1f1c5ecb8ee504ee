import CRdKafka
import Logging

/// A delivered message: where it landed, and the tag it was produced with.
public struct DeliveryReport: Sendable {
    public let tag: UInt64
    public let partition: Int32
    public let offset: Int64
    public let errorCode: Int32
}

/// An idempotent Kafka producer with lz4 compression and batching. Owns its `rd_kafka_t`.
///
/// Delivery is asynchronous: `produce` queues, `poll` serves delivery reports, `flush`
/// waits until every queued message is acknowledged. A message that could not be
/// delivered (after librdkafka's retries) is never ignored: the first failure is kept and
/// `flush` throws it, so whoever flushes before declaring work done learns of it.
// Sound as `@unchecked Sendable`: librdkafka's produce calls are thread-safe (billing threads
// use `offer`); `poll`, `flush` and the delivery reports they serve stay on one thread,
// the owner's.
public final class KafkaProducer: @unchecked Sendable {
    // Sound as `@unchecked Sendable`: its fields are touched only inside the owner's
    // `poll` and `flush`, on the owner's thread.
    final class Context: HandleContext, @unchecked Sendable {
        var delivered: UInt64 = 0
        var failure: KafkaError?
        var onDeliveries: ((UnsafeBufferPointer<DeliveryReport>) -> Void)?
        /// The reports librdkafka gave since the last hand-over: the callback only stores
        /// each one, and the handler takes them in bulk when the poll returns (a Swift
        /// closure call per message cost a retain, a release and exclusivity checks).
        let reports = UnsafeMutablePointer<DeliveryReport>.allocate(capacity: Context.reportCapacity)
        var reportCount = 0
        static let reportCapacity = 4096

        deinit { reports.deallocate() }

        /// Gives the stored reports to the handler. On the polling thread only.
        func handOver() {
            guard reportCount > 0 else { return }
            let count = reportCount
            reportCount = 0
            onDeliveries?(UnsafeBufferPointer(start: reports, count: count))
        }
    }

    let handle: OpaquePointer
    private let context: Context
    public let logger: Logger

    public init(bootstrapServers: String, configuration extra: KafkaConfiguration = KafkaConfiguration(),
                logger: Logger) throws(KafkaError) {
        var configuration = KafkaConfiguration([
            ("bootstrap.servers", bootstrapServers),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.codec", "lz4"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1048576"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
            ("message.timeout.ms", "300000"),
        ])
        for (name, value) in extra.properties { configuration.set(name, value) }
        let conf = try configuration.make()
        context = Context(logger: logger)
        self.logger = logger
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
        LogSink.install(on: conf)
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
            guard let message, let opaque else { return }
            Unmanaged<Context>.fromOpaque(opaque)._withUnsafeGuaranteedRef { context in
                let err = message.pointee.err
                if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                    context.delivered += 1
                } else if context.failure == nil {
                    LogSink.countError()
                    context.failure = KafkaError(code: err.rawValue, message: String(cString: rd_kafka_err2str(err)),
                                                 operation: "deliver to \(String(cString: rd_kafka_topic_name(message.pointee.rkt)))")
                }
                context.reports[context.reportCount] = DeliveryReport(tag: UInt64(UInt(bitPattern: message.pointee._private)),
                                                                      partition: message.pointee.partition,
                                                                      offset: message.pointee.offset, errorCode: err.rawValue)
                context.reportCount += 1
                if context.reportCount == Context.reportCapacity { context.handOver() }
            }
        }
        var errorText = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            let text = String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(code: RD_KAFKA_RESP_ERR__FAIL.rawValue, message: text, operation: "create producer")
        }
        handle = rk
    }

    deinit {
        rd_kafka_flush(handle, 5000)
        context.handOver()
        rd_kafka_destroy(handle)
    }

    /// Called on the thread that polls with the delivery reports served, in the order
    /// librdkafka gave them, before `poll`, `produce` or `flush` returns (a few thousand at
    /// a time at most).
    public var onDeliveries: ((UnsafeBufferPointer<DeliveryReport>) -> Void)? {
        get { context.onDeliveries }
        set { context.onDeliveries = newValue }
    }

    /// Messages acknowledged so far.
    public var delivered: UInt64 { context.delivered }
    /// Messages queued or in flight.
    public var inFlight: Int { Int(rd_kafka_outq_len(handle)) }
    /// The first delivery failure, if any.
    public var failure: KafkaError? { context.failure }

    public func topic(_ name: String) throws(KafkaError) -> ProducerTopic {
        guard let rkt = rd_kafka_topic_new(handle, name, nil) else {
            throw KafkaError(rd_kafka_last_error(), operation: "open topic \(name)")
        }
        return ProducerTopic(name: name, handle: rkt, producer: self)
    }

    /// Queues a message (copied). Partition by key when `partition` is nil. When the local
    /// queue is full, serves delivery reports until there is room.
    public func produce(_ topic: ProducerTopic, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer,
                        partition: Int32? = nil, tag: UInt64 = 0) throws(KafkaError) {
        while try !offer(topic, key: key, value: value, partition: partition, tag: tag) {
            rd_kafka_poll(handle, 10)
            context.handOver()
        }
    }

    /// Queues a message (copied) if the local queue has room; returns false when it is full.
    /// Never serves delivery reports, so any thread may call it while another polls: the
    /// queue only empties as the polling thread serves the reports.
    public func offer(_ topic: ProducerTopic, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer,
                      partition: Int32? = nil, tag: UInt64 = 0) throws(KafkaError) -> Bool {
        let result = rd_kafka_produce(topic.handle, partition ?? RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                      UnsafeMutableRawPointer(mutating: value.baseAddress), value.count,
                                      key?.baseAddress, key?.count ?? 0,
                                      UnsafeMutableRawPointer(bitPattern: UInt(tag)))
        if result == 0 { return true }
        let err = rd_kafka_last_error()
        guard err == RD_KAFKA_RESP_ERR__QUEUE_FULL else { throw KafkaError(err, operation: "produce to \(topic.name)") }
        return false
    }

    /// Serves delivery reports; returns how many were served.
    @discardableResult
    public func poll(timeoutMs: Int32 = 0) -> Int {
        let served = Int(rd_kafka_poll(handle, timeoutMs))
        context.handOver()
        return served
    }

    /// Waits until every queued message is acknowledged. Throws the first delivery
    /// failure, or a timeout if messages are still in flight after `timeoutMs`.
    public func flush(timeoutMs: Int32) throws(KafkaError) {
        let err = rd_kafka_flush(handle, timeoutMs)
        context.handOver()
        if let failure = context.failure { throw failure }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(code: err.rawValue, message: "\(inFlight) messages still unacknowledged after \(timeoutMs) ms",
                             operation: "flush producer")
        }
    }

    /// The number of partitions of `topic`, or nil if the cluster does not have it.
    public func partitionCount(_ topic: String, timeoutMs: Int32) throws(KafkaError) -> Int? {
        try KafkaMetadata.partitionCount(handle: handle, topic, timeoutMs: timeoutMs)
    }

    /// The low and high watermarks of a partition.
    public func watermarks(_ tp: TopicPartition, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        try KafkaMetadata.watermarks(handle: handle, tp, timeoutMs: timeoutMs)
    }
}

/// A topic handle of a producer.
// Sound as `@unchecked Sendable`: immutable, and librdkafka's topic handles are thread-safe.
public final class ProducerTopic: @unchecked Sendable {
    public let name: String
    let handle: OpaquePointer
    private let producer: KafkaProducer  // outlives the topic handle

    init(name: String, handle: OpaquePointer, producer: KafkaProducer) {
        self.name = name
        self.handle = handle
        self.producer = producer
    }

    deinit { rd_kafka_topic_destroy(handle) }
}
