import ArgumentParser
import Foundation
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
            events/s, and the ids the dedupe window dropped when full; long inputs also get a \
            progress line every few seconds. A ts more than --max-future-skew after --now \
            (default: the wall clock at start) is rejected as future_timestamp, so that one \
            mistyped year cannot close every open month.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Argument(help: ArgumentHelp("The usage events (JSON lines); - for standard input.", valueName: "file"))
    var input = "-"

    @Option(name: .customLong("overage-out"), help: ArgumentHelp("Where overage records go; - is standard output.", valueName: "file"))
    var overageOut = "-"

    @Option(name: .customLong("dlq-out"), help: ArgumentHelp("Write rejected records (dead letters) to this file; without it they are only counted.", valueName: "file"))
    var dlqOut: String?

    @Option(name: .customLong("notices-out"), help: ArgumentHelp("Write notices (free grant or prepaid pack running low, overage started, pack expiring) to this file; without it none are made.", valueName: "file"))
    var noticesOut: String?

    @Option(name: .customLong("balances-out"), help: ArgumentHelp("Write every account's final balances to this file, one JSON object a line, ordered by account.", valueName: "file"))
    var balancesOut: String?

    @Flag(name: .customLong("quiet"), help: "No progress lines and no summary on standard error.")
    var quiet = false

    @Option(help: ArgumentHelp("What time it is for the future-timestamp check: an RFC 3339 time, or 'wall-clock'.", valueName: "time"))
    var now = "wall-clock"

    @Option(name: .customLong("max-future-skew"), help: ArgumentHelp("How far a ts may be after --now; later is rejected as future_timestamp.", valueName: "duration"))
    var maxFutureSkew = "10m"

    @OptionGroup var engine: EngineOptions

    static let environmentFlags = ["overage-out", "dlq-out", "notices-out", "balances-out", "now", "max-future-skew"] + EngineOptions.environmentFlags

    func run() throws {
        try checkPaths()
        var nowMs = wallClockMs()
        if now != "wall-clock" {
            guard let parsed = Timestamp.parseRFC3339(now) else { throw ConfigurationError("--now '\(now)' is neither wall-clock nor an RFC 3339 time") }
            nowMs = parsed
        }
        var configuration = try engine.configuration(maxFutureSkew: maxFutureSkew)
        if noticesOut == nil { configuration.notices = nil }
        var job = RateJob(input: input, overageOut: overageOut, dlqOut: dlqOut, balancesOut: balancesOut,
                          configuration: configuration, progress: !quiet)
        job.nowMs = nowMs
        job.noticesOut = noticesOut
        let result = try job.run()
        guard !quiet else { return }
        for line in Summary.lines(result.counters, seconds: result.seconds, title: "packmeter rate") {
            printError(line)
        }
        let evictions = result.processor.engine.dedupeEvictions
        printError(Summary.evictionLine(all: evictions.all, openMonth: evictions.openMonth))
        if result.counters.rejectedTotal > 0 && !result.deadLettersWritten {
            printError("  (dead letters were counted, not written: add --dlq-out FILE to keep them)")
        }
    }

    /// The input must exist, and no output may be the input (it would be emptied before
    /// it is read).
    private func checkPaths() throws {
        guard input != "-" else { return }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ConfigurationError("cannot read '\(input)': no such file")
        }
        let source = URL(fileURLWithPath: input).resolvingSymlinksInPath().standardizedFileURL.path
        for (flag, path) in [("--overage-out", overageOut), ("--dlq-out", dlqOut), ("--notices-out", noticesOut), ("--balances-out", balancesOut)] {
            guard let path, path != "-" else { continue }
            if URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path == source {
                throw ConfigurationError("\(flag) '\(path)' is the input file; writing it would destroy the input")
            }
        }
    }
}
