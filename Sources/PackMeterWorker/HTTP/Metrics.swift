import Foundation
import PackMeterCore
import PackMeterKafka

/// packmeter's version, as `--version` and `packmeter_build_info` show it.
public enum PackMeterVersion {
    public static let current = "0.6.0"
}

/// The Prometheus text exposition of the worker's status.
///
/// Written from the published status rather than through swift-metrics: the counts are
/// kept in plain per-shard structs that the billing threads update without atomics, and
/// the worker thread adds them up a few times a second; the exposition only formats that
/// copy. Counters are this process's totals and never go backwards (partitions that come
/// and go keep what they counted); no two label values of one metric overlap.
enum Metrics {
    static func text(_ s: WorkerStatus, nowMs: Int64) -> String {
        var out = Exposition()
        let c = s.counters
        out.metric("records_total", "counter", "Input records billed by this process, by outcome (each record once).", [
            ("outcome=\"applied\"", c.applied), ("outcome=\"duplicate\"", c.duplicates),
            ("outcome=\"non_billable\"", c.nonBillable), ("outcome=\"rejected\"", c.rejectedTotal),
        ])
        out.metric("dead_letters_total", "counter", "Rejected records, by reason.",
                   RejectReason.allCases.map { ("reason=\"\($0.rawValue)\"", c[$0]) })
        out.metric("calls_total", "counter", "Billable calls settled, by source.", [
            ("source=\"free\"", c.callsFree), ("source=\"prepaid\"", c.callsPrepaid), ("source=\"overage\"", c.callsOverage),
        ])
        out.metric("overage_records_total", "counter", "Overage records billed.", [("", c.overageRecords)])
        out.metric("notices_total", "counter", "Notices written, by kind.",
                   Notice.Kind.allCases.map { ("kind=\"\($0.name)\"", c[notice: $0]) })
        out.metric("records_rebilled_total", "counter", "Records billed again after a partition came back to this process or was taken over from a worker that had billed past its checkpoint (not in records_total).",
                   [("", s.recordsRebilled)])
        out.metric("partitions_opened_total", "counter", "Partitions opened (restored and read back): one per partition per assignment, so per handover.",
                   [("", UInt64(s.partitionsOpened))])
        out.metric("outputs_suppressed_total", "counter", "Outputs not produced again because they were already written.",
                   [("", s.outputsSuppressed)])
        out.metric("records_lost_to_retention_total", "counter", "Input records deleted by the broker before they were billed.",
                   [("", s.recordsLostToRetention)])
        out.metric("lag_records", "gauge", "Records behind the end of the owned partitions.", [("", s.lag)])
        out.metric("partition_lag_records", "gauge", "Records behind the end of each owned partition.",
                   s.positions.sorted { $0.key < $1.key }.map { ("partition=\"\($0.key)\"", max(0, ($0.value.end ?? $0.value.next) - $0.value.next)) })
        out.metric("partition_next_offset", "gauge", "The next offset to bill of each owned partition.",
                   s.positions.sorted { $0.key < $1.key }.map { ("partition=\"\($0.key)\"", $0.value.next) })
        out.metric("assigned_partitions", "gauge", "Input partitions owned by this worker.", [("", s.assignedPartitions.count)])
        out.metric("input_partitions", "gauge", "Partitions of the input topic (0 until known).", [("", s.inputPartitions)])
        out.metric("accounts", "gauge", "Accounts known to this worker's engines.", [("", s.accounts)])
        out.metric("live_balances", "gauge", "Live (account, pack, month) balances.", [("", s.liveBalances)])
        out.metric("dedupe_remembered_ids", "gauge", "Event ids in the dedupe windows.", [("", s.rememberedIDs)])
        out.metric("dedupe_evictions_total", "counter",
                   "Ids dropped from full dedupe windows, by whether their month was still open (a repeat would be billed again).", [
                       ("month=\"open\"", s.dedupeEvictionsOpenMonth), ("month=\"closed\"", s.dedupeEvictions - s.dedupeEvictionsOpenMonth),
                   ])
        out.metric("restore_seconds_total", "counter", "Time spent restoring partitions from checkpoints.", [("", s.restoreSeconds)])
        out.metric("readback_seconds_total", "counter", "Time spent reading back already-written outputs when partitions were opened.",
                   [("", s.recoverySeconds)])
        out.metric("readback_records_total", "counter", "Output records read back when partitions were opened.", [("", s.recoveryRecordsScanned)])
        out.metric("producer_queue_full_total", "counter", "Batches whose outputs waited for room in the producer's queue.", [("", s.producerQueueFull)])
        out.metric("fetch_wakeups_total", "counter", "Times fetchers parked by a full consumer queue were restarted.", [("", s.fetchWakeups)])
        out.metric("checkpoints_written_total", "counter", "Checkpoints written.", [("", s.checkpointsWritten)])
        out.metric("checkpoint_bytes_total", "counter", "Bytes of the checkpoints written (whole states, compressed).", [("", s.checkpointBytesTotal)])
        out.metric("checkpoint_stall_seconds", "gauge", "How long the last checkpoint paused billing.", [("", s.lastCheckpointStallMs / 1000)])
        out.metric("checkpoint_stall_max_seconds", "gauge", "The longest checkpoint pause.", [("", s.maxCheckpointStallMs / 1000)])
        out.metric("checkpoint_age_seconds", "gauge",
                   "Seconds since each owned partition's newest durable checkpoint was taken, while records billed since wait for one (0 when it covers every record billed).",
                   s.checkpointTakenMs.sorted { $0.key < $1.key }.map { ("partition=\"\($0.key)\"", Double(max(0, nowMs - $0.value)) / 1000) })
        out.metric("checkpoint_fallbacks_total", "counter", "Partitions restored from an older checkpoint because the newest was damaged.",
                   [("", UInt64(s.checkpointFallbacks))])
        out.metric("rebalances_total", "counter", "Rebalance events: partitions assigned, revoked (handed over) or lost (taken away without a handover).", [
            ("event=\"assigned\"", UInt64(s.rebalances.assigned)), ("event=\"revoked\"", UInt64(s.rebalances.revoked)),
            ("event=\"lost\"", UInt64(s.rebalances.lost)),
        ])
        out.metric("kafka_errors_total", "counter", "Errors librdkafka reported: broker connections failing, requests timing out, deliveries failing.",
                   [("", LogSink.errors)])
        out.metric("resident_memory_bytes", "gauge", "The process's resident memory.", [("", ProcessMemory.residentBytes())])
        out.metric("brokers_reachable", "gauge", "1 when the brokers answered the last look (every few seconds).", [("", s.brokersReachable ? 1 : 0)])
        out.metric("ready", "gauge", "1 when /readyz answers 200.", [("", s.isReady ? 1 : 0)])
        out.metric("start_time_seconds", "gauge", "When this process started, epoch seconds.", [("", Double(s.startedAtMs) / 1000)])
        out.metric("build_info", "gauge", "packmeter's version.", [("version=\"\(PackMeterVersion.current)\"", 1)])
        return out.text
    }
}

/// Prometheus text format, one metric family at a time.
private struct Exposition {
    var text = ""

    mutating func metric<V: Numeric & CustomStringConvertible>(_ name: String, _ type: String, _ help: String, _ samples: [(String, V)]) {
        text += "# HELP packmeter_\(name) \(help)\n# TYPE packmeter_\(name) \(type)\n"
        for (labels, value) in samples {
            text += labels.isEmpty ? "packmeter_\(name) \(value)\n" : "packmeter_\(name){\(labels)} \(value)\n"
        }
    }
}

/// The process's memory as the kernel counts it.
enum ProcessMemory {
    /// Resident set size, from `/proc/self/statm` (0 where there is none).
    static func residentBytes() -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = UInt64(fields[1]) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
