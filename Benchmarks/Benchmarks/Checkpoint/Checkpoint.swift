import Benchmark
import BenchmarkFixtures
import Foundation
import Logging
import PackMeterCore
import PackMeterFiles

// Checkpoints of 1,000,000 accounts × 3 packs (one engine, as after a month of traffic,
// dedupe window full): the copy taken on the processing thread (the only pause processing
// sees), the encode + compress + fsync + rename done in the background, and the restore a
// restarted worker does before resuming.
//
//   swift package benchmark --target Checkpoint

final class BigState: @unchecked Sendable {
    let configuration: EngineConfiguration
    let engine: PartitionEngine
    let store: CheckpointDirectory
    let directory: String
    var lastBytes = 0

    init() {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        configuration = EngineConfiguration(catalog: catalog, calendar: calendar)
        let engine = configuration.makeEngine()
        self.engine = engine
        applyMillionAccounts(to: engine)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-bench-\(getpid())").path
        self.directory = directory
        store = CheckpointDirectory(directory: directory, keep: 2, logger: Logger(label: "bench"))
        write()
    }

    func header() -> CheckpointHeader {
        CheckpointHeader(topic: "ocr.usage", partition: 0, nextOffset: 3_000_000, configuration: configuration,
                         counters: ProcessingCounters(), createdMs: 0)
    }

    func write() {
        lastBytes = try! store.write(engine.copy(), header: header()).bytes
    }
}

let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .peakMemoryResident, .custom("checkpoint bytes", useScalingFactor: false)],
        maxDuration: .seconds(60), maxIterations: 5)

    Benchmark("Checkpoint: copy of 1M accounts (the processing pause)", configuration: configuration) { benchmark, state in
        benchmark.startMeasurement()
        let copy = state.engine.copy()
        benchmark.stopMeasurement()
        blackHole(copy)
        benchmark.measurement(.custom("checkpoint bytes", useScalingFactor: false), state.lastBytes)
    } setup: {
        BigState()
    }

    Benchmark("Checkpoint: encode, compress, write, fsync 1M accounts (background)", configuration: configuration) { benchmark, state in
        let copy = state.engine.copy()
        benchmark.startMeasurement()
        state.lastBytes = try! state.store.write(copy, header: state.header()).bytes
        benchmark.stopMeasurement()
        benchmark.measurement(.custom("checkpoint bytes", useScalingFactor: false), state.lastBytes)
    } setup: {
        BigState()
    }

    Benchmark("Checkpoint: restore 1M accounts", configuration: configuration) { benchmark, state in
        benchmark.startMeasurement()
        let restored = try! state.store.restore(topic: "ocr.usage", partition: 0, configuration: state.configuration)
        // The account index is rebuilt on the first lookup after a restore: count it too.
        let first = restored!.engine.account(named: "1000100000000")
        benchmark.stopMeasurement()
        precondition(restored!.engine.accountCount == 1_000_000 && first != nil)
        blackHole(restored)
        benchmark.measurement(.custom("checkpoint bytes", useScalingFactor: false), state.lastBytes)
    } setup: {
        BigState()
    }
}
