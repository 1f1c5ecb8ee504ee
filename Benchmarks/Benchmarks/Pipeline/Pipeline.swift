import Benchmark
import PackMeterCore
import PackMeterFiles
import PackMeterWorkload

// One partition end to end in memory: generated records (with purchases, suspensions,
// duplicates and broken records mixed in) through decode, the rules, and the formatting of
// overage records and dead letters — what `rate` and each worker shard do, minus I/O.
//
//   swift package benchmark --target Pipeline

final class PipelineWorkload: @unchecked Sendable {
    let bytes: [UInt8]
    let records: [InputRecord]
    let configuration: EngineConfiguration
    var processor: PartitionProcessor
    let output = OutputBatch(capacityBytes: 1 << 22)

    init(count: Int) {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        var generator = WorkloadGenerator(options: WorkloadGenerator.Options(), catalog: catalog, calendar: calendar)
        let out = ByteWriter(capacity: count * 200)
        var ranges: [(Range<Int>, Range<Int>)] = []
        for _ in 0..<count { ranges.append(generator.next(into: out)) }
        bytes = out.array
        configuration = EngineConfiguration(catalog: catalog, calendar: calendar)
        processor = configuration.makeProcessor(topic: "ocr.usage", partition: 0)
        let base = bytes.withUnsafeBytes { $0.baseAddress! }  // `bytes` is never mutated
        records = ranges.enumerated().map { offset, r in
            InputRecord(value: UnsafeRawBufferPointer(start: base + r.1.lowerBound, count: r.1.count),
                        key: UnsafeRawBufferPointer(start: base + r.0.lowerBound, count: r.0.count), offset: Int64(offset))
        }
    }

    /// Runs the whole log through a fresh partition, 4,096 records a batch.
    func run(_ benchmark: Benchmark) {
        processor = configuration.makeProcessor(topic: "ocr.usage", partition: 0)
        benchmark.startMeasurement()
        records.withUnsafeBufferPointer { all in
            var start = 0
            while start < all.count {
                let end = min(start + 4096, all.count)
                output.removeAll()
                processor.process(UnsafeBufferPointer(rebasing: all[start..<end]), into: output)
                start = end
            }
        }
        benchmark.stopMeasurement()
        precondition(processor.counters.recordsRead == UInt64(records.count))
        blackHole(processor.counters.overageRecords)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark("Pipeline: records through decode, rules and output formatting",
              configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal],
                                   scalingFactor: .mega, maxDuration: .seconds(20), maxIterations: 10)) { benchmark, workload in
        workload.run(benchmark)
    } setup: {
        PipelineWorkload(count: 1_000_000)
    }
}
