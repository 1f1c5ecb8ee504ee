import Foundation
import Testing
@testable import PackMeterCore
import PackMeterKafka
import PackMeterFiles

/// `packmeter run` against `packmeter mock-broker`, both as separate processes, checked
/// partition by partition against billing each partition alone (what `rate` does).
@Suite("The streaming worker, end to end", .serialized)
struct StreamingWorkerTests {
    /// Produces 30,000 events, runs one worker (with `extra` arguments) until the group has
    /// committed them all, stops it with SIGTERM, and checks its outputs and balances
    /// against billing each partition alone. Returns the worker's log.
    /// Returns the worker's log and its metrics just before it was stopped.
    func billOnce(_ name: String, seed: UInt64, extra: [String] = []) throws -> (log: String, metrics: (String) -> Double?) {
        let dir = temporaryDirectory(name)
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 30_000, seed: seed)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        #expect(expected.outputCount > 1000)

        let arguments = workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt", extra: extra)
        let worker = try ChildProcess("run", arguments: arguments, logDirectory: dir)
        try worker.start()
        let done = try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { worker.process.isRunning }
        #expect(done, "the worker did not catch up:\n\(worker.log.suffix(3000))")
        var metrics: [String: Double] = [:]
        for name in ["packmeter_fetch_wakeups_total", "packmeter_producer_queue_full_total"] { metrics[name] = worker.metric(name) }
        worker.signal(SIGTERM)
        #expect(worker.wait() == 0, "\(worker.log.suffix(3000))")

