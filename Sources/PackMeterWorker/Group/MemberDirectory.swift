import Foundation
import Logging
import PackMeterCore
import PackMeterFiles
import PackMeterKafka
import Synchronization

/// Where the workers of a group tell each other which input partitions each owns and at
/// which URL its HTTP endpoint answers (`--http-advertise`), so that any of them can answer
/// for any account. One record per worker, keyed `{group}/{url}`, in partition 0 of a
/// compacted topic (`--members-topic`); every worker reads that partition from its start
/// and keeps the newest record of each key.
///
/// A worker announces itself when its partitions change and every `heartbeatSeconds`;
/// one not heard from for `staleAfterMs` is taken for gone. On a clean stop it announces
/// that it owns nothing.
final class MemberDirectory: Sendable {
    struct Member: Sendable, Equatable {
        var url: String
        var partitions: [Int32]
        /// When it said so (its wall clock, epoch ms).
        var atMs: Int64
    }

    static let heartbeatSeconds = 2.0
    static let staleAfterMs: Int64 = 10_000

    let topic: String
    let group: String
    /// This worker's advertised URL.
    let url: String
    private let logger: Logger
    private let producer: KafkaProducer
    private let producerTopic: ProducerTopic
    private let reader: KafkaConsumer
    private let members = Mutex<[String: Member]>([:])
    /// The partitions to announce; nil once announced.
    private let pending = Mutex<[Int32]?>(nil)
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    init(brokers: String, topic: String, group: String, url: String, kafkaProperties: [(String, String)], logger: Logger) throws {
        self.topic = topic
        self.group = group
        self.url = url
        self.logger = logger
        producer = try KafkaProducer(bootstrapServers: brokers, configuration: KafkaConfiguration(
            kafkaProperties.filter { !WorkerOptions.isConsumerProperty($0.0) } + [("linger.ms", "0")]), logger: logger)
        do {
            try producer.createTopics([TopicSpec(topic, partitions: 1, configuration: [("cleanup.policy", "compact")])], timeoutMs: 10_000)
        } catch {
            // Brokers without CreateTopics (librdkafka's mock) create it on first use.
            logger.debug("could not create the members topic '\(topic)': \(error.message)")
        }
        producerTopic = try producer.topic(topic)
        var settings = KafkaConfiguration(kafkaProperties.filter { !$0.0.hasPrefix("group.") })
        settings.set("fetch.wait.max.ms", "200")
        reader = try KafkaConsumer(bootstrapServers: brokers, groupID: nil, configuration: settings, logger: logger)
        try reader.assign([(TopicPartition(topic, 0), KafkaOffset.beginning)])
    }

    /// Starts reading the directory and announcing this worker, on a thread of its own.
    func start() {
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "packmeter-members"
        thread.start()
    }

    /// Says which partitions this worker owns now (any thread).
    func announce(_ partitions: [Int32]) {
        pending.withLock { $0 = partitions.sorted() }
    }

    /// Announces that this worker owns nothing and stops.
    func stop() {
        announce([])
        stopped.store(true, ordering: .relaxed)
        finished.wait()
    }

    /// The other workers of the group heard from lately, with the partitions they own.
    func peers(nowMs: Int64) -> [Member] {
        members.withLock { all in
            all.values.filter { $0.url != url && nowMs - $0.atMs < Self.staleAfterMs }.sorted { $0.url < $1.url }
        }
    }

    private func run() {
        let batch = MessageBatch(capacity: 256)
        defer { batch.release() }
        var lastAnnounced = -Double.infinity
        var announced: [Int32] = []
        while true {
            let stopping = stopped.load(ordering: .relaxed)
            let now = monotonicSeconds()
            let next = pending.withLock { value -> [Int32]? in defer { value = nil }; return value }
            if next != nil || now - lastAnnounced >= Self.heartbeatSeconds {
                announced = next ?? announced
                publish(announced)
                lastAnnounced = now
            }
            producer.poll(timeoutMs: 0)
            if stopping { break }
            do {
                let n = try reader.poll(into: batch, timeoutMs: 200)
                for i in 0..<n { take(batch[i]) }
            } catch {
                logger.warning("reading the members topic '\(topic)': \(error)")
                Thread.sleep(forTimeInterval: 1)
            }
        }
        try? producer.flush(timeoutMs: 5000)
        reader.close()
    }

    private func publish(_ partitions: [Int32]) {
        let value = "{\"url\":\(jsonString(url)),\"partitions\":[\(partitions.map(String.init).joined(separator: ","))],\"at\":\(wallClockMs())}"
        let key = "\(group)/\(url)"
        do {
            try Array(key.utf8).withUnsafeBytes { keyBytes in
                try Array(value.utf8).withUnsafeBytes { valueBytes in
                    try producer.produce(producerTopic, key: keyBytes, value: valueBytes, partition: 0)
                }
            }
        } catch {
            logger.warning("could not announce this worker on '\(topic)': \(error)")
        }
    }

    private func take(_ message: MessageBatch.Message) {
        guard message.error == nil, let key = message.key.map({ String(decoding: $0, as: UTF8.self) }),
              key.hasPrefix(group + "/") else { return }
        let memberURL = String(key.dropFirst(group.count + 1))
        guard message.value.baseAddress != nil, let value = try? JSONValue.parse(String(decoding: message.value, as: UTF8.self)),
              let at = value["at"]?.intValue, let partitions = value["partitions"]?.arrayValue?.compactMap(\.intValue)
        else {
            members.withLock { _ = $0.removeValue(forKey: memberURL) }
            return
        }
        members.withLock { $0[memberURL] = Member(url: memberURL, partitions: partitions.map { Int32($0) }, atMs: at) }
    }
}
