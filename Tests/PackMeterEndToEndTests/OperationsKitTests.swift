import Foundation
import Testing

/// The operations kit (`ops/`) cannot drift from the code: every metric an alert or a
/// dashboard panel names is one a running worker exports, and every `PACKMETER_*` setting
/// the manifests and the unit use is a flag of `packmeter run`.
@Suite("The operations kit names only what the worker has", .serialized)
struct OperationsKitTests {
    static let kitFiles = ["ops/prometheus/alerts.yml", "ops/grafana/packmeter.json", "ops/kubernetes/packmeter.yaml",
                           "ops/systemd/packmeter.service", "ops/Containerfile", "docs/operations.md"]

    static func read(_ path: String) throws -> String {
        try String(contentsOfFile: "\(repositoryRoot)/\(path)", encoding: .utf8)
    }

    /// Every distinct match of `pattern` in `text`.
    static func names(_ pattern: String, in text: String) throws -> Set<String> {
        let regex = try Regex(pattern)
        return Set(text.matches(of: regex).map { String(text[$0.range]) })
    }

    @Test func alertsAndPanels_nameOnlyExportedMetrics() throws {
        let dir = temporaryDirectory("kit")
        let broker = try MockBroker(topics: e2eTopics, directory: dir)
        defer { broker.stop() }
        let worker = try ChildProcess("worker", arguments: workerArguments(brokers: broker.bootstrap, checkpoints: "\(dir)/ckpt"),
                                      logDirectory: dir)
        try worker.start()
        defer {
            worker.signal(SIGTERM)
            _ = worker.wait()
        }
        #expect(worker.waitUntilReady(), "\(worker.log.suffix(2000))")
        let metrics = try #require(worker.get("/metrics")).body
        let exported = try Self.names("(?m)^# TYPE (packmeter_[a-z0-9_]+)", in: metrics).map { String($0.split(separator: " ")[2]) }
        #expect(exported.count > 30)
        for path in ["ops/prometheus/alerts.yml", "ops/grafana/packmeter.json", "docs/operations.md"] {
            let used = try Self.names("packmeter_[a-z0-9_]+", in: Self.read(path))
            #expect(!used.isEmpty || path == "docs/operations.md")
            let unknown = used.subtracting(exported)
            #expect(unknown.isEmpty, "\(path) names metrics the worker does not export: \(unknown.sorted())")
        }
        // The dashboard has the panels an operator looks for.
        let dashboard = try Self.read("ops/grafana/packmeter.json")
        for metric in ["packmeter_records_total", "packmeter_partition_lag_records", "packmeter_overage_records_total",
                       "packmeter_notices_total", "packmeter_dead_letters_total", "packmeter_checkpoint_stall_seconds",
                       "packmeter_checkpoint_age_seconds", "packmeter_restore_seconds_total", "packmeter_resident_memory_bytes",
                       "packmeter_rebalances_total"] {
            #expect(dashboard.contains(metric), "the dashboard has no panel on \(metric)")
        }
    }

    /// Every alert links a section of the runbook that exists.
    @Test func everyAlert_hasItsRunbookSection() throws {
        let alerts = try Self.read("ops/prometheus/alerts.yml")
        let runbook = try Self.read("docs/operations.md")
        let headings = Set(runbook.split(separator: "\n").filter { $0.hasPrefix("#") }
            .map { $0.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: " ", with: "-") })
        let names = try Self.names("alert: [A-Za-z]+", in: alerts)
        #expect(names.count >= 10)
        for link in try Self.names("docs/operations.md#[a-z-]+", in: alerts) {
            let anchor = String(link.split(separator: "#")[1])
            #expect(headings.contains(anchor), "alerts.yml links docs/operations.md#\(anchor), which has no such section")
        }
        #expect(try Self.names("runbook: ", in: alerts).count == 1 && alerts.components(separatedBy: "runbook: ").count - 1 == names.count,
                "every alert has a runbook link")
    }

    @Test func settingsInTheKit_areFlagsOfRun() throws {
        let help = try ChildProcess("help", arguments: ["help", "run"], logDirectory: temporaryDirectory("kit-help"))
        let pipe = Pipe()
        try help.start(stdout: pipe)
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(help.wait() == 0)
        let flags = try Self.names("--[a-z][a-z-]+", in: text)
        for path in Self.kitFiles {
            for variable in try Self.names("PACKMETER_[A-Z_]+", in: Self.read(path)) {
                let flag = "--" + variable.dropFirst("PACKMETER_".count).lowercased().replacingOccurrences(of: "_", with: "-")
                #expect(flags.contains(flag), "\(path) sets \(variable), but `packmeter run` has no \(flag)")
            }
        }
    }
}
