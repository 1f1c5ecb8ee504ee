import ArgumentParser
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import PackMeterWorker
import ServiceLifecycle

/// The flags `run` and `replay` share (docs/contract.md, command line).
struct WorkerFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Kafka bootstrap servers.", valueName: "host:port[,...]"))
    var brokers: String

    @Option(help: ArgumentHelp("The topic of usage events.", valueName: "topic"))
    var input = "ocr.usage"

    @Option(help: ArgumentHelp("Where overage records go.", valueName: "topic"))
    var output = "ocr.overage"

    @Option(help: ArgumentHelp("Where rejected records (dead letters) go.", valueName: "topic"))
    var dlq = "ocr.usage.dlq"

    @Option(help: ArgumentHelp("Where notices go (free grant or prepaid pack running low, overage started, pack expiring); empty: no notices.", valueName: "topic"))
    var notices = "ocr.notices"

    @Option(help: ArgumentHelp("The consumer group (run).", valueName: "name"))
    var group = "packmeter"

    @Option(name: .customLong("checkpoint-dir"), help: ArgumentHelp("Where each input partition's checkpoints are kept (default ./checkpoints for run, ./replay-checkpoints for replay), unless --checkpoint-topic is given. Workers of one group must share it; replay refuses a directory run writes to.", valueName: "dir"))
    var checkpointDir: String?

    @Option(name: .customLong("checkpoint-topic"), help: ArgumentHelp("Keep checkpoints in this compacted Kafka topic instead of a directory (one partition per input partition; created if missing and the brokers allow it). For workers on different machines.", valueName: "topic"))
    var checkpointTopic: String?

    @Option(name: .customLong("instance-id"), help: ArgumentHelp("Static group membership (run): a worker restarted with the same id within the session timeout gets its partitions back without a rebalance. Unique per worker, stable across restarts (a pod name).", valueName: "id"))
    var instanceID: String?

    @Option(name: .customLong("http-advertise"), help: ArgumentHelp("The URL other workers of the group reach this worker's --http at (run), so that any of them answers for any account.", valueName: "url"))
    var httpAdvertise: String?

    @Option(name: .customLong("members-topic"), help: ArgumentHelp("Where the workers of the group announce their partitions and --http-advertise URLs (default: GROUP.members; created compacted if missing).", valueName: "topic"))
    var membersTopic: String?

    @Option(name: .customLong("checkpoint-interval"), help: ArgumentHelp("How often to checkpoint (and then commit offsets).", valueName: "duration"))
    var checkpointInterval = "5s"

    @Option(name: .customLong("keep-checkpoints"), help: ArgumentHelp("Checkpoints kept per partition (older ones are a fallback if the newest is damaged).", valueName: "n"))
    var keepCheckpoints = 3

    @Option(name: .customLong("max-future-skew"), help: ArgumentHelp("How far a ts may be after its Kafka record's timestamp; later is rejected as future_timestamp.", valueName: "duration"))
    var maxFutureSkew = "10m"

    @Option(help: ArgumentHelp("Serve balances, /metrics, /healthz and /readyz on this address.", valueName: "host:port"))
    var http: String?

    @Option(name: .customLong("status-interval"), help: ArgumentHelp("How often to log a status line.", valueName: "duration"))
    var statusInterval = "10s"

    @Option(name: .customLong("startup-timeout"), help: ArgumentHelp("How long to wait for the brokers and topics before giving up.", valueName: "duration"))
    var startupTimeout = "60s"

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel = "info"

    @Option(name: .customLong("kafka-config"), help: ArgumentHelp("A librdkafka property for the consumer and producer (repeatable), e.g. session.timeout.ms=10000.", valueName: "key=value"))
    var kafkaConfig: [String] = []

    @OptionGroup var engine: EngineOptions

    static let environmentFlags = ["brokers", "input", "output", "dlq", "notices", "group", "checkpoint-dir", "checkpoint-topic",
                                   "instance-id", "http-advertise", "members-topic", "checkpoint-interval",
                                   "keep-checkpoints", "max-future-skew", "http", "status-interval", "startup-timeout",
                                   "log-level", "kafka-config"] + EngineOptions.environmentFlags

    func duration(_ text: String, _ flag: String) throws -> Int64 {
        guard let ms = DurationText.milliseconds(text), ms > 0 else {
            throw ConfigurationError("--\(flag) '\(text)' is not a positive duration such as 5s or 250ms")
        }
        return ms
    }

    func logger() throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ConfigurationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        var logger = Logger(label: "packmeter")
        logger.logLevel = level
        return logger
    }

    func options(mode: WorkerOptions.Mode) throws -> WorkerOptions {
        try Self.validate(brokers: brokers)
        var options = WorkerOptions(brokers: brokers, engine: try engine.configuration(maxFutureSkew: maxFutureSkew))
        options.inputTopic = input
        options.outputTopic = output
        options.dlqTopic = dlq
        options.noticesTopic = notices.isEmpty ? nil : notices
        if notices.isEmpty { options.engine.notices = nil }
        options.group = group
        switch mode {
        case .live: options.checkpointDirectory = checkpointDir ?? "./checkpoints"
        case .replay: options.checkpointDirectory = checkpointDir ?? "./replay-checkpoints"
        }
        if let checkpointTopic {
            guard checkpointDir == nil else { throw ConfigurationError("give --checkpoint-dir or --checkpoint-topic, not both") }
            guard !checkpointTopic.isEmpty else { throw ConfigurationError("--checkpoint-topic must name a topic") }
            options.checkpointTopic = checkpointTopic
        }
        if let instanceID {
            guard !instanceID.isEmpty, mode == .live else {
                throw ConfigurationError(mode == .live ? "--instance-id must not be empty" : "--instance-id is for run (replay has no group)")
            }
            options.instanceID = instanceID
        }
        if let httpAdvertise {
            guard http != nil else { throw ConfigurationError("--http-advertise needs --http (the address it advertises)") }
            guard let url = URL(string: httpAdvertise), url.scheme == "http", url.host != nil else {
                throw ConfigurationError("--http-advertise '\(httpAdvertise)' is not an http:// URL such as http://worker-0.packmeter:8080")
            }
            options.httpAdvertise = httpAdvertise.hasSuffix("/") ? String(httpAdvertise.dropLast()) : httpAdvertise
        }
        if let membersTopic {
            guard !membersTopic.isEmpty else { throw ConfigurationError("--members-topic must name a topic") }
            options.membersTopic = membersTopic
        }
        options.checkpointIntervalMs = try duration(checkpointInterval, "checkpoint-interval")
        guard keepCheckpoints >= 1 else { throw ConfigurationError("--keep-checkpoints must be at least 1") }
        options.keepCheckpoints = keepCheckpoints
        options.httpAddress = http
        options.statusIntervalMs = try duration(statusInterval, "status-interval")
        options.startupTimeoutMs = try duration(startupTimeout, "startup-timeout")
        options.mode = mode
        for property in kafkaConfig {
            guard let equals = property.firstIndex(of: "="), equals != property.startIndex else {
                throw ConfigurationError("--kafka-config '\(property)' is not key=value")
            }
            let (name, value) = (String(property[..<equals]), String(property[property.index(after: equals)...]))
            if let why = WorkerOptions.refusedProperty(name, value: value) {
                throw ConfigurationError("--kafka-config \(name)=\(value) is refused: \(why)")
            }
            options.kafkaProperties.append((name, value))
        }
        do {
            try KafkaConfiguration(options.kafkaProperties).validate()
        } catch {
            throw ConfigurationError("--kafka-config: \(error.message)")
        }
        let topics = [input, output, dlq] + (notices.isEmpty ? [] : [notices]) + (checkpointTopic.map { [$0] } ?? [])
            + (httpAdvertise == nil ? [] : [options.membersTopic ?? "\(group).members"])
        guard Set(topics).count == topics.count else {
            throw ConfigurationError("--input, --output, --dlq, --notices and --checkpoint-topic must be different topics")
        }
        return options
    }
}

