import Dispatch
import Logging
import PackMeterKafka
import Synchronization

/// Reads the group's committed offsets back on a queue of its own: the coordinator can
/// take seconds to answer during a rebalance, and billing must not wait for it. It asks
/// through the worker's own consumer (`KafkaConsumer.committed` may be called from any
/// thread); a second handle in the group disturbs rebalances on some brokers.
final class CommitAuditor: Sendable {
    /// What one look found: the partitions whose committed offset is the one expected, and
    /// those whose is not.
    struct Finding: Sendable {
        var matching: [Int32: Int64] = [:]
        var differing: Set<Int32> = []
    }

    private let topic: String
    private let consumer: KafkaConsumer
    private let queue = DispatchQueue(label: "packmeter.commit-audit")
    private let logger: Logger
    private let busy = Atomic<Bool>(false)
    private let found = Mutex<Finding?>(nil)

    init(consumer: KafkaConsumer, topic: String, logger: Logger) {
        self.consumer = consumer
        self.topic = topic
        self.logger = logger
    }

    /// Whether a look is under way.
    var isBusy: Bool { busy.load(ordering: .relaxed) }

    /// Starts a look at the committed offsets of `expected`'s partitions (unless one is
    /// under way); `take()` has the finding once it is done.
    func check(_ expected: [Int32: Int64]) {
        guard !expected.isEmpty, !busy.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async { [self] in
            defer { busy.store(false, ordering: .releasing) }
            do {
                let committed = try consumer.committed(expected.keys.map { TopicPartition(topic, $0) }, timeoutMs: 10_000)
                var finding = Finding()
                for (p, offset) in expected {
                    if committed[TopicPartition(topic, p)] == offset { finding.matching[p] = offset } else { finding.differing.insert(p) }
                }
                found.withLock { $0 = finding }
            } catch {
                logger.warning("could not read the group's committed offsets: \(error)")
            }
        }
    }

    /// The finding of the last look, once.
    func take() -> Finding? {
        found.withLock { finding in
            defer { finding = nil }
            return finding
        }
    }

    /// Waits for a look under way to end (before the consumer closes).
    func close() {
        queue.sync {}
    }
}
