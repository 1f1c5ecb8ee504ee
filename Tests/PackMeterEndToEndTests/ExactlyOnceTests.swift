import Foundation
import Testing
@testable import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import PackMeterWorkload

/// docs/contract.md, guarantees: killed at any instant (SIGKILL) and started again with the same
/// checkpoint directory, the worker ends with the balances and outputs of an uninterrupted
/// run — no call counted twice or lost, no output emitted twice.
@Suite("Exactly once under SIGKILL, and replay", .serialized)
struct ExactlyOnceTests {
    let outputTopics = e2eOutputTopics

    /// Starts the worker, lets it run until `until` says so, then kills it with `signal`.
    func life(_ name: String, broker: MockBroker, dir: String, environment: [String: String] = [:],
              extra: [String] = []) throws -> ChildProcess {
        let worker = try ChildProcess(name, arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt", extra: extra),
                                      logDirectory: dir, environment: environment)
        try worker.start()
        return worker
    }

    /// Waits until the worker is ready: it has been given its partitions, has recovered them,
    /// and its restored positions are the group's committed offsets, so from then on a
    /// committed offset is one of its checkpoints (a previous life's may point past a
    /// checkpoint that was damaged or deleted since).
    func waitUntilAssigned(_ worker: ChildProcess, timeout: Double = 60) -> Bool {
        worker.waitUntilReady(timeout: timeout)
    }

    /// Runs a last worker to the end of the log and stops it cleanly.
    func finish(broker: MockBroker, dir: String, name: String = "final") throws -> ChildProcess {
        let worker = try life(name, broker: broker, dir: dir)
        #expect(waitUntilAssigned(worker), "\(worker.log.suffix(3000))")
        try expectCommittedOffsetsCovered(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage", checkpointDirectory: "\(dir)/ckpt")
        let done = try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage", timeout: 600) { worker.process.isRunning }
        #expect(done, "the last worker did not catch up:\n\(worker.log.suffix(3000))")
        worker.signal(SIGTERM)
        #expect(worker.wait() == 0, "\(worker.log.suffix(3000))")
        return worker
    }

    func verify(broker: MockBroker, dir: String, expected: Expected, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let actual = try actualOutputs(brokers: broker.bootstrap, topics: outputTopics, input: "ocr.usage")
        #expect(actual.duplicates == 0, "\(actual.duplicates) outputs emitted twice", sourceLocation: sourceLocation)
        #expect(actual.total == expected.outputCount, "\(actual.total) outputs for \(expected.outputCount) expected", sourceLocation: sourceLocation)
        expectSameOutputs(actual.outputs, expected, sourceLocation: sourceLocation)
        try expectSameBalances(checkpointDirectory: "\(dir)/ckpt", topic: "ocr.usage", expected: expected, sourceLocation: sourceLocation)
    }

    @Test func chaos_sigkillAtTwentyRandomInstants_outputsExactlyOnce_balancesEqual() throws {
        let seed = ProcessInfo.processInfo.environment["PACKMETER_CHAOS_SEED"].flatMap(UInt64.init) ?? 20_261_126
        print("chaos: seed \(seed) (set PACKMETER_CHAOS_SEED to repeat another run)")
        let dir = temporaryDirectory("chaos")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 200_000, seed: seed, accounts: 5000)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")

        var random = SplitMix(seed: seed)
        var instants: [String] = []
        for kill in 1...20 {
            let worker = try life("life-\(kill)", broker: broker, dir: dir)
            // Every fourth life dies during start-up or recovery; the others at a random
            // instant once they own their partitions: while processing, producing, checkpointing.
            let early = kill % 4 == 0
            if !early { #expect(waitUntilAssigned(worker), "life \(kill):\n\(worker.log.suffix(2000))") }
            let instant = early ? Double(random.next() % 1500) / 1000 : 0.05 + Double(random.next() % 2500) / 1000
            instants.append(String(format: early ? "%.2f s after start" : "%.2f s after assignment", instant))
            Thread.sleep(forTimeInterval: instant)
            worker.signal(SIGKILL)
            let status = worker.wait()
            #expect(status == 137, "life \(kill) ended with \(status):\n\(worker.log.suffix(2000))")
        }
        print("chaos: killed \(instants.joined(separator: "; "))")
        // The lives made progress: outputs were produced and checkpoints written.
        let before = try actualOutputs(brokers: broker.bootstrap, topics: outputTopics, input: "ocr.usage")
        #expect(before.total > expected.outputCount / 4, "only \(before.total) of \(expected.outputCount) outputs before the last life")
        let last = try finish(broker: broker, dir: dir)
        #expect(last.log.contains("restored ocr.usage["))
        try verify(broker: broker, dir: dir, expected: expected)
    }

    @Test func stalledPastTheSessionTimeout_losesItsPartitions_andGetsThemBack_exactlyOnce() throws {
        let dir = temporaryDirectory("stall")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 60_000, seed: 45)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        let worker = try life("stalls", broker: broker, dir: dir)
        #expect(waitUntilAssigned(worker), "\(worker.log.suffix(2000))")
        Thread.sleep(forTimeInterval: 0.3)
        // Frozen (a long GC pause, a stalled VM) past the 6 s session timeout: the group
        // moves on without it; when it wakes, its partitions are lost and come back.
        worker.signal(SIGSTOP)
        Thread.sleep(forTimeInterval: 9)
        worker.signal(SIGCONT)
        let done = try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage", timeout: 300) { worker.process.isRunning }
        #expect(done, "\(worker.log.suffix(3000))")
        worker.signal(SIGTERM)
        #expect(worker.wait() == 0, "\(worker.log.suffix(3000))")
        #expect(worker.log.contains("lost ocr.usage partitions"), "\(worker.log.suffix(3000))")
        try verify(broker: broker, dir: dir, expected: expected)
    }

