import ArgumentParser
import PackMeterCore
import Logging
import PackMeterKafka
import PackMeterFiles
import PackMeterWorkload
import PackMeterWorker

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write a generated workload of usage events (JSON lines).",
        discussion: """
            Realistic call records (~150 bytes, a few accounts making most calls, popular and \
            shared-pack actions, some failed calls), with a few purchases, refunds, suspensions, \
            producer retries and broken records mixed in. The same seed gives the same file. \
            Use it to size a deployment: packmeter generate --events 1000000 > usage.jsonl, \
            then packmeter rate usage.jsonl > /dev/null; or produce straight to a topic with \
            --brokers (key = account).

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Option(help: "How many events.")
    var events = 100_000

    @Option(help: "How many accounts.")
    var accounts = 5_000

    @Option(help: "Seed of the generator.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("The first event's time, RFC 3339.", valueName: "time"))
    var start = "2026-10-31T00:00:00+08:00"

    @Option(name: .customLong("event-interval"), help: ArgumentHelp("Event time between consecutive events.", valueName: "duration"))
    var eventInterval = "10ms"

    @Option(help: "Zipf exponent of account popularity: 0 uniform, 1 strongly skewed.")
    var skew = 1.0

    @Option(name: .customLong("account-events"), help: "Account events (purchases, refunds, suspensions) per thousand events.")
    var accountEvents = 2

    @Option(help: "Repeated events (producer retries) per thousand.")
    var duplicates = 5

    @Option(help: "Broken records per thousand.")
    var broken = 1

    @Option(help: ArgumentHelp("Where to write; - is standard output.", valueName: "file"))
    var out = "-"

    @Option(help: ArgumentHelp("Produce to Kafka instead of writing lines (key = account).", valueName: "host:port"))
    var brokers: String?

    @Option(help: ArgumentHelp("The topic to produce to, with --brokers.", valueName: "topic"))
    var topic = "ocr.usage"

    static let environmentFlags = ["events", "accounts", "seed", "start", "event-interval", "skew", "account-events",
                                   "duplicates", "broken", "out", "brokers", "topic"] + EngineOptions.environmentFlags

    @OptionGroup var engine: EngineOptions

    func run() throws {
        guard let startMs = Timestamp.parseRFC3339(start) else {
            throw ConfigurationError("--start '\(start)' is not an RFC 3339 time such as 2026-10-31T00:00:00+08:00")
        }
        guard let interval = DurationText.milliseconds(eventInterval) else {
            throw ConfigurationError("--event-interval '\(eventInterval)' is not a duration such as 10ms")
        }
        guard events >= 0, accounts >= 1 else { throw ConfigurationError("--events must be ≥ 0 and --accounts ≥ 1") }
        let configuration = try engine.configuration()
        var options = WorkloadGenerator.Options()
        options.accounts = accounts
        options.seed = seed
        options.startMs = startMs
        options.millisecondsPerEvent = Double(interval)
        options.skew = skew
        options.accountEventsPerMille = accountEvents
        options.duplicatesPerMille = duplicates
        options.brokenPerMille = broken
        var generator = WorkloadGenerator(options: options, catalog: configuration.catalog, calendar: configuration.calendar)
        if let brokers {
            try produce(&generator, brokers: brokers)
            return
        }
        let output = try FileOutput(path: out)
        let scratch = ByteWriter(capacity: 4096)
        for _ in 0..<events {
            scratch.removeAll()
            let (_, value) = generator.next(into: scratch)
            try output.writeLine(scratch.slice(value))
        }
        try output.flush()
    }

    private func produce(_ generator: inout WorkloadGenerator, brokers: String) throws {
        var logger = Logger(label: "packmeter.generate")
        logger.logLevel = .warning
        do {
            // Bulk loading: fuller batches than the worker's low-latency default (a broker
            // serves a consumer batch by batch, librdkafka's mock one batch per fetch).
            let producer = try KafkaProducer(bootstrapServers: brokers, configuration: KafkaConfiguration([("linger.ms", "100")]),
                                             logger: logger)
            guard try producer.partitionCount(topic, timeoutMs: 10_000) != nil else {
                throw RuntimeFailure("topic '\(topic)' does not exist on \(brokers)")
            }
            let handle = try producer.topic(topic)
            let started = monotonicSeconds()
            try producer.produce(events, from: &generator, to: handle)
            try producer.flush(timeoutMs: 120_000)
            printError("packmeter generate: produced \(Summary.grouped(UInt64(events))) events to \(topic) in \(Summary.format2(monotonicSeconds() - started)) s")
        } catch let error as KafkaError {
            throw RuntimeFailure("\(error)")
        }
    }
}
