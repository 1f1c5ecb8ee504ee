import Benchmark
import PackMeterCore

// The engine alone: pre-decoded calls (account interned, id fingerprinted) applied on one
// thread, as a shard does after decoding. Each inner iteration is one call event.
//
//   swift package benchmark --target Engine

/// A fixed set of call events over `accounts` accounts, replayed with fresh ids each round.
final class CallWorkload: @unchecked Sendable {
    let engine: PartitionEngine
    /// The events of the current round: their ids carry the round's salt.
    let events: UnsafeMutableBufferPointer<CallEvent>
    var salt: UInt64 = 0
    var round: UInt64 = 0

    init(accounts: Int, events count: Int, skewed: Bool, dedupeCapacity: Int = PartitionEngine.dedupeCapacityDefault) {
        let (engine, made) = Self.make(accounts: accounts, events: count, skewed: skewed, dedupeCapacity: dedupeCapacity)
        self.engine = engine
        events = .allocate(capacity: made.count)
        _ = events.initialize(from: made)
    }

    static func make(accounts: Int, events count: Int, skewed: Bool, dedupeCapacity: Int) -> (PartitionEngine, [CallEvent]) {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        // Notices on, as a worker runs by default: the engine checks every call against the
        // thresholds (and drops what it finds: nothing here writes them).
        let engine = EngineConfiguration(catalog: catalog, calendar: calendar, dedupeCapacity: dedupeCapacity, notices: .defaults)
            .makeEngine(expectedAccounts: accounts)
        var random = SplitMix64(seed: 42)
        let ids = (0..<accounts).map { engine.intern(account: "1000\(100_000_000 + $0)") }
        let start = Timestamp.parseRFC3339("2026-11-03T00:00:00+08:00")!
        // Some accounts hold prepaid packs, so deductions reach every source.
        for (i, account) in ids.enumerated() where i % 10 == 0 {
            var id = Array("order-\(i)".utf8)
            id.withUnsafeBytes { raw in
                _ = engine.applyPurchase(account: account, id: raw, fingerprint: Fingerprint128(raw), pack: PackIndex(0),
                                         quantity: 1_000_000_000, ts: start - 86_400_000, effective: start - 86_400_000,
                                         expires: start + 300 * 86_400_000)
            }
        }
        var events: [CallEvent] = []
        events.reserveCapacity(count)
        for n in 0..<count {
            let account: Int
            if skewed {
                // Half the calls from 16 hot accounts, a third from 1,000 warm ones, the rest anywhere.
                let r = random.next() % 100
                account = r < 50 ? Int(random.next() % 16) : r < 83 ? Int(random.next() % 1000) : Int(random.next() % UInt64(accounts))
            } else {
                account = Int(random.next() % UInt64(accounts))
            }
            // Most accounts use one to three packs; the built-in catalog has 22.
            let pack = random.next() % 4 == 0 ? UInt16(random.next() % 22) : UInt16(account % 3)
            events.append(CallEvent(account: ids[account], pack: PackIndex(pack), ts: start + Int64(n),
                                    count: random.next() % 20 == 0 ? 10 : 1, billable: true,
                                    id: Fingerprint128(high: random.next(), low: random.next())))
        }
        return (engine, events)
    }

    let results = UnsafeMutablePointer<Deduction>.allocate(capacity: 256)

    /// Applies every event once, in batches of 256 as a shard does, with ids no round has
    /// used (so no call is a duplicate): each batch's ids are re-salted in place just
    /// before it is applied, which costs a few instructions an event where copying the
    /// batch cost about twenty.
    func applyRound(_ benchmark: Benchmark) {
        round &+= 1
        let newSalt = round &* 0x9E37_79B9_7F4A_7C15
        let change = salt ^ newSalt
        salt = newSalt
        var overage: UInt64 = 0
        let n = benchmark.scaledIterations.count
        var start = 0
        while start < n {
            let m = min(256, n - start)
            for k in start..<start + m { events[k].id.high ^= change }
            engine.apply(UnsafeBufferPointer(rebasing: events[start..<start + m]), into: results)
            for k in 0..<m { overage &+= UInt64(results[k].overage) }
            start += m
        }
        blackHole(overage)
    }
}

struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func engineConfiguration() -> Benchmark.Configuration {
    Benchmark.Configuration(
    metrics: [.throughput, .wallClock, .mallocCountTotal, .memoryLeaked, .peakMemoryResident],
    scalingFactor: .mega,
    maxDuration: .seconds(20),
    maxIterations: 12
    )
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = 2

    Benchmark("Engine: deductions, 100k accounts, skewed", configuration: engineConfiguration()) { benchmark, workload in
        workload.applyRound(benchmark)
    } setup: {
        CallWorkload(accounts: 100_000, events: 1_000_000, skewed: true)
    }

    Benchmark("Engine: deductions, 1M accounts, uniform", configuration: engineConfiguration()) { benchmark, workload in
        workload.applyRound(benchmark)
    } setup: {
        CallWorkload(accounts: 1_000_000, events: 1_000_000, skewed: false)
    }

    // What the dedupe window costs: the same skewed load with a window small enough to stay
    // in cache (--dedupe-capacity 32768). The default window (500,000 ids) lives in DRAM.
    Benchmark("Engine: deductions, 100k accounts, skewed, dedupe window 32k ids", configuration: engineConfiguration()) { benchmark, workload in
        workload.applyRound(benchmark)
    } setup: {
        CallWorkload(accounts: 100_000, events: 1_000_000, skewed: true, dedupeCapacity: 32_768)
    }
}
