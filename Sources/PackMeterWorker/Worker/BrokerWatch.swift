import Dispatch
import Logging
import PackMeterKafka
import Synchronization

/// Asks the brokers for the input topic's metadata every few seconds, off the worker
/// thread, so that `/readyz` and `packmeter_brokers_reachable` say whether they answer.
final class BrokerWatch: Sendable {
    static let intervalSeconds = 2.0

    private let producer: KafkaProducer
    private let topic: String
    private let reachable = Atomic<Bool>(true)
    private let stopped = Atomic<Bool>(false)
    private let queue = DispatchQueue(label: "packmeter.broker-watch")
    private let logger: Logger

    init(producer: KafkaProducer, topic: String, logger: Logger) {
        self.producer = producer
        self.topic = topic
        self.logger = logger
        scheduleLook()
    }

    var isReachable: Bool { reachable.load(ordering: .relaxed) }

    /// Stops looking; the producer is let go after the look in progress.
    func stop() { stopped.store(true, ordering: .relaxed) }

    private func scheduleLook() {
        queue.asyncAfter(deadline: .now() + Self.intervalSeconds) { [self] in
            guard !stopped.load(ordering: .relaxed) else { return }
            look()
            scheduleLook()
        }
    }

    private func look() {
        let answered: Bool
        do {
            answered = try producer.partitionCount(topic, timeoutMs: Int32(Self.intervalSeconds * 1000)) != nil
        } catch {
            answered = false
        }
        if answered != reachable.exchange(answered, ordering: .relaxed) {
            if answered {
                logger.info("the brokers answer again")
            } else {
                logger.warning("the brokers do not answer (no metadata for '\(topic)')")
            }
        }
    }
}
