import Benchmark
import Foundation
import Logging
import PackMeterCore
import PackMeterRuntime

// Checkpoints of 1,000,000 accounts × 3 packs (one engine, as after a month of traffic,
// dedupe window full): the copy taken on the processing thread (the only pause processing
// sees), the encode + compress + fsync + rename done in the background, and the restore a
// restarted worker does before resuming.
//
//   swift package benchmark --target Checkpoint

final class BigState: @unchecked Sendable {
    let configuration: EngineConfiguration
    let engine: PartitionEngine
    let store: CheckpointStore
    let directory: String
    var lastBytes = 0

    init() {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        configuration = EngineConfiguration(catalog: catalog, calendar: calendar)
        let engine = PartitionEngine(catalog: catalog, calendar: calendar)
        self.engine = engine
        let start = Timestamp.parseRFC3339("2026-11-03T00:00:00+08:00")!
        var calls: [CallEvent] = []
        calls.reserveCapacity(3 * 1024)
        let results = UnsafeMutablePointer<Deduction>.allocate(capacity: 3 * 1024)
        for a in 0..<1_000_000 {
            let account = engine.intern(account: "1000\(100_000_000 + a)")
            for pack in 0..<3 {
                calls.append(CallEvent(account: account, pack: PackIndex(pack * 7), ts: start + Int64(a), count: 1, billable: true,
                                       id: Fingerprint128(high: UInt64(a) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(pack), low: UInt64(a * 3 + pack) << 16)))
            }
            if calls.count == 3 * 1024 {
                calls.withUnsafeBufferPointer { engine.apply($0, into: results) }
                calls.removeAll(keepingCapacity: true)
            }
        }
        calls.withUnsafeBufferPointer { engine.apply($0, into: results) }
        results.deallocate()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-bench-\(getpid())").path
        self.directory = directory
        store = CheckpointStore(directory: directory, keep: 2, logger: Logger(label: "bench"))
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
        benchmark.stopMeasurement()
        precondition(restored!.engine.accountCount == 1_000_000)
        blackHole(restored)
        benchmark.measurement(.custom("checkpoint bytes", useScalingFactor: false), state.lastBytes)
    } setup: {
        BigState()
    }
}