    @Test func killDuringACheckpointWrite_thenRestart() throws {
        let dir = temporaryDirectory("ckptkill")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 41)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        // Small batches (see `slowFetching`), so that the log takes more than 12 checkpoints.
        let dying = try life("dies-writing", broker: broker, dir: dir, environment: ["PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE": "12"],
                             extra: slowFetching)
        #expect(dying.wait(timeout: 300) == 137, "\(dying.log.suffix(2000))")
        // The torn write is only a temporary file; the real names hold whole checkpoints.
        let temporaries = try FileManager.default.subpathsOfDirectory(atPath: "\(dir)/ckpt").filter { $0.hasSuffix(".tmp") }
        #expect(!temporaries.isEmpty)
        _ = try finish(broker: broker, dir: dir)
        try verify(broker: broker, dir: dir, expected: expected)
    }

    @Test func corruptNewestCheckpoint_thePreviousOneIsUsed() throws {
        let dir = temporaryDirectory("corrupt")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 42)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        let first = try life("first", broker: broker, dir: dir)
        #expect(try waitForProgress(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { first.process.isRunning })
        Thread.sleep(forTimeInterval: 1.5)
        first.signal(SIGKILL)
        _ = first.wait()
        // Damage the newest checkpoint of every partition that has two.
        var damaged = 0
        for p in 0..<8 {
            let files = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/ckpt/ocr.usage/\(p)").filter { $0.hasSuffix(".ckpt") }.sorted(by: >)
            guard files.count >= 2 else { continue }
            let path = "\(dir)/ckpt/ocr.usage/\(p)/\(files[0])"
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[bytes.count - 30] ^= 0xFF
            try bytes.write(to: URL(fileURLWithPath: path))
            damaged += 1
        }
        #expect(damaged > 0)
        let last = try finish(broker: broker, dir: dir)
        #expect(last.log.contains("has a bad checksum: it is torn or corrupt; trying the previous checkpoint"), "\(last.log.suffix(2000))")
        try verify(broker: broker, dir: dir, expected: expected)
    }

    @Test func allCheckpointsDeleted_rebuildsFromTheStart_withoutDuplicateOutputs() throws {
        let dir = temporaryDirectory("deleted")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 43)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        let first = try life("first", broker: broker, dir: dir)
        #expect(try waitForProgress(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { first.process.isRunning })
        Thread.sleep(forTimeInterval: 1.0)
        first.signal(SIGKILL)
        _ = first.wait()
        try FileManager.default.removeItem(atPath: "\(dir)/ckpt")
        let last = try finish(broker: broker, dir: dir)
        #expect(last.log.contains("no checkpoint for ocr.usage["))
        try verify(broker: broker, dir: dir, expected: expected)
    }

    @Test func liveRun_replay_andInterruptedReplay_giveIdenticalOutputs() throws {
        let dir = temporaryDirectory("replay")
        let topics = e2eTopics + ["replay.overage:8", "replay.dlq:8", "replay.notices:8", "resumed.overage:8", "resumed.dlq:8", "resumed.notices:8"]
        let broker = try MockBroker(topics: topics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 44)
        _ = try finish(broker: broker, dir: dir)
        let live = try actualOutputs(brokers: broker.bootstrap, topics: outputTopics, input: "ocr.usage")

        // A replay into other topics, with its own checkpoints: exits 0 on its own.
        let replay = try ChildProcess("replay", arguments: workerArguments("replay", brokers: broker.bootstrap, checkpoints: "\(dir)/replay-ckpt",
                                                                           extra: ["--output", "replay.overage", "--dlq", "replay.dlq",
                                                                                   "--notices", "replay.notices"]),
                                      logDirectory: dir)
        try replay.start()
        #expect(replay.wait(timeout: 300) == 0, "\(replay.log.suffix(2000))")
        #expect(replay.log.contains("packmeter replay: 40,000 records"), "\(replay.log.suffix(2000))")
        let replayed = try actualOutputs(brokers: broker.bootstrap, topics: ["replay.overage", "replay.dlq", "replay.notices"], input: "ocr.usage")
        #expect(replayed.duplicates == 0)
        #expect(replayed.outputs == live.outputs)

        // Interrupted half-way and started again: the same again.
        let arguments = workerArguments("replay", brokers: broker.bootstrap, checkpoints: "\(dir)/resumed-ckpt",
                                        extra: ["--output", "resumed.overage", "--dlq", "resumed.dlq", "--notices", "resumed.notices"])
        let interrupted = try ChildProcess("replay-interrupted", arguments: arguments, logDirectory: dir)
        try interrupted.start()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let files = (try? FileManager.default.subpathsOfDirectory(atPath: "\(dir)/resumed-ckpt")) ?? []
            if files.contains(where: { $0.hasSuffix(".ckpt") }) { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        interrupted.signal(SIGKILL)
        _ = interrupted.wait()
        let resumed = try ChildProcess("replay-resumed", arguments: arguments, logDirectory: dir)
        try resumed.start()
        #expect(resumed.wait(timeout: 300) == 0, "\(resumed.log.suffix(2000))")
        let again = try actualOutputs(brokers: broker.bootstrap, topics: ["resumed.overage", "resumed.dlq", "resumed.notices"], input: "ocr.usage")
        #expect(again.duplicates == 0)
        #expect(again.outputs == live.outputs)

        // The balances command reads a replay's checkpoints.
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        let (partition, engine) = expected.engines.max { $0.value.accountCount < $1.value.accountCount }!
        let account = engine.accountsWithState().first!
        let balances = try ChildProcess("balances", arguments: ["balances", "--checkpoint-dir", "\(dir)/replay-ckpt", "--account", engine.name(of: account)],
                                        logDirectory: dir)
        let pipe = Pipe()
        try balances.start(stdout: pipe)
        #expect(balances.wait() == 0, "\(balances.log)")
        let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(printed == engine.balances(of: account).json(calendar: engine.calendar) + "\n", "partition \(partition)")
    }
}
