import ArgumentParser
import Foundation
import PackMeterCore
import Logging
import PackMeterFiles
import PackMeterWorker

@main
struct PackMeter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "packmeter",
        abstract: "Meters API usage against free grants, prepaid packs and overage.",
        discussion: """
            packmeter applies billing rules (a monthly free grant per account and pack, shared \
            packs, prepaid packs, suspension, month close) to a log of usage events, and emits an \
            overage record for every call neither the free grant nor a prepaid pack covers.

            The rules: docs/rules.md. Formats, commands, HTTP and guarantees: docs/contract.md. \
            Running it in production: README.md (both in packmeter's repository).

            Every flag can also be set with an environment variable PACKMETER_<FLAG>, e.g. \
            PACKMETER_TIME_ZONE=UTC for --time-zone, PACKMETER_QUIET=true for --quiet; a flag on \
            the command line wins. One exception: mock-broker's --brokers (a count) reads \
            PACKMETER_MOCK_BROKERS, since PACKMETER_BROKERS holds the worker's bootstrap servers.

            Exit status: 0 done, 2 bad usage or configuration (one line on stderr says why), \
            1 a fatal runtime error.
            """,
        version: PackMeterVersion.current,
        subcommands: [RunCommand.self, ReplayCommand.self, MockBrokerCommand.self, DemoCommand.self, RateCommand.self, BalancesCommand.self, GenerateCommand.self]
    )

    static func main() async {
        EarlyStop.install()
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        do {
            let arguments = try EnvironmentFlags.apply(to: Array(CommandLine.arguments.dropFirst()),
                                                       environment: ProcessInfo.processInfo.environment)
            try refuseHelpOfUnknownCommand(arguments)
            var command = try parseAsRoot(arguments)
            // The worker commands stop gracefully on SIGTERM and SIGINT, also while starting.
            if !(command is RunCommand || command is ReplayCommand) { EarlyStop.uninstall() }
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withFailure: error)
        }
    }

    /// `packmeter help NAME` for a NAME that is no command is bad usage, not help.
    static func refuseHelpOfUnknownCommand(_ arguments: [String]) throws {
        guard arguments.count >= 2, arguments[0] == "help" else { return }
        let names = configuration.subcommands.map { $0.configuration.commandName ?? "" }
        guard names.contains(arguments[1]) else {
            throw ConfigurationError("'\(arguments[1])' is not a packmeter command; the commands are \(names.joined(separator: ", "))")
        }
    }

    /// Exit 2 with one line for usage and configuration errors, 1 for runtime errors.
    static func exit(withFailure error: Error) -> Never {
        switch error {
        case let failure as ConfigurationError:
            printError("packmeter: \(failure.message)")
            Foundation.exit(2)
        case let failure as CatalogError:
            printError("packmeter: invalid catalog: \(failure.message)")
            Foundation.exit(2)
        case let failure as RuntimeFailure:
            printError("packmeter: \(failure.message)")
            Foundation.exit(1)
        case let failure as IOError:
            printError("packmeter: \(failure)")
            Foundation.exit(1)
        case let failure as CheckpointError:
            printError("packmeter: \(failure)")
            Foundation.exit(1)
        default:
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version: the full text is the answer.
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            if error is ExitCode { Foundation.exit(code.rawValue) }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid usage"
            printError("packmeter: \(message) (see 'packmeter help')")
            Foundation.exit(2)
        }
    }
}

/// Bad usage or configuration: exit status 2 with this one line.
struct ConfigurationError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A fatal error at run time: exit status 1 with this one line.
struct RuntimeFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