        let actual = try actualOutputs(brokers: broker.bootstrap, topics: e2eOutputTopics, input: "ocr.usage")
        #expect(actual.duplicates == 0)
        expectSameOutputs(actual.outputs, expected)
        try expectSameBalances(checkpointDirectory: "\(dir)/ckpt", topic: "ocr.usage", expected: expected)
        return (worker.log, { metrics[$0] })
    }

    @Test func workerOutputsAndBalances_matchBillingEachPartitionAlone() throws {
        _ = try billOnce("worker", seed: 1)
    }

    /// librdkafka 2.0 stops fetching while the consumer queue is full and may not look again
    /// for a second; the worker wakes its fetchers by seeking to where billing stands. With
    /// a queue of a few hundred records that happens all the time: the outputs must still be
    /// exactly those of billing each partition alone.
    @Test func fullConsumerQueue_wokenFetchers_skipAndRepeatNothing() throws {
        let run = try billOnce("parked", seed: 7, extra: ["--kafka-config", "queued.min.messages=300"])
        let wakeups = run.metrics("packmeter_fetch_wakeups_total") ?? 0
        #expect(wakeups > 0, "the queue never filled up:\n\(run.log.suffix(3000))")
    }

    /// Billing threads produce without serving delivery reports; when the producer's queue
    /// is full they leave the rest of their outputs to the worker thread, which serves the
    /// reports as it produces them. With a queue of 64 messages that happens all the time:
    /// the outputs must still be exactly those of billing each partition alone, in order.
    @Test func fullProducerQueue_outputsLeftToTheWorkerThread_areProducedOnceInOrder() throws {
        let run = try billOnce("queuefull", seed: 9, extra: ["--kafka-config", "queue.buffering.max.messages=64"])
        let full = run.metrics("packmeter_producer_queue_full_total") ?? 0
        #expect(full > 0, "the producer's queue never filled up:\n\(run.log.suffix(3000))")
    }

    @Test func sigtermHalfway_thenStartAgain_givesTheOutputsOfOneRun() throws {
        let dir = temporaryDirectory("sigterm")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 2)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")

        // A short consumer queue keeps the worker's batches small, so that it is stopped
        // with part of the log billed however fast it bills.
        let first = try ChildProcess("run-1", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt", extra: slowFetching),
                                     logDirectory: dir)
        try first.start()
        // Stop it once it has billed part of the log.
        #expect(try waitForProgress(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { first.process.isRunning })
        first.signal(SIGTERM)
        #expect(first.wait() == 0, "\(first.log.suffix(3000))")
        let halfway = try actualOutputs(brokers: broker.bootstrap, topics: e2eOutputTopics, input: "ocr.usage")
        #expect(halfway.total > 0 && halfway.total < expected.outputCount, "stopped at \(halfway.total) of \(expected.outputCount) outputs")

        let second = try ChildProcess("run-2", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"), logDirectory: dir)
        try second.start()
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { second.process.isRunning })
        second.signal(SIGTERM)
        #expect(second.wait() == 0, "\(second.log.suffix(3000))")
        #expect(second.log.contains("restored ocr.usage["))

        let actual = try actualOutputs(brokers: broker.bootstrap, topics: e2eOutputTopics, input: "ocr.usage")
        #expect(actual.duplicates == 0)
        expectSameOutputs(actual.outputs, expected)
        try expectSameBalances(checkpointDirectory: "\(dir)/ckpt", topic: "ocr.usage", expected: expected)
    }

    @Test func partitionRevokedAndReassigned_keepsItsBalances() throws {
        let dir = temporaryDirectory("rebalance")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 30_000, seed: 3)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")

        let a = try ChildProcess("run-a", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"), logDirectory: dir)
        try a.start()
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { a.process.isRunning })
        // A second member joins: some partitions move to it, with their balances.
        let b = try ChildProcess("run-b", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"), logDirectory: dir)
        try b.start()
        #expect(b.waitUntilReady(), "\(b.log.suffix(2000))")
        // Each publishes its status a few times a second.
        var owned = (a: 8.0, b: 0.0)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !(owned.a < 8 && owned.a + owned.b == 8) {
            owned = (a.metric("packmeter_assigned_partitions") ?? 8, b.metric("packmeter_assigned_partitions") ?? 0)
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(owned.a < 8 && owned.b > 0 && owned.a + owned.b == 8, "\(owned)\n\(a.log.suffix(2000))")
        #expect(b.log.contains("restored ocr.usage["), "\(b.log.suffix(2000))")
        // More records after the move, billed by the new owners on top of the moved balances.
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 10_000, seed: 33, startMs: 1_793_894_400_000)
        let all = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        #expect(all.outputCount > expected.outputCount)
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { a.process.isRunning && b.process.isRunning })
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(a.wait() == 0, "\(a.log.suffix(2000))")
        #expect(b.wait() == 0, "\(b.log.suffix(2000))")

        let actual = try actualOutputs(brokers: broker.bootstrap, topics: e2eOutputTopics, input: "ocr.usage")
        #expect(actual.duplicates == 0)
        expectSameOutputs(actual.outputs, all)
        try expectSameBalances(checkpointDirectory: "\(dir)/ckpt", topic: "ocr.usage", expected: all)
    }

    @Test func checkpointThatIsNotOne_isReportedByName_andTheWorkerExits1() throws {
        let dir = temporaryDirectory("badckpt")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 200, seed: 4)
        let path = "\(dir)/ckpt/ocr.usage/0/00000000000000000007.ckpt"
        try FileManager.default.createDirectory(atPath: "\(dir)/ckpt/ocr.usage/0", withIntermediateDirectories: true)
        try Data("not a checkpoint at all".utf8).write(to: URL(fileURLWithPath: path))
        let worker = try ChildProcess("run", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"), logDirectory: dir)
        try worker.start()
        #expect(worker.wait(timeout: 60) == 1)
        #expect(worker.log.contains("checkpoint \(path) is not a packmeter checkpoint"), "\(worker.log.suffix(2000))")
    }

    @Test func missingTopic_isLoggedAndRetried_thenAReasonedExit() throws {
        let dir = temporaryDirectory("notopic")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        let worker = try ChildProcess("run", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt",
                                                                         extra: ["--input", "no.such.topic", "--startup-timeout", "3s"]),
                                      logDirectory: dir)
        try worker.start()
        #expect(worker.wait(timeout: 60) == 1)
        #expect(worker.log.contains("waiting for the cluster: topic 'no.such.topic' does not exist"), "\(worker.log.suffix(2000))")
        #expect(worker.log.contains("packmeter: gave up after 3s: topic 'no.such.topic' does not exist"), "\(worker.log.suffix(2000))")
    }

    @Test func unreachableBrokers_exitWithAReason() throws {
        let dir = temporaryDirectory("nobroker")
        let worker = try ChildProcess("run", arguments: ["run", "--brokers", "127.0.0.1:9", "--checkpoint-dir", "\(dir)/ckpt",
                                                         "--startup-timeout", "3s"], logDirectory: dir)
        try worker.start()
        #expect(worker.wait(timeout: 60) == 1)
        #expect(worker.log.contains("cannot reach the brokers at 127.0.0.1:9"), "\(worker.log.suffix(2000))")
    }

    @Test func badUsage_exits2_withOneLine() throws {
        let dir = temporaryDirectory("usage")
        for (arguments, message) in [(["run"], "Missing expected argument '--brokers"),
                                     (["run", "--brokers", "x:1", "--checkpoint-interval", "soon"], "--checkpoint-interval 'soon' is not a positive duration"),
                                     (["rate", "--catalog", "/nonexistent.json"], "cannot read catalog file '/nonexistent.json'"),
                                     (["rate", "--time-zone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'")] {
            let child = try ChildProcess("usage", arguments: arguments, logDirectory: dir)
            try child.start()
            #expect(child.wait(timeout: 30) == 2, "\(arguments)")
            let lines = child.log.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains(message), "\(arguments): \(child.log)")
        }
    }
}
