import Benchmark
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
        let engine = PartitionEngine(catalog: catalog, calendar: calendar)
        let start = Timestamp.parseRFC3339("2026-11-03T00:00:00+08:00")!
        // Applied in small batches so that the measured memory is the engine's, not the input's.
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
        let footprint = engine.memoryFootprint
        benchmark.measurement(.custom("bytes per live balance", useScalingFactor: false), footprint.balances / engine.liveBalanceCount)
        benchmark.measurement(.custom("live balances", useScalingFactor: false), engine.liveBalanceCount)
        let total = footprint.balances + footprint.accounts + footprint.dedupe + footprint.prepaid
        benchmark.measurement(.custom("engine bytes per account", useScalingFactor: false), total / engine.accountCount)
        blackHole(engine)
    }
}
