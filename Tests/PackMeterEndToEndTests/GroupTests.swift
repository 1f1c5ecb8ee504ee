import Foundation
import Testing
@testable import PackMeterCore
import PackMeterFiles
import PackMeterKafka
import PackMeterWorker
import PackMeterWorkload
import HTTPTestClient

/// docs/contract.md, "Checkpoints in Kafka" and "A group of workers": checkpoints held in a
/// compacted topic, and workers on separate machines (separate local directories) that
/// share the input partitions through the group. Each runs on librdkafka's mock cluster and
/// on noida-db.
///
/// The workers have instance ids (static membership), as in a StatefulSet: noida-db 0.2.3
/// never expels a group leader that died (each new generation elects it again, and the
/// members wait for its assignment), and a worker started again with the same id replaces
/// it at once. The mock does not implement static membership (it takes the restarted
/// worker for a new member and expels the dead one after the session timeout).
@Suite("A group of workers with checkpoints in Kafka", .serialized)
struct GroupTests {
    static let checkpointTopic = "ocr.checkpoints"

    /// The topics to start a broker with. The mock cannot create topics (no CreateTopics),
    /// so it gets the checkpoint topic up front; on noida-db the first worker creates it.
    static func topics(for kind: TestBrokerKind) -> [String] {
        kind == .mock ? e2eTopics + ["\(checkpointTopic):8"] : e2eTopics
    }

    static func store(_ broker: any TestBroker) throws -> TopicCheckpointStore {
        try TopicCheckpointStore(topic: checkpointTopic, brokers: broker.bootstrap, logger: testLogger)
    }

    /// A worker keeping its checkpoints in the topic; its own directory holds only its log.
    /// With `advertise`, the worker tells the group its HTTP address (`--http-advertise`).
    static func worker(_ name: String, broker: any TestBroker, dir: String, instance: String? = nil, advertise: Bool = false,
                       environment: [String: String] = [:], extra: [String] = []) throws -> ChildProcess {
        var arguments = workerArguments(brokers: broker.bootstrap, checkpoints: "", extra: extra,
                                        store: ["--checkpoint-topic", checkpointTopic])
            + (instance.map { ["--instance-id", $0] } ?? [])
        if advertise, let http = arguments.firstIndex(of: "--http") {
            arguments += ["--http-advertise", "http://\(arguments[http + 1])"]
        }
        let worker = try ChildProcess(name, arguments: arguments, logDirectory: dir, environment: environment)
        try worker.start()
        return worker
    }

