import Benchmark
import BenchmarkFixtures
import PackMeterCore

// Memory of the balances: 1,000,000 accounts × 3 packs in one open month. Reports the
// bytes each live (account, pack, month) balance costs in the engine's table, the bytes of
// all engine state per account, and the process's resident memory.
//
//   swift package benchmark --target Memory

let benchmarks: @Sendable () -> Void = {
    Benchmark("Memory: 1M accounts x 3 packs",
              configuration: .init(metrics: [.peakMemoryResident, .wallClock,
                                             .custom("bytes per live balance", useScalingFactor: false),
                                             .custom("live balances", useScalingFactor: false),
                                             .custom("engine bytes per account", useScalingFactor: false)],
                                   maxDuration: .seconds(60), maxIterations: 3)) { benchmark in
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        let engine = EngineConfiguration(catalog: catalog, calendar: calendar).makeEngine()
        applyMillionAccounts(to: engine)
        let footprint = engine.memoryFootprint
        benchmark.measurement(.custom("bytes per live balance", useScalingFactor: false), footprint.balances / engine.liveBalanceCount)
        benchmark.measurement(.custom("live balances", useScalingFactor: false), engine.liveBalanceCount)
        let total = footprint.balances + footprint.accounts + footprint.dedupe + footprint.prepaid
        benchmark.measurement(.custom("engine bytes per account", useScalingFactor: false), total / engine.accountCount)
        blackHole(engine)
    }
}
