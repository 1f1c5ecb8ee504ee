import CRdKafka
import Logging

/// A topic to create: its name, partition count and topic-level configuration
/// (`cleanup.policy=compact`, ...).
public struct TopicSpec: Sendable {
    public var name: String
    public var partitions: Int
    public var configuration: [(String, String)]

    public init(_ name: String, partitions: Int, configuration: [(String, String)] = []) {
        self.name = name
        self.partitions = partitions
        self.configuration = configuration
    }
}

extension KafkaProducer {
    /// Creates the topics that do not exist yet (Kafka's CreateTopics; an existing topic is
    /// left as it is). Throws when the brokers refuse, or do not implement the request
    /// (librdkafka's mock cluster: create its topics with `MockCluster.createTopic`).
    public func createTopics(_ topics: [TopicSpec], timeoutMs: Int32) throws(KafkaError) {
        guard !topics.isEmpty else { return }
        var errorText = [CChar](repeating: 0, count: 512)
        var newTopics: [OpaquePointer?] = []
        defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
        for spec in topics {
            guard let topic = rd_kafka_NewTopic_new(spec.name, Int32(spec.partitions), -1, &errorText, errorText.count) else {
                throw KafkaError(code: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue, message: String(cString: errorText),
                                 operation: "create topic \(spec.name)")
            }
            newTopics.append(topic)
            for (name, value) in spec.configuration {
                let err = rd_kafka_NewTopic_set_config(topic, name, value)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "create topic \(spec.name) with \(name)=\(value)") }
            }
        }
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errorText, errorText.count)
        rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errorText, errorText.count)
        newTopics.withUnsafeMutableBufferPointer { list in
            rd_kafka_CreateTopics(handle, list.baseAddress, list.count, options, queue)
        }
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 1000) else {
            throw KafkaError(code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue, message: "no answer within \(timeoutMs) ms",
                             operation: "create topics \(topics.map(\.name))")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(code: err.rawValue, message: String(cString: rd_kafka_event_error_string(event)),
                             operation: "create topics \(topics.map(\.name))")
        }
        guard let result = rd_kafka_event_CreateTopics_result(event) else { return }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count) else { return }
        for i in 0..<count {
            let topic = results[i]
            let code = rd_kafka_topic_result_error(topic)
            guard code != RD_KAFKA_RESP_ERR_NO_ERROR && code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS else { continue }
            let message = rd_kafka_topic_result_error_string(topic).map { String(cString: $0) } ?? String(cString: rd_kafka_err2str(code))
            throw KafkaError(code: code.rawValue, message: message, operation: "create topic \(String(cString: rd_kafka_topic_result_name(topic)))")
        }
    }
}
