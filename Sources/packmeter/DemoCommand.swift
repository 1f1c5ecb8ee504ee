import ArgumentParser
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import PackMeterWorkload
import PackMeterWorker
import Synchronization

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The whole pipeline on an embedded cluster with a generated workload.",
        discussion: """
            Starts librdkafka's mock cluster in this process (topics ocr.usage, ocr.overage and \
            ocr.usage.dlq and ocr.notices, 8 partitions each), generates a realistic workload (thousands of \
            accounts with a skewed load over many actions, across the October/November \
            boundary in Asia/Shanghai, with purchases, refunds, suspensions, producer retries \
            and broken records) and produces it while the streaming worker consumes it, with a \
            progress bar. Then it prints what happened: events/s, calls from free grants, \
            prepaid packs and overage, dead letters by reason, the busiest accounts with their \
            balances, and where the checkpoints are.

            Formats and guarantees: docs/contract.md; the rules: docs/rules.md (in packmeter's repository).
            """
    )

    @Option(help: "Events to generate.")
    var events = 1_000_000

    @Option(help: "Accounts in the workload.")
    var accounts = 5_000

    @Option(help: "Partitions of each topic.")
    var partitions = 8

    @Option(name: .customLong("checkpoint-dir"), help: ArgumentHelp("Where the worker checkpoints (default: a new temporary directory).", valueName: "dir"))
    var checkpointDir: String?

    @Option(help: "Seed of the workload.")
    var seed: UInt64 = 7

    @OptionGroup var engine: EngineOptions

    static let environmentFlags = ["events", "accounts", "partitions", "checkpoint-dir", "seed"] + EngineOptions.environmentFlags

    func run() throws {
        guard events >= 1, accounts >= 1, partitions >= 1 else { throw ConfigurationError("--events, --accounts and --partitions must be at least 1") }
        let configuration = try engine.configuration()
        var quiet = Logger(label: "packmeter.demo")
        quiet.logLevel = .warning
        let directory = checkpointDir ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("packmeter-demo-\(ProcessInfo.processInfo.processIdentifier)").path

        // 1. The embedded cluster.
        let cluster: MockCluster
        do {
            cluster = try MockCluster(brokers: 1, logger: quiet)
            for topic in ["ocr.usage", "ocr.overage", "ocr.usage.dlq", "ocr.notices"] { try cluster.createTopic(topic, partitions: partitions) }
        } catch {
            throw RuntimeFailure("cannot start the embedded cluster: \(error)")
        }
        printError("packmeter demo: embedded Kafka cluster at \(cluster.bootstrapServers), \(partitions) partitions per topic")

        // 2. The worker, consuming as the workload is produced.
        var options = WorkerOptions(brokers: cluster.bootstrapServers, engine: configuration)
        options.group = "packmeter-demo"
        options.checkpointDirectory = directory
        options.checkpointIntervalMs = 2000
        options.statusIntervalMs = 3_600_000
        let worker = StreamingWorker(options: options, logger: quiet)
        let workerResult = Mutex<Result<Void, WorkerError>?>(nil)
        let workerThread = Thread {
            do {
                try worker.run()
                workerResult.withLock { $0 = .success(()) }
            } catch {
                workerResult.withLock { $0 = .failure(WorkerError("\(error)")) }
            }
        }
        workerThread.stackSize = 16 << 20
        workerThread.start()

        // 3. The workload: from 30 October to 2 November, produced while the worker runs,
        //    never more than the mock's retention ahead of it.
        var generatorOptions = WorkloadGenerator.Options()
        generatorOptions.accounts = accounts
        generatorOptions.seed = seed
        generatorOptions.startMs = Timestamp.parseRFC3339("2026-10-30T00:00:00+08:00")!
        generatorOptions.millisecondsPerEvent = Double(3 * 86_400_000) / Double(events)
        var generator = WorkloadGenerator(options: generatorOptions, catalog: configuration.catalog, calendar: configuration.calendar)
        var producer: KafkaProducer! = nil
        var topic: ProducerTopic! = nil
        do {
            producer = try KafkaProducer(bootstrapServers: cluster.bootstrapServers, logger: quiet)
            topic = try producer.topic("ocr.usage")
        } catch {
            throw RuntimeFailure("\(error)")
        }
        let started = monotonicSeconds()
        var progress = ProgressBar()
        let leadMax = UInt64(40_000 * partitions)
        for n in stride(from: 0, to: events, by: 4096) {
            while UInt64(n) > worker.currentStatus.counters.recordsRead + leadMax {
                if workerResult.withLock({ $0 }) != nil { break }
                producer.poll(timeoutMs: 20)
                drawProgress(worker, total: events, produced: n, started: started, progress: &progress)
            }
            if case let .failure(error) = workerResult.withLock({ $0 }) { throw RuntimeFailure("the worker stopped: \(error)") }
            drawProgress(worker, total: events, produced: n, started: started, progress: &progress)
            do {
                try producer.produce(min(4096, events - n), from: &generator, to: topic)
            } catch {
                throw RuntimeFailure("\(error)")
            }
        }
        do { try producer.flush(timeoutMs: 60_000) } catch { throw RuntimeFailure("\(error)") }
        topic = nil
        producer = nil

        // 4. Wait until every record is billed, then stop the worker gracefully.
        while worker.currentStatus.counters.recordsRead < UInt64(events) {
            if case let .failure(error) = workerResult.withLock({ $0 }) { throw RuntimeFailure("the worker stopped: \(error)") }
            drawProgress(worker, total: events, produced: events, started: started, progress: &progress)
            Thread.sleep(forTimeInterval: 0.05)
        }
        let seconds = monotonicSeconds() - started
        drawProgress(worker, total: events, produced: events, started: started, progress: &progress, force: true)
        progress.finish()
        worker.requestStop()
        while workerResult.withLock({ $0 }) == nil { Thread.sleep(forTimeInterval: 0.02) }
        if case let .failure(error) = workerResult.withLock({ $0 }) { throw RuntimeFailure("the worker failed: \(error)") }
        report(worker, seconds: seconds, directory: directory, calendar: configuration.calendar)
        withExtendedLifetime(cluster) {}
    }

    private func drawProgress(_ worker: StreamingWorker, total: Int, produced: Int, started: Double, progress: inout ProgressBar,
                              force: Bool = false) {
        let now = monotonicSeconds()
        progress.draw(now: now, force: force) {
            let done = Int(worker.currentStatus.counters.recordsRead)
            let rate = Double(done) / max(now - started, 0.001)
            return "  \(ProgressBar.bar(done: Int64(done), total: Int64(total))) \(Summary.grouped(UInt64(done)))/\(Summary.grouped(UInt64(total))) billed, \(Summary.grouped(UInt64(produced))) produced, \(Summary.compact(rate)) events/s"
        }
    }

    private func report(_ worker: StreamingWorker, seconds: Double, directory: String, calendar: BillingCalendar) {
        let status = worker.currentStatus
        let c = status.counters
        print("")
        print("packmeter demo: \(Summary.grouped(c.recordsRead)) events billed in \(Summary.format2(seconds)) s (\(Summary.compact(Double(c.recordsRead) / seconds)) events/s, produced and consumed through the embedded cluster)")
        print("")
        print("  billable calls       \(Summary.grouped(c.billableCalls))")
        print("    free grants        \(Summary.grouped(c.callsFree))")
        print("    prepaid packs      \(Summary.grouped(c.callsPrepaid))")
        print("    overage            \(Summary.grouped(c.callsOverage))  in \(Summary.grouped(c.overageRecords)) overage records on ocr.overage")
        print("  applied events       \(Summary.grouped(c.applied))")
        print("  duplicates skipped   \(Summary.grouped(c.duplicates))")
        print("  non-billable calls   \(Summary.grouped(c.nonBillable))")
        print("  dead letters         \(Summary.grouped(c.rejectedTotal)) on ocr.usage.dlq")
        for reason in RejectReason.allCases where c[reason] > 0 {
            print("    \(reason.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0)) \(Summary.grouped(c[reason]))")
        }
        print("  notices              \(Summary.grouped(c.noticesTotal)) on ocr.notices")
        for kind in Notice.Kind.allCases {
            print("    \(kind.name.padding(toLength: 18, withPad: " ", startingAt: 0)) \(Summary.grouped(c[notice: kind]))")
        }
        print("")
        print("  busiest accounts (billable calls; per month and pack: free used / prepaid / overage)")
        for report in worker.finalReport.prefix(5) {
            print("    \(report.account) (partition \(report.partition)): \(Summary.grouped(report.billableCalls)) calls\(report.balances.suspended ? ", suspended" : "")")
            for month in report.balances.months {
                let packs = month.packs.sorted { $0.freeUsed + $0.prepaidUsed + $0.overage > $1.freeUsed + $1.prepaidUsed + $1.overage }.prefix(3)
                let text = packs.map { "\($0.pack) \($0.freeUsed)/\($0.prepaidUsed)/\($0.overage)" }.joined(separator: ", ")
                print("      \(month.month): \(text)\(month.packs.count > 3 ? ", …" : "")")
            }
            for pack in report.balances.prepaid.prefix(2) {
                print("      prepaid \(pack.id): \(pack.remaining) of \(pack.quantity) left (\(pack.pack))")
            }
        }
        if let top = worker.finalReport.first {
            print("")
            print("  any account's balances as JSON: packmeter balances --checkpoint-dir \(directory) --account \(top.account)")
        }
        print("")
        print("  checkpoints: \(status.checkpointsWritten) written to \(directory)/ocr.usage/<partition>/; the longest pause for one was \(Int(status.maxCheckpointStallMs)) ms")
    }
}
