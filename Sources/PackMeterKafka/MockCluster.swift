import CRdKafka
import Logging

/// librdkafka's in-memory Kafka cluster (`rdkafka_mock.h`), listening on loopback: brokers,
/// topics, consumer groups with offset commits, the idempotent producer. It is the broker
/// of the tests, the demo and `packmeter mock-broker`.
///
/// Limits of librdkafka 2.0.2's mock: each partition keeps only its newest 5 MiB or
/// 100,000 batches (older records vanish as if by retention), and transactions are not real.
// Sound as `@unchecked Sendable`: its handles are immutable pointers to librdkafka
// objects that are thread-safe, and the mock cluster runs on librdkafka's own thread.
public final class MockCluster: @unchecked Sendable {
    private let host: OpaquePointer
    private let cluster: OpaquePointer
    private let context: HandleContext
    public let bootstrapServers: String

    public init(brokers: Int, logger: Logger) throws(KafkaError) {
        let conf = try KafkaConfiguration([("log_level", "4")]).make()
        context = HandleContext(logger: logger)
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
        LogSink.install(on: conf)
        var errorText = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(code: RD_KAFKA_RESP_ERR__FAIL.rawValue, message: "cannot create the mock cluster's host handle", operation: "start mock cluster")
        }
        guard let mock = rd_kafka_mock_cluster_new(rk, Int32(brokers)) else {
            rd_kafka_destroy(rk)
            throw KafkaError(code: RD_KAFKA_RESP_ERR__FAIL.rawValue, message: "rd_kafka_mock_cluster_new failed", operation: "start mock cluster")
        }
        host = rk
        cluster = mock
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(mock))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(host)
    }

    public func createTopic(_ name: String, partitions: Int) throws(KafkaError) {
        let err = rd_kafka_mock_topic_create(cluster, name, Int32(partitions), 1)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, operation: "create topic \(name)") }
    }
}
