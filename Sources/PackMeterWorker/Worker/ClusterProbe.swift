import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// Waits at start for the brokers to answer and the worker's three topics to exist, with
/// backoff, so that a worker started before its cluster does not fail at once.
struct ClusterProbe {
    let options: WorkerOptions
    let logger: Logger
    /// Whether SIGTERM or SIGINT asked the worker to stop meanwhile.
    let stopRequested: () -> Bool
    /// Called while waiting, so that the worker does not look stuck.
    let heartbeat: () -> Void

    /// The input topic's partition count, once the brokers and every topic are there; nil
    /// when asked to stop first; throws after `--startup-timeout`.
    func waitForTopics() throws -> Int? {
        let deadline = monotonicSeconds() + Double(options.startupTimeoutMs) / 1000
        var delay = 0.5
        var probe: KafkaConsumer?
        while true {
            if stopRequested() { return nil }
            let problem: String
            switch look(&probe) {
            case let .success(partitions): return partitions
            case let .failure(why): problem = why.message
            }
            guard monotonicSeconds() + delay < deadline else {
                throw WorkerError("gave up after \(DurationText.format(milliseconds: options.startupTimeoutMs)): \(problem)")
            }
            logger.warning("waiting for the cluster: \(problem); retrying in \(String(format: "%.1f", delay)) s")
            let retryAt = monotonicSeconds() + delay
            while monotonicSeconds() < retryAt {
                if stopRequested() { return nil }
                heartbeat()
                Thread.sleep(forTimeInterval: 0.1)
            }
            delay = min(delay * 2, 10)
        }
    }

    /// One look at the cluster: the input topic's partition count, or what is wrong.
    private func look(_ probe: inout KafkaConsumer?) -> Result<Int, WorkerError> {
        let topics = [options.inputTopic, options.outputTopic, options.dlqTopic] + (options.noticesTopic.map { [$0] } ?? [])
        do {
            if probe == nil {
                probe = try KafkaConsumer(bootstrapServers: options.brokers, groupID: nil,
                                          configuration: KafkaConfiguration([("log_level", "3")]), logger: logger)
            }
            let consumer = probe!
            var counts: [String: Int] = [:]
            for topic in topics where !stopRequested() {
                heartbeat()
                if let count = try consumer.partitionCount(topic, timeoutMs: 2000) { counts[topic] = count }
            }
            if let inputCount = counts[options.inputTopic], counts.count == topics.count { return .success(inputCount) }
            let missing = topics.filter { counts[$0] == nil }
            let names = missing.map { "'\($0)'" }.joined(separator: ", ")
            return .failure(WorkerError("topic\(missing.count > 1 ? "s" : "") \(names) \(missing.count > 1 ? "do" : "does") not exist on \(options.brokers)"))
        } catch {
            return .failure(WorkerError("cannot reach the brokers at \(options.brokers): \(error.message) (\(error.name))"))
        }
    }
}
