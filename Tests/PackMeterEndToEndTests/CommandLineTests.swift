import Foundation
import Logging
import Testing
import PackMeterCore
import PackMeterFiles
import PackMeterKafka

/// The commands refuse what would silently go wrong, with exit status 2 and one line, and
/// read every flag from the environment.
@Suite("Command line: safe defaults, refusals, exit status, environment", .serialized)
struct CommandLineTests {
    /// Runs packmeter to the end; its exit status and standard error.
    func packmeter(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 30,
                   in dir: String = temporaryDirectory("cli")) throws -> (status: Int32, log: String) {
        let child = try ChildProcess("cli-\(UUID().uuidString.prefix(6))", arguments: arguments, logDirectory: dir, environment: environment)
        try child.start()
        return (child.wait(timeout: timeout), child.log)
    }

    func write(_ lines: [String], to name: String, in dir: String) throws -> String {
        let path = "\(dir)/\(name)"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func call(_ id: String, ts: String, account: String = "100000000001") -> String {
        "{\"id\":\"\(id)\",\"account\":\"\(account)\",\"action\":\"GeneralBasicOCR\",\"ts\":\"\(ts)\"}"
    }

    @Test func usageAndConfigurationErrors_exit2_withOneLine() throws {
        let dir = temporaryDirectory("exit2")
        let events = try write([call("a", ts: "2026-11-03T10:00:00+08:00")], to: "events.jsonl", in: dir)
        let cases: [([String], String)] = [
            (["rate", "\(dir)/missing.jsonl"], "no such file"),
            (["rate", events, "--overage-out", events], "is the input file"),
            (["rate", events, "--now", "tomorrow"], "--now 'tomorrow'"),
            (["run", "--brokers", ""], "--brokers '' is not a list of HOST:PORT"),
            (["run", "--brokers", "127.0.0.1:9", "--kafka-config", "no.such.property=1"], "--kafka-config"),
            (["run", "--brokers", "127.0.0.1:9", "--kafka-config", "enable.auto.commit=true"], "enable.auto.commit=true is refused"),
            (["run", "--brokers", "127.0.0.1:9", "--kafka-config", "auto.offset.reset=latest"], "auto.offset.reset=latest is refused"),
            (["run", "--brokers", "127.0.0.1:9", "--http", "nonsense"], "--http 'nonsense' is not HOST:PORT"),
            (["help", "nosuch"], "'nosuch' is not a packmeter command"),
            (["mock-broker", "--brokers", "100000"], "--brokers must be from 1 to 32"),
        ]
        for (arguments, message) in cases {
            let (status, log) = try packmeter(arguments, in: dir)
            let lines = log.split(separator: "\n")
            #expect(status == 2, "\(arguments): exit \(status)\n\(log)")
            #expect(lines.count == 1 && lines[0].contains(message), "\(arguments): \(log)")
        }
        #expect(try String(contentsOfFile: events, encoding: .utf8).contains("\"id\":\"a\""), "the input was written over")
    }

    @Test func version_isPrinted_withExit0() throws {
        let child = try ChildProcess("version", arguments: ["--version"], logDirectory: temporaryDirectory("version"))
        let out = Pipe()
        try child.start(stdout: out)
        #expect(child.wait() == 0)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.range(of: #"^\d+\.\d+\.\d+\n$"#, options: .regularExpression) != nil, "\(text)")
    }

    /// One call dated 2199 moved the watermark past every open month, and the valid November
    /// calls after it were all `too_late`.
    @Test func rate_farFutureCall_isRejected_andLaterCallsAreStillBilled() throws {
        let dir = temporaryDirectory("future")
        let events = try write([call("n1", ts: "2026-11-03T10:00:00+08:00"), call("far", ts: "2199-06-01T00:00:00Z"),
                                call("n2", ts: "2026-11-04T10:00:00+08:00")], to: "events.jsonl", in: dir)
        let (status, log) = try packmeter(["rate", events, "--now", "2026-12-05T00:00:00Z", "--dlq-out", "\(dir)/dlq.jsonl",
                                           "--balances-out", "\(dir)/balances.jsonl"], in: dir)
        #expect(status == 0, "\(log)")
        let dlq = try String(contentsOfFile: "\(dir)/dlq.jsonl", encoding: .utf8)
        #expect(dlq.split(separator: "\n").count == 1 && dlq.contains("\"reason\":\"future_timestamp\"") && dlq.contains("--now"), "\(dlq)")
        let balances = try String(contentsOfFile: "\(dir)/balances.jsonl", encoding: .utf8)
        #expect(balances.contains("\"month\":\"2026-11\"") && balances.contains("\"used\":2"), "\(balances)")
    }

    /// With a window of one id, a b c d e a b were all applied and the summary said nothing.
    @Test func rate_summary_showsDedupeEvictions() throws {
        let dir = temporaryDirectory("evictions")
        let events = try write(["a", "b", "c", "d", "e", "a", "b"].enumerated().map { call($0.element, ts: "2026-11-03T10:00:0\($0.offset)+08:00") },
                               to: "events.jsonl", in: dir)
        let (status, log) = try packmeter(["rate", events, "--dedupe-capacity", "1", "--overage-out", "\(dir)/overage.jsonl",
                                           "--now", "2026-12-05T00:00:00Z"], in: dir)
        #expect(status == 0, "\(log)")
        let line = try #require(log.split(separator: "\n").first { $0.contains("dedupe evictions") }, "\(log)")
        #expect(line.contains("of open months"), "\(line)")
        #expect(!line.hasSuffix(" 0"), "\(line)")
    }

    @Test func everyCommand_readsItsFlagsFromTheEnvironment_withoutCollisions() throws {
        let dir = temporaryDirectory("env")
        // generate read no PACKMETER_ variable: PACKMETER_EVENTS=3 wrote 100,000 lines.
        var (status, log) = try packmeter(["generate", "--out", "\(dir)/three.jsonl"], environment: ["PACKMETER_EVENTS": "3"], in: dir)
        #expect(status == 0, "\(log)")
        #expect(try String(contentsOfFile: "\(dir)/three.jsonl", encoding: .utf8).split(separator: "\n").count == 3)
        // rate ignored PACKMETER_QUIET.
        (status, log) = try packmeter(["rate", "\(dir)/three.jsonl", "--overage-out", "\(dir)/o.jsonl"], environment: ["PACKMETER_QUIET": "true"], in: dir)
        #expect(status == 0 && log.isEmpty, "\(log)")
        (status, log) = try packmeter(["rate", "\(dir)/three.jsonl"], environment: ["PACKMETER_QUIET": "maybe"], in: dir)
        #expect(status == 2 && log.contains("PACKMETER_QUIET='maybe'"), "\(log)")
        // PACKMETER_BROKERS set for run broke mock-broker, whose --brokers is a count.
        let broker = try ChildProcess("mock", arguments: ["mock-broker"], logDirectory: dir,
                                      environment: ["PACKMETER_BROKERS": "kafka-1:9092", "PACKMETER_MOCK_BROKERS": "2"])
        let out = Pipe()
        try broker.start(stdout: out)
        let line = String(decoding: out.fileHandleForReading.availableDataLine(), as: UTF8.self)
        #expect(line.split(separator: ",").count == 2, "two brokers from PACKMETER_MOCK_BROKERS: \(line) \(broker.log)")
        broker.signal(SIGTERM)
        #expect(broker.wait() == 0, "\(broker.log)")
    }

    /// `replay` shared run's default directory: pointed at a live worker's checkpoints it
    /// restored them, re-billed nothing, wrote into them and exited 0.
    @Test func replay_hasItsOwnDefaultDirectory_andRefusesOneRunWritesTo() throws {
        let dir = temporaryDirectory("replaydir")
        // A directory a worker has claimed (it does so before it looks for brokers).
        let run = try ChildProcess("run", arguments: ["run", "--brokers", "127.0.0.1:9", "--checkpoint-dir", "\(dir)/live",
                                                      "--startup-timeout", "1s"], logDirectory: dir)
        try run.start()
        _ = run.wait()
        #expect(FileManager.default.fileExists(atPath: "\(dir)/live/.packmeter-writer"))
        let (status, log) = try packmeter(["replay", "--brokers", "127.0.0.1:9", "--checkpoint-dir", "\(dir)/live"], in: dir)
        #expect(status == 2 && log.contains("holds checkpoints of packmeter run"), "\(log)")
        // Without --checkpoint-dir, replay writes to ./replay-checkpoints, not ./checkpoints.
        let child = try ChildProcess("replay-default", arguments: ["replay", "--brokers", "127.0.0.1:9", "--startup-timeout", "1s"],
                                     logDirectory: dir)
        child.process.currentDirectoryURL = URL(fileURLWithPath: dir)
        try child.start()
        _ = child.wait()
        #expect(FileManager.default.fileExists(atPath: "\(dir)/replay-checkpoints/.packmeter-writer"))
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/checkpoints"))
    }

    /// Where the broker cannot map times to offsets (librdkafka's mock answers -1),
    /// `--to 2020-01-01T00:00:00Z` replayed everything without a word.
    @Test func replayByTime_onABrokerWithoutATimeIndex_refusesWithTheReason() throws {
        let dir = temporaryDirectory("replaytime")
        let broker = try MockBroker(topics: e2eTopics + ["rb.overage:8", "rb.dlq:8"], directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 2_000, seed: 5)
        let (status, log) = try packmeter(workerArguments("replay", brokers: broker.bootstrap, checkpoints: "\(dir)/rb",
                                                          extra: ["--output", "rb.overage", "--dlq", "rb.dlq", "--to", "2020-01-01T00:00:00Z"]),
                                          in: dir)
        #expect(status == 2, "\(log)")
        #expect(log.contains("cannot map times to offsets"), "\(log)")
        #expect(try readTopic(brokers: broker.bootstrap, topic: "rb.overage").values.allSatisfy(\.isEmpty), "it billed anyway")
    }
}

extension CommandLineTests {
    /// `balances` exited 1 for every account when the newest checkpoint was damaged, where
    /// restore falls back to the one before.
    @Test func balances_fallsBackFromADamagedNewestCheckpoint_withAWarning() throws {
        let dir = temporaryDirectory("balances")
        let configuration = try e2eConfiguration()
        let processor = configuration.makeProcessor(topic: "ocr.usage", partition: 0)
        let store = CheckpointDirectory(directory: "\(dir)/ckpt", logger: Logger(label: "test"))
        for (offset, line) in [call("c1", ts: "2026-11-03T10:00:00+08:00"), call("c2", ts: "2026-11-03T11:00:00+08:00")].enumerated() {
            Array(line.utf8).withUnsafeBytes { processor.process($0, key: nil, offset: Int64(offset), recordTimestampMs: nil, into: OutputBatch()) }
            try store.write(processor.engine.copy(), header: CheckpointHeader(topic: "ocr.usage", partition: 0, nextOffset: Int64(offset + 1),
                                                                               configuration: configuration, counters: processor.counters,
                                                                               createdMs: 1))
        }
        let newest = try #require(store.files(topic: "ocr.usage", partition: 0).first)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: newest))
        bytes[bytes.count - 30] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: newest))

        let child = try ChildProcess("balances", arguments: ["balances", "--checkpoint-dir", "\(dir)/ckpt", "--account", "100000000001"],
                                     logDirectory: dir)
        let out = Pipe()
        try child.start(stdout: out)
        #expect(child.wait() == 0, "\(child.log)")
        let json = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(json.contains("\"used\":1"), "the previous checkpoint has one call: \(json)")
        #expect(child.log.contains("bad checksum") && child.log.contains("trying the previous checkpoint"), "\(child.log)")
    }
}
