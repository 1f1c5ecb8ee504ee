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

    @Option(name: .customLong("notice-thresholds"), help: ArgumentHelp(
        "Percentages of a free grant used at which a free_grant_used notice is due (default: the catalog's, else 80,100; empty: none).",
        valueName: "list"))
    var noticeThresholds: String?

    @Option(name: .customLong("prepaid-notice-thresholds"), help: ArgumentHelp(
        "Percentages of a prepaid pack used at which a prepaid_used notice is due (default: the catalog's, else 90,100; empty: none).",
        valueName: "list"))
    var prepaidNoticeThresholds: String?

    static let environmentFlags = ["time-zone", "allowed-lateness", "catalog", "dedupe-capacity", "notice-thresholds",
                                   "prepaid-notice-thresholds"]

    /// The notice thresholds: the flags, else the catalog's, else the defaults.
    func thresholds(for catalog: Catalog) throws -> NoticeThresholds {
        let base = catalog.noticeThresholds ?? .defaults
        func list(_ text: String?, _ flag: String, _ fallback: [UInt8]) throws -> [Int] {
            guard let text else { return fallback.map(Int.init) }
            guard let values = NoticeThresholds.parseList(text) else {
                throw ConfigurationError("--\(flag) '\(text)' is not a list of percentages such as 80,100")
            }
            return values
        }
        var problem = ""
        guard let thresholds = NoticeThresholds(freeGrant: try list(noticeThresholds, "notice-thresholds", base.freeGrant),
                                                prepaid: try list(prepaidNoticeThresholds, "prepaid-notice-thresholds", base.prepaid),
                                                problem: &problem)
        else { throw ConfigurationError(problem) }
        return thresholds
    }

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
                                   dedupeCapacity: dedupeCapacity, maxFutureSkewMs: skew, notices: try thresholds(for: loaded))
    }
}

/// `PACKMETER_<FLAG>` environment variables become flags the command line did not give.
enum EnvironmentFlags {
    /// The options each subcommand reads from the environment (every option it has).
    static let bySubcommand: [String: [String]] = [
        "rate": RateCommand.environmentFlags,
        "run": RunCommand.environmentFlags,
        "replay": ReplayCommand.environmentFlags,
        "mock-broker": MockBrokerCommand.environmentFlags,
        "balances": BalancesCommand.environmentFlags,
        "demo": DemoCommand.environmentFlags,
        "generate": GenerateCommand.environmentFlags,
    ]

    /// On/off flags, read from `PACKMETER_<FLAG>` as true/false (1/0, yes/no).
    static let switchesBySubcommand: [String: [String]] = [
        "rate": ["quiet"],
    ]

    /// Where a flag's variable is not `PACKMETER_<FLAG>`: `mock-broker --brokers` is a count,
    /// while `PACKMETER_BROKERS` holds the bootstrap servers of `run`, `replay` and `generate`.
    static let variableOverrides: [String: [String: String]] = [
        "mock-broker": ["brokers": "PACKMETER_MOCK_BROKERS"],
    ]

    static func variable(for flag: String, of subcommand: String) -> String {
        variableOverrides[subcommand]?[flag] ?? "PACKMETER_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    static func apply(to arguments: [String], environment: [String: String]) throws -> [String] {
        guard let subcommand = arguments.first, let flags = bySubcommand[subcommand] else { return arguments }
        var result = arguments
        func given(_ flag: String) -> Bool { arguments.contains { $0 == "--\(flag)" || $0.hasPrefix("--\(flag)=") } }
        for flag in flags where !given(flag) {
            if let value = environment[variable(for: flag, of: subcommand)] { result.append("--\(flag)=\(value)") }
        }
        for flag in switchesBySubcommand[subcommand] ?? [] where !given(flag) {
            let name = variable(for: flag, of: subcommand)
            guard let value = environment[name] else { continue }
            switch value.lowercased() {
            case "1", "true", "yes", "on": result.append("--\(flag)")
            case "0", "false", "no", "off", "": break
            default: throw ConfigurationError("\(name)='\(value)' is neither true nor false")
            }
        }
        return result
    }
}
