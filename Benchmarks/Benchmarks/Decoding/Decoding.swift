import Benchmark
import PackMeterCore
import PackMeterFiles
import PackMeterWorkload

// Decoding typical call records (~150 bytes) from their bytes: JSON validation, the
// contract's field checks, RFC 3339 parsing, account interning and id fingerprinting —
// everything a shard does to a record before the engine applies it.
//
//   swift package benchmark --target Decoding

final class RecordSet: @unchecked Sendable {
    let bytes: [UInt8]
    let ranges: [Range<Int>]
    let decoder: EventDecoder
    let engine: PartitionEngine

    init(count: Int) {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        var options = WorkloadGenerator.Options()
        options.accountEventsPerMille = 0
        options.duplicatesPerMille = 0
        options.brokenPerMille = 0
        options.accounts = 20_000
        var generator = WorkloadGenerator(options: options, catalog: catalog, calendar: calendar)
        let out = ByteWriter(capacity: count * 200)
        var ranges: [Range<Int>] = []
        for _ in 0..<count {
            let (key, value) = generator.next(into: out)
            _ = key
            ranges.append(value)
        }
        bytes = out.array
        self.ranges = ranges
        decoder = EventDecoder(catalog: catalog, calendar: calendar)
        engine = EngineConfiguration(catalog: catalog, calendar: calendar).makeEngine()
    }

    var averageBytes: Int { ranges.reduce(0) { $0 + $1.count } / ranges.count }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark("Decoding: typical call records, decode + intern + fingerprint",
              configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal, .custom("record bytes", useScalingFactor: false)],
                                   scalingFactor: .mega, maxDuration: .seconds(20), maxIterations: 12)) { benchmark, records in
        var event = DecodedEvent()
        var check: UInt64 = 0
        records.bytes.withUnsafeBytes { all in
            for i in benchmark.scaledIterations {
                let range = records.ranges[i]
                do {
                    try records.decoder.decode(UnsafeRawBufferPointer(rebasing: all[range]), into: &event)
                    let account = records.engine.intern(account: event.account)
                    check &+= Fingerprint128(event.id).high &+ UInt64(account.rawValue) &+ UInt64(event.ts)
                } catch {
                    fatalError("a generated record was rejected: \(error)")
                }
            }
        }
        blackHole(check)
        benchmark.measurement(.custom("record bytes", useScalingFactor: false), records.averageBytes)
    } setup: {
        RecordSet(count: 1_000_000)
    }
}