extension WorkerFlags {
    /// `--brokers` must be a list of HOST:PORT.
    static func validate(brokers: String) throws {
        let servers = brokers.split(separator: ",", omittingEmptySubsequences: false)
        for server in servers {
            let parts = server.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 2, !parts.dropLast().joined(separator: ":").isEmpty, let port = Int(parts.last!), (1...65_535).contains(port) else {
                throw ConfigurationError("--brokers '\(brokers)' is not a list of HOST:PORT (e.g. kafka-1:9092,kafka-2:9092)")
            }
        }
    }
}

/// Runs a worker (and its HTTP endpoint) in a service group that turns SIGTERM/SIGINT into
/// a graceful stop.
func runWorker(_ options: WorkerOptions, logger: Logger) async throws -> StreamingWorker {
    let worker = StreamingWorker(options: options, logger: logger)
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
    // The HTTP server comes first, so that it is shut down last: health, readiness and
    // metrics keep answering while the worker stops.
    if let address = options.httpAddress {
        let server: any Service
        do {
            server = try await WorkerHTTP.start(address: address, worker: worker, logger: logger)
        } catch let error as WorkerHTTPError {
            throw ConfigurationError(error.message)
        }
        services.append(.init(service: server))
    }
    services.append(.init(service: WorkerService(worker: worker),
                          successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup))
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(
        services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    do {
        try await group.run()
    } catch {
        if let failure = error as? WorkerError, failure.kind == .configuration { throw ConfigurationError(failure.message) }
        throw RuntimeFailure("\(error)")
    }
    return worker
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the streaming worker: bill the input topic, emit overage records and dead letters.",
        discussion: """
            Joins the consumer group on the input topic (cooperative-sticky), restores each \
            assigned partition from its newest checkpoint (or starts at the partition's \
            beginning), bills its records, produces overage records (key = account) and dead \
            letters (key = the input key) with an idempotent producer, checkpoints every \
            --checkpoint-interval and commits the offsets a durable checkpoint covers. After a \
            crash it resumes from the checkpoints and does not emit an output twice. SIGTERM \
            or SIGINT: finishes the batch in hand, checkpoints, commits, leaves the group and \
            exits 0. A status line is logged every --status-interval.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @OptionGroup var flags: WorkerFlags

    static let environmentFlags = WorkerFlags.environmentFlags

    func run() async throws {
        let options = try flags.options(mode: .live)
        _ = try await runWorker(options, logger: try flags.logger())
    }
}

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Rebuild balances from a topic (backfill or re-bill), write them to --checkpoint-dir, exit.",
        discussion: """
            Reads every partition of the input topic from --from to --to (no consumer group), \
            bills the records exactly as `run` does, writes outputs to --output and --dlq (use \
            other topics for a dry re-bill) and the balances to its own --checkpoint-dir. An \
            interrupted replay resumes from its checkpoints. Prints a progress line with \
            records/s and ETA, and a summary at the end.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @OptionGroup var flags: WorkerFlags

    @Option(help: ArgumentHelp("Where to start: earliest, or an RFC 3339 time (the broker's timestamp index maps it to offsets).", valueName: "earliest|time"))
    var from = "earliest"

    @Option(help: ArgumentHelp("Where to stop: end (the end offsets when the replay starts), or an RFC 3339 time.", valueName: "end|time"))
    var to = "end"

    static let environmentFlags = WorkerFlags.environmentFlags + ["from", "to"]

    func position(_ text: String, _ flag: String, keyword: String, value: WorkerOptions.Position) throws -> WorkerOptions.Position {
        if text == keyword { return value }
        guard let ms = Timestamp.parseRFC3339(text) else {
            throw ConfigurationError("--\(flag) '\(text)' is neither \(keyword) nor an RFC 3339 time")
        }
        return .time(ms)
    }

    func run() async throws {
        let mode = WorkerOptions.Mode.replay(from: try position(from, "from", keyword: "earliest", value: .earliest),
                                             to: try position(to, "to", keyword: "end", value: .end))
        let options = try flags.options(mode: mode)
        let started = monotonicSeconds()
        let worker = try await runWorker(options, logger: try flags.logger())
        let status = worker.currentStatus
        for line in Summary.lines(status.counters, seconds: monotonicSeconds() - started, title: "packmeter replay") {
            printError(line)
        }
        printError("  balances in \(options.checkpointTopic.map { "the checkpoint topic \($0)" } ?? "\(options.checkpointDirectory)/\(options.inputTopic)/")")
    }
}

struct MockBrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-broker",
        abstract: "Serve librdkafka's in-memory Kafka cluster, for development and tests.",
        discussion: """
            Prints the bootstrap address as the first line of standard output, then serves until \
            SIGTERM or SIGINT. Without --topic it creates ocr.usage, ocr.overage, \
            ocr.usage.dlq and ocr.notices with 8 partitions each. The mock keeps only the newest 5 MiB or \
            100,000 batches of each partition.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Option(help: "How many brokers (1 to 32; environment: PACKMETER_MOCK_BROKERS).")
    var brokers = 1

    @Option(name: .customLong("topic"), help: ArgumentHelp("A topic to create (repeatable).", valueName: "name:partitions"))
    var topics: [String] = []

    static let environmentFlags = ["brokers", "topic"]

    /// More brokers than this buys a test nothing (librdkafka's mock aborts on very many).
    static let brokersMax = 32

    func run() throws {
        var specs: [(String, Int)] = []
        for spec in topics.isEmpty ? ["ocr.usage:8", "ocr.overage:8", "ocr.usage.dlq:8", "ocr.notices:8"] : topics {
            let parts = spec.split(separator: ":")
            guard parts.count == 2, let n = Int(parts[1]), n >= 1, !parts[0].isEmpty else {
                throw ConfigurationError("--topic '\(spec)' is not NAME:PARTITIONS")
            }
            specs.append((String(parts[0]), n))
        }
        guard (1...MockBrokerCommand.brokersMax).contains(brokers) else {
            throw ConfigurationError("--brokers must be from 1 to \(MockBrokerCommand.brokersMax), not \(brokers)")
        }
        // Block the stop signals before librdkafka starts its threads, then wait for them here.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let logger = Logger(label: "packmeter.mock-broker")
        let cluster: MockCluster
        do {
            cluster = try MockCluster(brokers: brokers, logger: logger)
            for (name, partitions) in specs { try cluster.createTopic(name, partitions: partitions) }
        } catch {
            throw RuntimeFailure("\(error)")
        }
        print(cluster.bootstrapServers)
        fflush(nil)
        printError("packmeter mock-broker: \(brokers) broker\(brokers > 1 ? "s" : "") at \(cluster.bootstrapServers); topics \(specs.map { "\($0.0):\($0.1)" }.joined(separator: ", ")); stop with SIGTERM or SIGINT")
        var received: Int32 = 0
        sigwait(&signals, &received)
        printError("packmeter mock-broker: stopping")
        withExtendedLifetime(cluster) {}
    }
}

struct BalancesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "balances",
        abstract: "Print an account's balances from a worker's checkpoints, as JSON.",
        discussion: """
            Looks for the account in the newest checkpoint of every partition of --input, in \
            --checkpoint-dir or in --checkpoint-topic (with --brokers), and prints its balances \
            (docs/contract.md format) on one line. The checkpoint's own time zone, lateness and \
            dedupe capacity are used; the catalog is the built-in one or --catalog, and must be \
            the one the checkpoint was written with.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Option(name: .customLong("checkpoint-dir"), help: ArgumentHelp("The checkpoint directory of a worker or replay (default ./checkpoints).", valueName: "dir"))
    var checkpointDir: String?

    @Option(name: .customLong("checkpoint-topic"), help: ArgumentHelp("The checkpoint topic of a worker or replay, instead of a directory (needs --brokers).", valueName: "topic"))
    var checkpointTopic: String?

    @Option(help: ArgumentHelp("Kafka bootstrap servers, with --checkpoint-topic.", valueName: "host:port[,...]"))
    var brokers: String?

    @Option(help: ArgumentHelp("The account id.", valueName: "id"))
    var account: String

    @Option(help: ArgumentHelp("Only this billing month.", valueName: "YYYY-MM"))
    var month: String?

    @Option(help: ArgumentHelp("The input topic the checkpoints belong to.", valueName: "topic"))
    var input = "ocr.usage"

    @Option(help: ArgumentHelp("The catalog the checkpoints were written with.", valueName: "file"))
    var catalog: String?

    static let environmentFlags = ["checkpoint-dir", "checkpoint-topic", "brokers", "account", "month", "input", "catalog"]

    private func store(logger: Logger) throws -> any CheckpointStore {
        switch (checkpointDir, checkpointTopic) {
        case (.some, .some):
            throw ConfigurationError("give --checkpoint-dir or --checkpoint-topic, not both")
        case let (nil, .some(topic)):
            guard let brokers else { throw ConfigurationError("--checkpoint-topic needs --brokers") }
            try WorkerFlags.validate(brokers: brokers)
            do {
                return try TopicCheckpointStore(topic: topic, brokers: brokers, logger: logger)
            } catch {
                throw RuntimeFailure("cannot read the checkpoint topic '\(topic)': \(error)")
            }
        case let (directory, nil):
            return CheckpointDirectory(directory: directory ?? "./checkpoints", logger: logger)
        }
    }

    func run() throws {
        var monthFilter: BillingMonth?
        if let month {
            guard let m = BillingMonth(month) else { throw ConfigurationError("--month '\(month)' is not YYYY-MM") }
            monthFilter = m
        }
        let loaded = try catalog.map { path throws(CatalogError) in try Catalog.load(path: path) } ?? Catalog.builtin()
        var logger = Logger(label: "packmeter")
        logger.logLevel = .warning
        let store = try store(logger: logger)
        let partitions = try store.partitions(topic: input)
        guard !partitions.isEmpty else { throw RuntimeFailure("no checkpoints of '\(input)' in \(store.location)") }
        // An account's events share a partition; another partition may still know the id
        // (a mis-keyed event) without state, so prefer the partition that has state.
        var stateless: (AccountBalances, BillingCalendar)?
        for p in partitions {
            let found = try store.newestHeader(topic: input, partition: p) { damaged in
                printError("packmeter balances: warning: \(damaged); trying the previous checkpoint")
            }
            guard let (newest, header) = found else { continue }
            let calendar: BillingCalendar
            do {
                calendar = try BillingCalendar(timeZoneIdentifier: header.timeZone)
            } catch {
                throw RuntimeFailure("\(newest): \(error)")
            }
            let configuration = EngineConfiguration(catalog: loaded, calendar: calendar, allowedLatenessMs: header.allowedLatenessMs,
                                                    dedupeCapacity: header.dedupeCapacity)
            guard let restored = try store.restore(topic: input, partition: p, configuration: configuration) else { continue }
            if let balances = restored.engine.balances(ofAccountNamed: account, month: monthFilter) {
                if balances.months.isEmpty && balances.prepaid.isEmpty && !balances.suspended {
                    stateless = stateless ?? (balances, calendar)
                    continue
                }
                print(balances.json(calendar: calendar))
                return
            }
        }
        if let (balances, calendar) = stateless {
            print(balances.json(calendar: calendar))
            return
        }
        throw RuntimeFailure("account '\(account)' has no state in the checkpoints in \(store.location)")
    }
}