    static func verify(_ broker: any TestBroker, expected: Expected, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let actual = try actualOutputs(brokers: broker.bootstrap, topics: e2eOutputTopics, input: "ocr.usage")
        #expect(actual.duplicates == 0, "\(actual.duplicates) outputs emitted twice", sourceLocation: sourceLocation)
        #expect(actual.total == expected.outputCount, "\(actual.total) outputs for \(expected.outputCount) expected",
                sourceLocation: sourceLocation)
        expectSameOutputs(actual.outputs, expected, sourceLocation: sourceLocation)
        try expectSameBalances(store: store(broker), topic: "ocr.usage", expected: expected, sourceLocation: sourceLocation)
    }

    /// Killed while writing a checkpoint to the topic (its chunks written, its head not),
    /// then started again: the previous checkpoint is in force and nothing is lost or
    /// emitted twice. Afterwards only the newest `--keep-checkpoints` checkpoints of each
    /// partition are live in the topic (the rest are tombstoned, for compaction), and
    /// `packmeter balances --checkpoint-topic` reads them.
    @Test(arguments: [TestBrokerKind.mock, .noida])
    func checkpointTopic_tornWriteAndRestart_exactlyOnce(kind: TestBrokerKind) throws {
        let dir = temporaryDirectory("ckpt-topic-\(kind)")
        let broker = try kind.start(topics: Self.topics(for: kind), directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 51)
        let input = try readTopic(brokers: broker.bootstrap, topic: "ocr.usage")
        let expected = try Expected(input: input, topic: "ocr.usage")

        let dying = try Self.worker("dies-writing", broker: broker, dir: dir, instance: "worker-0",
                                    environment: ["PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE": "12"], extra: slowFetching)
        #expect(dying.wait(timeout: 300) == 137, "\(dying.log.suffix(2000))")
        let last = try Self.worker("last", broker: broker, dir: dir, instance: "worker-0")
        #expect(last.waitUntilReady(), "\(last.log.suffix(3000))")
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { last.process.isRunning },
                "\(last.log.suffix(3000))")
        last.signal(SIGTERM)
        #expect(last.wait() == 0, "\(last.log.suffix(3000))")
        try Self.verify(broker, expected: expected)

        // Live keys per partition: the chunks and heads of at most 3 checkpoints.
        for (p, records) in try readTopic(brokers: broker.bootstrap, topic: Self.checkpointTopic) {
            var live: [String: Bool] = [:]
            for record in records { live[String(decoding: record.key ?? [], as: UTF8.self)] = !record.value.isEmpty }
            let heads = live.filter { $0.key.hasPrefix("head/") && $0.value }.count
            #expect((1...3).contains(heads), "partition \(p): \(heads) live checkpoints")
            let liveChunkOffsets = Set(live.filter { $0.key.hasPrefix("chunk/") && $0.value }.map { $0.key.split(separator: "/")[1] })
            #expect(liveChunkOffsets.count == heads, "partition \(p): chunks of \(liveChunkOffsets.count) checkpoints live, \(heads) heads")
        }

        // The command line reads the topic too: an account's balances as the engine has them.
        let (p, engine) = expected.engines.first { !$0.value.accountsWithState().isEmpty }!
        let account = engine.accountsWithState()[0]
        let want = engine.balances(of: account).json(calendar: engine.calendar)
        let balances = try ChildProcess("balances", arguments: ["balances", "--brokers", broker.bootstrap, "--checkpoint-topic",
                                                                Self.checkpointTopic, "--account", engine.name(of: account)],
                                        logDirectory: dir)
        let pipe = Pipe()
        try balances.start(stdout: pipe)
        #expect(balances.wait() == 0, "partition \(p): \(balances.log)")
        let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(printed.trimmingCharacters(in: .whitespacesAndNewlines) == want)
    }

    /// Three workers in one group, each with its own directory (as on separate machines),
    /// the state in the checkpoint topic. At least 12 stops at random instants, a third
    /// SIGTERM and the rest SIGKILL, every fourth one of a worker just started (before its
    /// first assignment); each stopped worker is started again. Then: every SIGTERM exited
    /// 0, the committed offsets reach every partition's end, each output is written once,
    /// and the balances are those of one uninterrupted run.
    @Test(arguments: [TestBrokerKind.mock, .noida])
    func groupChaos_stopsAtRandom_convergesExactlyOnce(kind: TestBrokerKind) throws {
        let seed = ProcessInfo.processInfo.environment["PACKMETER_CHAOS_SEED"].flatMap(UInt64.init) ?? 20_261_205
        let dir = temporaryDirectory("group-\(kind)")
        let broker = try kind.start(topics: Self.topics(for: kind), directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 120_000, seed: seed, accounts: 5000)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")

        var random = SplitMix(seed: seed)
        var lives = [0, 0, 0]
        func start(_ i: Int) throws -> ChildProcess {
            lives[i] += 1
            let home = "\(dir)/worker-\(i)"
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            return try Self.worker("worker-\(i)-life-\(lives[i])", broker: broker, dir: home, instance: "worker-\(i)", extra: slowFetching)
        }
        var workers = try (0..<3).map { try start($0) }
        var stops: [String] = []
        for stop in 1...12 {
            let i = Int(random.next() % 3)
            let early = stop % 4 == 0
            if early {
                // Just started: before its first assignment.
                workers[i].signal(SIGTERM)
                _ = workers[i].wait()
                workers[i] = try start(i)
                Thread.sleep(forTimeInterval: Double(random.next() % 400) / 1000)
            } else {
                Thread.sleep(forTimeInterval: 1 + Double(random.next() % 2000) / 1000)
            }
            let graceful = early || random.next() % 3 == 0
            workers[i].signal(graceful ? SIGTERM : SIGKILL)
            let status = workers[i].wait()
            #expect(status == (graceful ? 0 : 137), "stop \(stop) (\(graceful ? "SIGTERM" : "SIGKILL")) of worker \(i) ended with \(status):\n\(workers[i].log.suffix(2000))")
            stops.append("\(i):\(graceful ? "TERM" : "KILL")\(early ? " early" : "")")
            workers[i] = try start(i)
        }
        print("group chaos (\(kind)), seed \(seed): stops \(stops.joined(separator: ", "))")
        let converged = try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage", timeout: 300)
        #expect(converged, "the committed offsets did not reach the ends:\n\(workers.map { $0.log.suffix(1500) }.joined(separator: "\n---\n"))")
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { #expect(worker.wait() == 0, "\(worker.log.suffix(2000))") }
        try Self.verify(broker, expected: expected)
    }

    /// A worker that leaves with SIGTERM hands its partitions over with a checkpoint, so the
    /// worker taking them bills none of their records twice. Judged per partition handed
    /// over, from what the taker reports when it opens each: librdkafka's mock answers a
    /// commit made while the group syncs with ILLEGAL_GENERATION, which librdkafka 2.0 takes
    /// for a lost assignment, so the taker may lose (and re-bill) partitions of its own in
    /// the same rebalance; noida-db 0.2.3 sometimes leaves a cooperative rebalance hanging
    /// for minutes, so this runs on the mock.
    @Test func sigtermHandover_rebillsNothing() throws {
        let dir = temporaryDirectory("handover")
        let broker = try TestBrokerKind.mock.start(topics: Self.topics(for: .mock), directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 40_000, seed: 61)
        let first = try Self.worker("first", broker: broker, dir: dir, extra: slowFetching)
        #expect(first.waitUntilReady(), "\(first.log.suffix(2000))")
        let second = try Self.worker("second", broker: broker, dir: dir, extra: slowFetching)
        // Settled: both own partitions, restored and committed.
        let deadline = Date().addingTimeInterval(90)
        while [first, second].contains(where: { !$0.waitUntilReady(timeout: 1) || ($0.metric("packmeter_assigned_partitions") ?? 0) == 0 })
            && Date() < deadline {}
        #expect((first.metric("packmeter_assigned_partitions") ?? 0) > 0 && (second.metric("packmeter_assigned_partitions") ?? 0) > 0)
        // More records, so that the first leaves in the middle of its partitions' logs.
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 80_000, seed: 62,
                            startMs: 1_793_721_600_000 + 2 * 86_400_000)
        Thread.sleep(forTimeInterval: 0.5)
        let secondLogBefore = second.log.count
        first.signal(SIGTERM)
        #expect(first.wait() == 0, "\(first.log.suffix(2000))")
        let handedOver = Self.lastRevocation(in: first.log)
        #expect(!handedOver.isEmpty, "\(first.log.suffix(2000))")
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage") { second.process.isRunning })
        let since = String(second.log.dropFirst(secondLogBefore))
        for p in handedOver {
            #expect(since.contains("restored ocr.usage[\(p)] from"), "partition \(p) was not taken over:\n\(since.suffix(3000))")
            let rebilled = since.split(separator: "\n").filter { $0.contains("ocr.usage[\(p)]:") && $0.contains("billed again") }
            #expect(rebilled.isEmpty, "partition \(p), handed over with SIGTERM, was billed again: \(rebilled)")
        }
        second.signal(SIGTERM)
        #expect(second.wait() == 0)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        try Self.verify(broker, expected: expected)
    }

    /// The partitions of the last "revoked" line of a worker's log.
    static func lastRevocation(in log: String) -> [Int32] {
        partitions(ofLast: "revoked ocr.usage partitions [", in: log)
    }

    /// The partitions of the last "assigned" line of a worker's log.
    static func lastAssignment(in log: String) -> [Int32] {
        partitions(ofLast: "assigned ocr.usage partitions [", in: log)
    }

    /// The partition list of the last line of `log` that contains `marker`.
    static func partitions(ofLast marker: String, in log: String) -> [Int32] {
        guard let line = log.split(separator: "\n").last(where: { $0.contains(marker) }),
              let open = line.lastIndex(of: "["), let close = line.lastIndex(of: "]") else { return [] }
        return line[line.index(after: open)..<close].split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// A worker killed and started again with the same `--instance-id` within the session
    /// timeout gets its partitions back without a rebalance: the others keep theirs, never
    /// revoked. On noida-db; librdkafka's mock cluster has no static membership.
    @Test func staticMember_restartedWithItsID_getsItsPartitionsBack_othersKeepTheirs() throws {
        let dir = temporaryDirectory("static")
        let broker = try TestBrokerKind.noida.start(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 20_000, seed: 71)
        // A session timeout well above the restart, as with the default of 30 s.
        let session = ["--kafka-config", "session.timeout.ms=20000"]
        var workers = try (0..<3).map { try Self.worker("worker-\($0)", broker: broker, dir: dir, instance: "worker-\($0)", extra: session) }
        for worker in workers { #expect(worker.waitUntilReady(), "\(worker.log.suffix(2000))") }
        // Wait until the group is settled: every partition owned, by one worker each.
        func owned(_ worker: ChildProcess) -> Double { worker.metric("packmeter_assigned_partitions") ?? 0 }
        let deadline = Date().addingTimeInterval(60)
        while workers.map(owned).reduce(0, +) != 8 && Date() < deadline { Thread.sleep(forTimeInterval: 0.2) }
        let before = workers.map(owned)
        #expect(before.reduce(0, +) == 8 && before.allSatisfy { $0 > 0 }, "partitions per worker: \(before)")
        let logsBefore = workers.map { $0.log.count }

        workers[1].signal(SIGKILL)
        #expect(workers[1].wait() == 137)
        let firstLife = Self.lastAssignment(in: workers[1].log)
        workers[1] = try Self.worker("worker-1-again", broker: broker, dir: dir, instance: "worker-1", extra: session)
        #expect(workers[1].waitUntilReady(timeout: 15), "the restarted worker did not get its partitions back:\n\(workers[1].log.suffix(2000))")
        let again = Self.lastAssignment(in: workers[1].log)
        #expect(!firstLife.isEmpty && !again.isEmpty)
        if again != firstLife {
            // The broker chose: it answered the rejoining member with the partitions of
            // another (which keeps them), leaving its own without an owner.
            withKnownIssue("noida-db 0.2.3 sometimes gives a rejoining static member another member's assignment", isIntermittent: true) {
                #expect(again == firstLife)
            }
        }
        for i in [0, 2] {
            let since = String(workers[i].log.dropFirst(logsBefore[i]))
            #expect(!since.contains("revoked") && !since.contains("assigned"), "worker \(i) saw a rebalance:\n\(since.suffix(2000))")
            #expect(owned(workers[i]) == before[i])
        }
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { #expect(worker.wait() == 0, "\(worker.log.suffix(2000))") }
    }

    /// Any worker of the group answers for any account: the owner of the account's
    /// partition serves it, through the worker asked. While a partition has no owner that
    /// answers (its owner was killed and the group has not moved it yet), a query for an
    /// account the others do not know is 503 with `Retry-After`, then 200 once another
    /// worker has taken the partition over.
    @Test func anyWorkerAnswersAnyAccount() throws {
        let dir = temporaryDirectory("any-worker")
        let broker = try TestBrokerKind.mock.start(topics: Self.topics(for: .mock), directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 20_000, seed: 81, accounts: 300)
        let expected = try Expected(input: try readTopic(brokers: broker.bootstrap, topic: "ocr.usage"), topic: "ocr.usage")
        let workers = try ["first", "second"].map { try Self.worker($0, broker: broker, dir: dir, advertise: true) }
        // Both own partitions, and have billed the whole log.
        let deadline = Date().addingTimeInterval(90)
        while workers.contains(where: { ($0.metric("packmeter_assigned_partitions") ?? 0) == 0 }) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(try waitUntilCommitted(brokers: broker.bootstrap, group: "packmeter", topic: "ocr.usage"))
        #expect(workers.allSatisfy { $0.waitUntilReady() }, "\(workers.map { $0.log.suffix(1500) })")

        // An account of each partition: every worker answers with its balances.
        var ofSecond: String?
        for (_, engine) in expected.engines.sorted(by: { $0.key < $1.key }) {
            let account = engine.accountsWithState()[0]
            let name = engine.name(of: account)
            let want = engine.balances(of: account).json(calendar: engine.calendar)
            for worker in workers {
                let got = worker.get("/v1/accounts/\(name)/balances")
                #expect(got?.status == 200 && got?.body.trimmingCharacters(in: .whitespacesAndNewlines) == want,
                        "\(worker.name) on \(name): \(String(describing: got))")
            }
            // Which worker owns it: the one that knows it without asking the other.
            let local = httpExchange(address: workers[1].httpAddress!, sending: Array(
                "GET /v1/accounts/\(name)/balances HTTP/1.1\r\nHost: x\r\nX-Packmeter-Forwarded: 1\r\nConnection: close\r\n\r\n".utf8))
            if local.flatMap(parseReply)?.status == 200 { ofSecond = name }
        }
        for worker in workers { #expect(worker.get("/v1/accounts/nobody/balances")?.status == 404) }

        // The second dies; until its partitions move, the first cannot answer for them.
        let account = try #require(ofSecond)
        workers[1].signal(SIGKILL)
        _ = workers[1].wait()
        let reply = httpRequest(address: workers[0].httpAddress!, path: "/v1/accounts/\(account)/balances", timeout: 5)
        #expect(reply?.status == 503 && reply?.headers["retry-after"] != nil,
                "\(String(describing: reply))")
        let moved = Date().addingTimeInterval(60)
        var status = reply?.status
        while status != 200 && Date() < moved {
            Thread.sleep(forTimeInterval: 0.5)
            status = workers[0].get("/v1/accounts/\(account)/balances")?.status
        }
        #expect(status == 200, "\(workers[0].log.suffix(2000))")
        workers[0].signal(SIGTERM)
        #expect(workers[0].wait() == 0)
    }
}
