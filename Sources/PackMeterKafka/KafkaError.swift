import CRdKafka

/// An error from librdkafka, with its code and text, and what packmeter was doing.
///
/// `code` is librdkafka's `rd_kafka_resp_err_t` (negative values are client-side errors,
/// positive ones come from the broker); `name` is its symbolic name (`_TRANSPORT`,
/// `UNKNOWN_TOPIC_OR_PART`, ...).
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let name: String
    public let message: String
    public let operation: String

    public init(code: Int32, message: String, operation: String) {
        self.code = code
        name = String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
        self.message = message
        self.operation = operation
    }

    init(_ err: rd_kafka_resp_err_t, operation: String) {
        self.init(code: err.rawValue, message: String(cString: rd_kafka_err2str(err)), operation: operation)
    }

    /// Takes ownership of an `rd_kafka_error_t` and frees it.
    init(consuming error: OpaquePointer, operation: String) {
        code = rd_kafka_error_code(error).rawValue
        name = String(cString: rd_kafka_error_name(error))
        message = String(cString: rd_kafka_error_string(error))
        self.operation = operation
        rd_kafka_error_destroy(error)
    }

    public var description: String { "\(operation): \(message) (\(name))" }

    /// Well-known codes.
    public static let unknownTopicOrPartition: Int32 = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue
    public static let partitionEOF: Int32 = RD_KAFKA_RESP_ERR__PARTITION_EOF.rawValue
    public static let timedOut: Int32 = RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue
    public static let allBrokersDown: Int32 = RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN.rawValue
    public static let unknownTopic: Int32 = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC.rawValue
    public static let transport: Int32 = RD_KAFKA_RESP_ERR__TRANSPORT.rawValue
}

/// A topic and partition.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// Special offsets of librdkafka.
public enum KafkaOffset {
    public static let beginning = Int64(RD_KAFKA_OFFSET_BEGINNING)
    public static let end = Int64(RD_KAFKA_OFFSET_END)
    public static let stored = Int64(RD_KAFKA_OFFSET_STORED)
    public static let invalid = Int64(RD_KAFKA_OFFSET_INVALID)
}

/// An owned `rd_kafka_topic_partition_list_t`.
final class PartitionList {
    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(capacity: Int) {
        pointer = rd_kafka_topic_partition_list_new(Int32(max(capacity, 1)))
    }

    convenience init(_ entries: [(TopicPartition, Int64)]) {
        self.init(capacity: entries.count)
        for (tp, offset) in entries { add(tp, offset: offset) }
    }

    /// Wraps a list librdkafka owns (a rebalance callback's); `copy` makes our own.
    init(copying list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        pointer = rd_kafka_topic_partition_list_copy(list)
    }

    deinit { rd_kafka_topic_partition_list_destroy(pointer) }

    func add(_ tp: TopicPartition, offset: Int64) {
        let element = rd_kafka_topic_partition_list_add(pointer, tp.topic, tp.partition)!
        element.pointee.offset = offset
    }

    var entries: [(TopicPartition, Int64, Int32)] {
        (0..<Int(pointer.pointee.cnt)).map { i in
            let e = pointer.pointee.elems[i]
            return (TopicPartition(String(cString: e.topic), e.partition), e.offset, e.err.rawValue)
        }
    }
}
