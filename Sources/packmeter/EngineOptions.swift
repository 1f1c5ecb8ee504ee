import ArgumentParser
import PackMeterCore

/// The flags that decide how a log is billed; shared by every command that bills.
struct EngineOptions: ParsableArguments {
    @Option(name: .customLong("time-zone"), help: ArgumentHelp(
        "The billing time zone (an IANA name): a call's month is that of its ts there.", valueName: "zone"))
    var timeZone = "Asia/Shanghai"

    @Option(name: .customLong("allowed-lateness"), help: ArgumentHelp(
        "How long after a month ends its calls are still billed; later ones are rejected as too_late. Units ms, s, m, h, d.",
        valueName: "duration"))
    var allowedLateness = "72h"

    @Option(name: .customLong("catalog"), help: ArgumentHelp(
        "A catalog file (packs, actions, free grants, billable error codes) instead of the built-in one.",
        valueName: "file"))
    var catalog: String?

    @Option(name: .customLong("dedupe-capacity"), help: ArgumentHelp(
        "Event ids remembered per partition for duplicate detection (at least this many of the newest, at most twice; about 22 bytes each, 4 of them a filter that grows with the ids held).",
        valueName: "ids"))
    var dedupeCapacity = PartitionEngine.dedupeCapacityDefault

    static let environmentFlags = ["time-zone", "allowed-lateness", "catalog", "dedupe-capacity"]

    func configuration(maxFutureSkew: String? = nil) throws -> EngineConfiguration {
        let calendar: BillingCalendar
        do {
            calendar = try BillingCalendar(timeZoneIdentifier: timeZone)
        } catch {
            throw ConfigurationError("--time-zone: \(error)")
        }
        guard let lateness = DurationText.milliseconds(allowedLateness) else {
            throw ConfigurationError("--allowed-lateness '\(allowedLateness)' is not a duration such as 72h, 90m or 3d")
        }
        guard dedupeCapacity >= 1, dedupeCapacity <= 1 << 30 else {
            throw ConfigurationError("--dedupe-capacity must be from 1 to \(1 << 30), not \(dedupeCapacity)")
        }
        var skew = EngineConfiguration.maxFutureSkewDefaultMs
        if let maxFutureSkew {
            guard let ms = DurationText.milliseconds(maxFutureSkew) else {
                throw ConfigurationError("--max-future-skew '\(maxFutureSkew)' is not a duration such as 10m")
            }
            skew = ms
        }
        let loaded = try catalog.map { path throws(CatalogError) in try Catalog.load(path: path) } ?? Catalog.builtin()
        return EngineConfiguration(catalog: loaded, calendar: calendar, allowedLatenessMs: lateness,
                                   dedupeCapacity: dedupeCapacity, maxFutureSkewMs: skew)
    }
}

/// `PACKMETER_<FLAG>` environment variables become flags the command line did not give.
enum EnvironmentFlags {
    /// Flags each subcommand reads from the environment.
    static let bySubcommand: [String: [String]] = [
        "rate": RateCommand.environmentFlags,
        "run": RunCommand.environmentFlags,
        "replay": ReplayCommand.environmentFlags,
        "mock-broker": MockBrokerCommand.environmentFlags,
        "balances": BalancesCommand.environmentFlags,
        "demo": DemoCommand.environmentFlags,
    ]

    static func apply(to arguments: [String], environment: [String: String]) -> [String] {
        guard let subcommand = arguments.first, let flags = bySubcommand[subcommand] else { return arguments }
        var result = arguments
        for flag in flags {
            let variable = "PACKMETER_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
            guard let value = environment[variable] else { continue }
            let given = arguments.contains { $0 == "--\(flag)" || $0.hasPrefix("--\(flag)=") }
            if !given { result.append("--\(flag)=\(value)") }
        }
        return result
    }
}
