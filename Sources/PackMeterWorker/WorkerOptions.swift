import PackMeterCore

/// How a worker runs: the docs/contract.md flags of `run` and `replay`.
public struct WorkerOptions: Sendable {
    public enum Mode: Sendable, Equatable {
        /// A consumer group member on the input topic, until stopped.
        case live
        /// Every partition of the input topic from `from` to `to`, then exit.
        case replay(from: Position, to: Position)
    }

    public enum Position: Sendable, Equatable {
        case earliest
        case end
        /// Epoch milliseconds, mapped to offsets with the broker's timestamp index.
        case time(Int64)
    }

    public var brokers: String
    public var inputTopic = "ocr.usage"
    public var outputTopic = "ocr.overage"
    public var dlqTopic = "ocr.usage.dlq"
    /// Where notices go; nil: no notices (the engine configuration then has none either).
    public var noticesTopic: String? = "ocr.notices"
    public var group = "packmeter"
    public var checkpointDirectory = "./checkpoints"
    /// Keep checkpoints in this compacted Kafka topic instead of `checkpointDirectory`.
    public var checkpointTopic: String?
    /// Static group membership (`group.instance.id`): a worker restarted with the same id
    /// within the session timeout gets its partitions back without a rebalance.
    public var instanceID: String?
    /// The URL other workers of the group reach this one's HTTP endpoint at.
    public var httpAdvertise: String?
    /// Where the workers of the group announce their partitions and URLs (with
    /// `httpAdvertise`); nil: `{group}.members`.
    public var membersTopic: String?
    public var checkpointIntervalMs: Int64 = 5000
    public var keepCheckpoints = 3
    public var engine: EngineConfiguration
    public var httpAddress: String?
    public var statusIntervalMs: Int64 = 10_000
    /// How long to wait for the brokers and topics at start before giving up.
    public var startupTimeoutMs: Int64 = 60_000
    public var mode: Mode = .live
    /// Records polled at once. A batch spans several partitions' fetched message sets, so
    /// that its partitions keep every core busy while they are billed.
    public var pollBatchMax = 32768
    /// Replay: draw a progress line (records/s, ETA) on standard error.
    public var progress = true
    /// Extra librdkafka properties for the consumer and producer (`--kafka-config`).
    public var kafkaProperties: [(String, String)] = []

    public init(brokers: String, engine: EngineConfiguration) {
        self.brokers = brokers
        self.engine = engine
    }
}

extension WorkerOptions {
    /// Why a librdkafka property given with `--kafka-config` would break the worker's design
    /// (offsets committed only after their checkpoint is durable, outputs written once and
    /// in order), or nil when it may be set.
    public static func refusedProperty(_ name: String, value: String) -> String? {
        switch name {
        case "enable.auto.commit", "auto.commit.enable":
            "offsets are committed only once the checkpoint covering them is durable"
        case "enable.auto.offset.store":
            "the worker stores no offsets of its own; checkpoints carry them"
        case "auto.offset.reset" where value != "earliest" && value != "smallest" && value != "beginning":
            "a partition whose records were deleted must resume at the oldest record left, not skip ahead"
        case "group.id":
            "use --group"
        case "group.instance.id":
            "use --instance-id"
        case "bootstrap.servers", "metadata.broker.list":
            "use --brokers"
        case "enable.idempotence" where value != "true":
            "outputs must be written once and in order (exactly once rests on it)"
        case "acks" where value != "all" && value != "-1", "request.required.acks" where value != "all" && value != "-1":
            "an output counts as written only once every in-sync replica has it"
        case "transactional.id":
            "packmeter does not use Kafka transactions"
        default:
            nil
        }
    }

    /// librdkafka properties that only a consumer takes (the producer would warn about them).
    static func isConsumerProperty(_ name: String) -> Bool {
        ["group.", "session.timeout", "heartbeat.", "max.poll.", "partition.assignment", "auto.", "enable.auto",
         "fetch.", "queued.", "isolation.", "check.crcs", "enable.partition.eof", "coordinator.", "max.partition.fetch"]
            .contains { name.hasPrefix($0) }
    }
}
