import Foundation
import Logging
import Testing
@testable import PackMeterCore
@testable import PackMeterWorker

@Suite("Metrics mean what Prometheus users expect; readiness tells the truth")
struct MetricsTests {
    /// `count` call records of one account, offsets from `first`.
    func records(_ first: Int, _ count: Int) -> [String] {
        (first..<first + count).map {
            "{\"id\":\"call-\($0)\",\"account\":\"100000000001\",\"action\":\"GeneralBasicOCR\",\"ts\":\"2026-11-03T10:00:00+08:00\",\"count\":\(100 + $0 % 7)}"
        }
    }

    func bill(_ shard: Shard, _ lines: [String], from first: Int) {
        let buffers = lines.map { Array($0.utf8) }
        let raw = buffers.map { bytes -> UnsafeMutableRawBufferPointer in
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
            copy.copyBytes(from: bytes)
            return copy
        }
        defer { raw.forEach { $0.deallocate() } }
        shard.pending = raw.enumerated().map { InputRecord(value: UnsafeRawBufferPointer($0.element), offset: Int64(first + $0.offset)) }
        shard.billPending()
        shard.nextOffset = Int64(first + lines.count)
    }

    func shard(_ shards: ShardSet) throws -> Shard {
        let configuration = EngineConfiguration(catalog: try Catalog.builtin(), calendar: try BillingCalendar(timeZoneIdentifier: "Asia/Shanghai"))
        return Shard(partition: 3, processor: configuration.makeProcessor(topic: "ocr.usage", partition: 3), nextOffset: 0,
                     generation: shards.nextGeneration())
    }

    /// A partition taken away and given back is billed again from its checkpoint: the
    /// process's totals neither fall when it goes nor count the same records twice.
    @Test func counters_neverGoBackwards_norCountARecordTwice_whenAPartitionIsLostAndRegained() throws {
        let shards = ShardSet(inputTopic: "ocr.usage", logger: Logger(label: "test"))
        let first = try shard(shards)
        shards.insert(first)
        bill(first, records(0, 300), from: 0)
        let before = shards.totals.counters
        #expect(before.recordsRead == 300)
        shards.drop(3)
        #expect(shards.totals.counters == before, "a lost partition's counts stay")
        // Back, restored from a checkpoint at offset 100: records 100..<300 are billed again.
        let again = try shard(shards)
        shards.insert(again)
        bill(again, records(0, 100), from: 0)  // the checkpoint's state, rebuilt
        let rebilledBase = shards.totals
        bill(again, records(100, 250), from: 100)
        let after = shards.totals
        #expect(after.counters.recordsRead == 350, "300 records once, then 50 new ones")
        #expect(after.recordsRebilled - rebilledBase.recordsRebilled == 200)
        #expect(after.counters.recordsRead >= before.recordsRead && after.counters.callsOverage >= before.callsOverage)
        #expect(after.counters.isBalanced)
    }

    @Test func dedupeEvictions_byOpenAndClosedMonth_addUpWithoutOverlap() {
        var status = WorkerStatus()
        status.dedupeEvictions = 10
        status.dedupeEvictionsOpenMonth = 3
        let text = Metrics.text(status, nowMs: 0)
        #expect(text.contains("packmeter_dedupe_evictions_total{month=\"open\"} 3\n"))
        #expect(text.contains("packmeter_dedupe_evictions_total{month=\"closed\"} 7\n"))
    }

    @Test func everySample_hasItsHelpAndType_andNamesAreUnique() {
        var status = WorkerStatus()
        status.positions = [0: (next: 5, end: 9), 1: (next: 3, end: nil)]
        status.checkpointTakenMs = [0: 1_000, 1: 4_000]
        let text = Metrics.text(status, nowMs: 10_000)
        var typed = Set<String>()
        var families: [String] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let name = String(line.split(separator: " ")[2])
                families.append(name)
                typed.insert(name)
            } else if !line.hasPrefix("#") {
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                #expect(typed.contains(name), "\(name) has no TYPE line before it")
            }
        }
        #expect(Set(families).count == families.count, "a family is written twice")
        #expect(text.contains("packmeter_partition_lag_records{partition=\"0\"} 4\n"))
        #expect(text.contains("packmeter_checkpoint_age_seconds{partition=\"1\"} 6.0\n"))
        #expect(text.contains("packmeter_build_info{version=\"\(PackMeterVersion.current)\"} 1\n"))
    }

    @Test func ready_onlyWhenRunning_withPartitions_committed_andBrokersAnswering() {
        var status = WorkerStatus()
        status.phase = .running
        status.brokersReachable = true
        #expect(!status.isReady, "no partitions")
        status.assignedPartitions = [0, 1]
        status.restoredOffsetsToCommit = 2
        #expect(!status.isReady, "offsets not yet committed")
        status.restoredOffsetsToCommit = 0
        #expect(status.isReady)
        status.brokersReachable = false
        #expect(status.notReadyBecause == "the brokers do not answer")
        status.brokersReachable = true
        status.phase = .recovering
        #expect(!status.isReady)
    }

    @Test func alive_whileTheLoopTurns_stuckWhenItHasNot() {
        var status = WorkerStatus()
        status.phase = .running
        status.updatedAt = 100
        #expect(status.isAlive(now: 100 + WorkerStatus.stuckAfterSeconds - 1))
        #expect(!status.isAlive(now: 100 + WorkerStatus.stuckAfterSeconds + 1))
    }
}
