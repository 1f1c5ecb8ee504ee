import Foundation
import Logging
import Testing
@testable import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import PackMeterWorkload
import PackMeterWorker
import HTTPTestClient

/// The `packmeter` executable built beside this test bundle.
let packmeterBinary: String = {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    if directory.lastPathComponent.hasSuffix(".xctest") { directory = directory.deletingLastPathComponent() }
    for candidate in [directory.appendingPathComponent("packmeter").path,
                      directory.deletingLastPathComponent().appendingPathComponent("packmeter").path] {
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    fatalError("packmeter executable not found near \(CommandLine.arguments[0]); run `swift build --build-tests` first")
}()

/// The checkout the tests run from: the directory above the build holding `Package.swift`.
let repositoryRoot: String = {
    var directory = URL(fileURLWithPath: packmeterBinary).deletingLastPathComponent()
    while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
        directory = directory.deletingLastPathComponent()
    }
    return directory.path
}()

let testLogger: Logger = {
    var logger = Logger(label: "e2e")
    logger.logLevel = .error
    return logger
}()

func temporaryDirectory(_ name: String) -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-\(name)-\(UUID().uuidString.prefix(8))").path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A child process with its standard error going to a log file.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String
    let name: String

    init(_ name: String, arguments: [String], logDirectory: String, environment: [String: String] = [:]) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: packmeterBinary)
        process.arguments = arguments
        logPath = "\(logDirectory)/\(name).log"
        // A file that could not be created makes the FileHandle below throw, naming it.
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
    }

    func start(stdout: Pipe? = nil) throws {
        if let stdout { process.standardOutput = stdout } else { process.standardOutput = FileHandle.nullDevice }
        try process.run()
    }

    func signal(_ signal: Int32) { if process.isRunning { kill(process.processIdentifier, signal) } }

    /// Waits for the exit; returns its status (128 + signal for a signal).
    func wait(timeout: Double = 120) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return -1
        }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The `--http` address the child was started with.
    var httpAddress: String? {
        guard let arguments = process.arguments, let i = arguments.firstIndex(of: "--http"), i + 1 < arguments.count else { return nil }
        return arguments[i + 1]
    }

    /// `GET path` on the child's HTTP endpoint: status and body, or nil when it does not answer.
    func get(_ path: String) -> (status: Int, body: String)? {
        guard let address = httpAddress else { return nil }
        return httpGet(address: address, path: path)
    }

    /// A counter or gauge of the child's `/metrics` (the sum over its label sets).
    func metric(_ name: String) -> Double? {
        guard let (status, body) = get("/metrics"), status == 200 else { return nil }
        let samples = body.split(separator: "\n").filter { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
        guard !samples.isEmpty else { return nil }
        return samples.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }

    /// Waits until `/readyz` answers 200: the worker owns its partitions, restored, and
    /// their restored positions are the group's committed offsets.
    func waitUntilReady(timeout: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if get("/readyz")?.status == 200 { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }
}



/// A broker the tests run against: librdkafka's mock cluster, or noida-db.
protocol TestBroker: AnyObject, Sendable {
    var bootstrap: String { get }
    /// What the broker implements of Kafka that the mock does not.
    var kind: TestBrokerKind { get }
    func stop()
}

enum TestBrokerKind: String, Sendable, CustomStringConvertible {
    /// librdkafka's mock cluster: no compaction, no offsets by time, no static membership.
    case mock
    /// noida-db: compaction, offsets by time, CreateTopics.
    case noida

    var description: String { rawValue }

    /// Starts a broker of this kind with `topics` (`NAME:PARTITIONS`).
    func start(topics: [String], directory: String) throws -> any TestBroker {
        switch self {
        case .mock: try MockBroker(topics: topics, directory: directory)
        case .noida: try NoidaBroker(topics: topics, directory: directory)
        }
    }
}

/// `packmeter mock-broker` as a separate process, as the tests' broker.
final class MockBroker: TestBroker, @unchecked Sendable {
    let child: ChildProcess
    let bootstrap: String
    var kind: TestBrokerKind { .mock }

    init(topics: [String], directory: String) throws {
        child = try ChildProcess("mock-broker", arguments: ["mock-broker"] + topics.flatMap { ["--topic", $0] }, logDirectory: directory)
        let pipe = Pipe()
        try child.start(stdout: pipe)
        bootstrap = String(decoding: pipe.fileHandleForReading.availableDataLine(), as: UTF8.self)
        precondition(!bootstrap.isEmpty, "mock-broker printed no address: \(child.log)")
    }

    func stop() {
        child.signal(SIGTERM)
        _ = child.wait(timeout: 10)
    }
}

/// noida-db's Kafka broker (PyPI, installed by `ops/install-test-broker`, which `ops/test`
/// runs) as a separate process on a free port with a fresh data directory.
final class NoidaBroker: TestBroker, @unchecked Sendable {
    let process = Process()
    let bootstrap: String
    var kind: TestBrokerKind { .noida }

    /// The server binary: `PACKMETER_NOIDA_DB`, or where `ops/install-test-broker` puts it.
    static var binary: String? {
        if let path = ProcessInfo.processInfo.environment["PACKMETER_NOIDA_DB"], !path.isEmpty { return path }
        let lib = "\(repositoryRoot)/.build/noida-db/lib"
        let python = ((try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []).first { $0.hasPrefix("python3") }
        let path = python.map { "\(lib)/\($0)/site-packages/noida_db/noida-db" }
        return path.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    }

    init(topics: [String], directory: String) throws {
        guard let binary = Self.binary else {
            throw TestFailure("noida-db is not installed: run ops/install-test-broker (ops/test does)")
        }
        let port = freePort()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["start", "--only", "kafka", "--kafka-port", String(port), "--data-dir", "\(directory)/noida-data"]
        let log = "\(directory)/noida.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardError = process.standardOutput
        try process.run()
        bootstrap = "127.0.0.1:\(port)"
        let deadline = Date().addingTimeInterval(30)
        while true {
            if let fd = connectLoopback(bootstrap) {
                close(fd)
                break
            }
            guard Date() < deadline, process.isRunning else {
                throw TestFailure("noida-db did not listen on \(bootstrap): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let producer = try KafkaProducer(bootstrapServers: bootstrap, logger: testLogger)
        let specs = topics.map { spec in
            let parts = spec.split(separator: ":")
            return TopicSpec(String(parts[0]), partitions: Int(parts[1])!)
        }
        try producer.createTopics(specs, timeoutMs: 10_000)
        for spec in specs {
            while try producer.partitionCount(spec.name, timeoutMs: 5000) != spec.partitions {
                guard Date() < deadline else { throw TestFailure("noida-db did not create \(spec.name)") }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// A failure of the tests' own machinery, with what went wrong.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A record read back from a topic.
struct ReadRecord: Sendable {
    var partition: Int32
    var offset: Int64
    var key: [UInt8]?
    var value: [UInt8]
    var timestampMs: Int64?
}

/// Produces generated usage events (key = account) and returns how many.
func produceWorkload(brokers: String, topic: String, events: Int, seed: UInt64, accounts: Int = 2000,
                     startMs: Int64 = 1_793_721_600_000 /* 2026-10-31T16:00:00+08:00 */, spanMs: Int64 = 2 * 86_400_000) throws {
    var options = WorkloadGenerator.Options()
    options.accounts = accounts
    options.seed = seed
    options.startMs = startMs
    options.millisecondsPerEvent = Double(spanMs) / Double(events)
    options.accountEventsPerMille = 4
    options.duplicatesPerMille = 10
    options.brokenPerMille = 3
    options.latePerMille = 5
    let catalog = try Catalog.builtin()
    let calendar = try BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
    var generator = WorkloadGenerator(options: options, catalog: catalog, calendar: calendar)
    let producer = try KafkaProducer(bootstrapServers: brokers, logger: testLogger)
    try producer.produce(events, from: &generator, to: try producer.topic(topic))
    try producer.flush(timeoutMs: 60_000)
}

/// Every record of every partition of `topic`, from the start to the current end.
func readTopic(brokers: String, topic: String) throws -> [Int32: [ReadRecord]] {
    let consumer = try KafkaConsumer(bootstrapServers: brokers, groupID: nil, logger: testLogger)
    guard let count = try consumer.partitionCount(topic, timeoutMs: 10_000) else { return [:] }
    var ends: [Int32: Int64] = [:]
    var assignment: [(TopicPartition, Int64)] = []
    for p in 0..<Int32(count) {
        let (low, high) = try consumer.watermarks(TopicPartition(topic, p), timeoutMs: 10_000)
        if high > low {
            ends[p] = high
            assignment.append((TopicPartition(topic, p), low))
        }
    }
    var result: [Int32: [ReadRecord]] = [:]
    guard !assignment.isEmpty else { return result }
    try consumer.assign(assignment)
    let batch = MessageBatch(capacity: 4096)
    let deadline = Date().addingTimeInterval(120)
    while !ends.isEmpty && Date() < deadline {
        let n = try consumer.poll(into: batch, timeoutMs: 200)
        for i in 0..<n {
            let m = batch[i]
            if m.error != nil { continue }
            result[m.partition, default: []].append(ReadRecord(partition: m.partition, offset: m.offset, key: m.key.map(Array.init),
                                                               value: Array(m.value), timestampMs: m.timestampMs))
            if let end = ends[m.partition], m.offset + 1 >= end { ends[m.partition] = nil }
        }
        batch.release()
    }
    consumer.close()
    return result
}

/// A reader of `group`'s committed offsets (it does not join the group) and every
/// partition of `topic`; nil if the topic does not exist.
func groupReader(brokers: String, group: String, topic: String) throws -> (consumer: KafkaConsumer, partitions: [TopicPartition])? {
    let consumer = try KafkaConsumer(bootstrapServers: brokers, groupID: group, logger: testLogger)
    guard let count = try consumer.partitionCount(topic, timeoutMs: 10_000) else { return nil }
    return (consumer, (0..<Int32(count)).map { TopicPartition(topic, $0) })
}

/// The configuration the end-to-end workers run with: the built-in catalog, Asia/Shanghai.
func e2eConfiguration() throws -> EngineConfiguration {
    EngineConfiguration(catalog: try Catalog.builtin(), calendar: try BillingCalendar(timeZoneIdentifier: "Asia/Shanghai"),
                        notices: .defaults)
}

/// The group's committed offsets reached every partition's end.
func waitUntilCommitted(brokers: String, group: String, topic: String, timeout: Double = 300, while running: () -> Bool = { true }) throws -> Bool {
    guard let reader = try groupReader(brokers: brokers, group: group, topic: topic) else { return false }
    let (consumer, partitions) = reader
    var ends: [TopicPartition: Int64] = [:]
    for tp in partitions { ends[tp] = try consumer.watermarks(tp, timeoutMs: 10_000).high }
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline && running() {
        let committed = (try? consumer.committed(partitions, timeoutMs: 5000)) ?? [:]
        if partitions.allSatisfy({ (committed[$0] ?? -1) >= ends[$0]! }) { return true }
        Thread.sleep(forTimeInterval: 0.2)
    }
    return false
}

/// The group's committed offsets never run ahead of the checkpoints: each is at most the
/// offset covered by the newest usable checkpoint of its partition (0 without one). Offsets
/// are read before checkpoints, which only move forward.
func expectCommittedOffsetsCovered(brokers: String, group: String, topic: String, checkpointDirectory: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard let reader = try groupReader(brokers: brokers, group: group, topic: topic) else {
        Issue.record("topic \(topic) not found", sourceLocation: sourceLocation)
        return
    }
    let (consumer, partitions) = reader
    let committed = try consumer.committed(partitions, timeoutMs: 5000)
    let configuration = try e2eConfiguration()
    let store = CheckpointDirectory(directory: checkpointDirectory, logger: testLogger)
    for tp in partitions {
        guard let offset = committed[tp], offset >= 0 else { continue }
        // The worker may prune a file between listing and reading it: look again.
        var covered: Int64?
        for _ in 0..<5 {
            do {
                covered = try store.restore(topic: topic, partition: tp.partition, configuration: configuration)?.header.nextOffset ?? 0
                break
            } catch {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        #expect(covered.map { offset <= $0 } == true,
                "\(tp.topic)[\(tp.partition)]: the group's committed offset \(offset) is past its newest usable checkpoint (\(covered.map(String.init) ?? "unreadable"))",
                sourceLocation: sourceLocation)
    }
}

/// Waits until the group has committed some offset (a checkpoint is durable).
func waitForProgress(brokers: String, group: String, topic: String, timeout: Double = 120, while running: () -> Bool = { true }) throws -> Bool {
    guard let reader = try groupReader(brokers: brokers, group: group, topic: topic) else { return false }
    let (consumer, partitions) = reader
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline && running() {
        let committed = (try? consumer.committed(partitions, timeoutMs: 5000)) ?? [:]
        if committed.values.contains(where: { $0 > 0 }) { return true }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return false
}

/// What billing each input partition alone gives: the outputs by source offset, and the
/// final engine.
/// Outputs by input partition, each keyed by its source offset and which of that record's
/// outputs it is (`WrittenOutput`: notices are told apart by their id).
typealias OutputsByPartition = [Int32: [WrittenOutput: String]]

struct Expected {
    var outputs: OutputsByPartition = [:]
    var engines: [Int32: PartitionEngine] = [:]
    var outputCount: Int { outputs.values.reduce(0) { $0 + $1.count } }

    init(input: [Int32: [ReadRecord]], topic: String) throws {
        let configuration = try e2eConfiguration()
        for (p, records) in input {
            let processor = configuration.makeProcessor(topic: topic, partition: p)
            let batch = OutputBatch()
            for r in records {
                r.value.withUnsafeBytes { value in
                    if let key = r.key {
                        key.withUnsafeBytes { processor.process(value, key: $0, offset: r.offset, recordTimestampMs: r.timestampMs, into: batch) }
                    } else {
                        processor.process(value, key: nil, offset: r.offset, recordTimestampMs: r.timestampMs, into: batch)
                    }
                }
            }
            var byOutput: [WrittenOutput: String] = [:]
            for entry in batch.entries {
                let value = batch.value(of: entry)
                let identity = entry.kind == .notice ? OutputSource.noticeIdentity(value) ?? 0 : 0
                byOutput[WrittenOutput(offset: entry.sourceOffset, identity: identity)] = String(decoding: value, as: UTF8.self)
            }
            outputs[p] = byOutput
            engines[p] = processor.engine
        }
    }
}

/// Outputs found in the output and DLQ topics, by source partition and offset; fails the
/// test on any source emitted twice.
func actualOutputs(brokers: String, topics: [String], input: String) throws -> (outputs: OutputsByPartition, duplicates: Int, total: Int) {
    var outputs: OutputsByPartition = [:]
    var locations: [Int32: [WrittenOutput: String]] = [:]
    var duplicates = 0
    var total = 0
    var examples: [String] = []
    for topic in topics {
        for (q, records) in try readTopic(brokers: brokers, topic: topic) {
            for r in records {
                total += 1
                let source = r.value.withUnsafeBytes { OutputSource.parse($0) }
                guard let source, source.topic == input else { continue }
                let here = "\(topic)[\(q)]@\(r.offset) ts \(r.timestampMs ?? -1)"
                let identity = topic.hasSuffix("notices") ? r.value.withUnsafeBytes { OutputSource.noticeIdentity($0) } ?? 0 : 0
                let key = WrittenOutput(offset: source.offset, identity: identity)
                if let first = locations[source.partition]?[key] {
                    duplicates += 1
                    if examples.count < 5 { examples.append("source \(source.partition)/\(source.offset) at \(first) and \(here)") }
                }
                outputs[source.partition, default: [:]][key] = String(decoding: r.value, as: UTF8.self)
                locations[source.partition, default: [:]][key] = here
            }
        }
    }
    if !examples.isEmpty { print("duplicate outputs, e.g.: " + examples.joined(separator: "; ")) }
    return (outputs, duplicates, total)
}

/// Compares, partition by partition, what the worker emitted with what billing alone gives.
func expectSameOutputs(_ actual: OutputsByPartition, _ expected: Expected, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(Set(actual.keys).isSubset(of: Set(expected.outputs.keys)), sourceLocation: sourceLocation)
    for (p, want) in expected.outputs {
        let got = actual[p] ?? [:]
        let missing = want.keys.filter { got[$0] == nil }.sorted()
        let extra = got.keys.filter { want[$0] == nil }.sorted()
        let different = want.keys.filter { got[$0] != nil && got[$0] != want[$0] }.sorted()
        #expect(missing.isEmpty && extra.isEmpty && different.isEmpty,
                "partition \(p): \(missing.count) missing (first \(missing.prefix(3))), \(extra.count) extra (first \(extra.prefix(3))), \(different.count) different (first \(different.prefix(3)))",
                sourceLocation: sourceLocation)
    }
}

/// Compares every account's balances in the checkpoints of `directory` with the engines.
func expectSameBalances(checkpointDirectory directory: String, topic: String, expected: Expected,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
    try expectSameBalances(store: CheckpointDirectory(directory: directory, logger: testLogger), topic: topic, expected: expected,
                           sourceLocation: sourceLocation)
}

/// Compares every account's balances in the checkpoints of `store` with the engines.
func expectSameBalances(store: any CheckpointStore, topic: String, expected: Expected,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
    let configuration = try e2eConfiguration()
    for (p, engine) in expected.engines {
        let restored = try store.restore(topic: topic, partition: p, configuration: configuration)
        guard let restored else {
            Issue.record("no checkpoint for partition \(p)", sourceLocation: sourceLocation)
            continue
        }
        let got = restored.engine
        let want = engine.accountsWithState().map { engine.balances(of: $0) }
        let have = got.accountsWithState().map { got.balances(of: $0) }
        let firstDifference = zip(have, want).first { $0 != $1 }.map { "\($0.0.account): \($0.0.json(calendar: got.calendar)) vs \($0.1.json(calendar: got.calendar))" }
        #expect(have.count == want.count && firstDifference == nil,
                "balances of partition \(p) differ: \(have.count) vs \(want.count) accounts; first difference \(firstDifference ?? "none")",
                sourceLocation: sourceLocation)
    }
}

let e2eTopics = ["ocr.usage:8", "ocr.overage:8", "ocr.usage.dlq:8", "ocr.notices:8"]

/// The output topics of a worker with the default names.
let e2eOutputTopics = ["ocr.overage", "ocr.usage.dlq", "ocr.notices"]

/// Worker flags for a test that must catch the worker part way through its log: librdkafka
/// stops fetching a partition once 1,000 records are queued, so the worker bills in small
/// batches and checkpoints between them (see `KafkaConsumer.fetchersMayBeParked`).
let slowFetching = ["--kafka-config", "queued.min.messages=1000"]

/// Arguments of a worker on the test broker, with quick checkpoints and group timeouts, and
/// an HTTP endpoint on a free port (for `/readyz` and `/metrics`).
/// `store` replaces `--checkpoint-dir checkpoints` (with `--checkpoint-topic NAME`).
func workerArguments(_ command: String = "run", brokers: String, checkpoints: String, group: String = "packmeter",
                     extra: [String] = [], store: [String]? = nil) -> [String] {
    [command, "--brokers", brokers] + (store ?? ["--checkpoint-dir", checkpoints]) + ["--checkpoint-interval", "300ms",
     "--status-interval", "2s", "--group", group, "--http", "127.0.0.1:\(freePort())",
     "--kafka-config", "session.timeout.ms=6000", "--kafka-config", "heartbeat.interval.ms=500"] + extra
}

extension FileHandle {
    /// Bytes up to the first newline (or the end).
    func availableDataLine() -> Data {
        var line = Data()
        while true {
            let byte = readData(ofLength: 1)
            if byte.isEmpty || byte == Data([0x0A]) { return line }
            line.append(byte)
        }
    }
}
