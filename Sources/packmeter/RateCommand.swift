import ArgumentParser
import PackMeterCore
import PackMeterFiles

struct RateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rate",
        abstract: "Bill a file of usage events offline, as one partition.",
        discussion: """
            Reads JSON lines (one usage event a line; FILE, or standard input for - or no FILE), \
            applies the billing rules exactly as the streaming worker does for one partition, and \
            writes overage records (JSON lines) to standard output or --overage-out. Each record's \
            source is {"topic": FILE as given, "partition": 0, "offset": its 0-based line number}.

            A summary goes to standard error: records read, applied, duplicates, non-billable, \
            rejected by reason, billable calls from free grants, prepaid packs and overage, and \
            events/s; long inputs also get a progress line every few seconds. Future timestamps \
            are not checked (there is no record timestamp).

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Argument(help: ArgumentHelp("The usage events (JSON lines); - for standard input.", valueName: "file"))
    var input = "-"

    @Option(name: .customLong("overage-out"), help: ArgumentHelp("Where overage records go; - is standard output.", valueName: "file"))
    var overageOut = "-"

    @Option(name: .customLong("dlq-out"), help: ArgumentHelp("Write rejected records (dead letters) to this file; without it they are only counted.", valueName: "file"))
    var dlqOut: String?

    @Option(name: .customLong("balances-out"), help: ArgumentHelp("Write every account's final balances to this file, one JSON object a line, ordered by account.", valueName: "file"))
    var balancesOut: String?

    @Flag(name: .customLong("quiet"), help: "No progress lines and no summary on standard error.")
    var quiet = false

    @OptionGroup var engine: EngineOptions

    static let environmentFlags = ["overage-out", "dlq-out", "balances-out"] + EngineOptions.environmentFlags

    func run() throws {
        let job = RateJob(input: input, overageOut: overageOut, dlqOut: dlqOut, balancesOut: balancesOut,
                          configuration: try engine.configuration(), progress: !quiet)
        let result = try job.run()
        guard !quiet else { return }
        for line in Summary.lines(result.counters, seconds: result.seconds, title: "packmeter rate") {
            printError(line)
        }
        if result.counters.rejectedTotal > 0 && !result.deadLettersWritten {
            printError("  (dead letters were counted, not written: add --dlq-out FILE to keep them)")
        }
    }
}
