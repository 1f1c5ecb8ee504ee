#if canImport(Glibc)
import Glibc
#endif
import CLZ4
import Foundation
import Logging
import PackMeterCore

/// What a checkpoint says about itself: whose state it is, how far into the log it goes, and
/// the configuration it was billed under.
public struct CheckpointHeader: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The next input offset to read: every record before it is reflected in the state.
    public var nextOffset: Int64
    public var catalogFingerprint: String
    public var catalogName: String
    public var timeZone: String
    public var allowedLatenessMs: Int64
    public var dedupeCapacity: Int
    public var createdMs: Int64
    public var counters: ProcessingCounters
    /// Per output topic, per partition: the end offset when the checkpoint was taken (used
    /// to find, after a crash, what was already emitted past this checkpoint).
    public var outputEndOffsets: [String: [Int32: Int64]]
    /// Input offsets at or after `nextOffset` whose outputs were already in the output topics
    /// before those end offsets (written by an earlier run that got further than the
    /// checkpoint it resumed from). Reading back from the end offsets does not see them.
    public var alreadyWritten: [WrittenOutput]

    public init(topic: String, partition: Int32, nextOffset: Int64, configuration: EngineConfiguration,
                counters: ProcessingCounters, createdMs: Int64, outputEndOffsets: [String: [Int32: Int64]] = [:],
                alreadyWritten: [WrittenOutput] = []) {
        self.topic = topic
        self.partition = partition
        self.nextOffset = nextOffset
        catalogFingerprint = Self.hex(configuration.catalog.fingerprint)
        catalogName = configuration.catalog.name
        timeZone = configuration.calendar.timeZoneIdentifier
        allowedLatenessMs = configuration.allowedLatenessMs
        dedupeCapacity = configuration.dedupeCapacity
        self.createdMs = createdMs
        self.counters = counters
        self.outputEndOffsets = outputEndOffsets
        self.alreadyWritten = alreadyWritten
    }

    static func hex(_ fp: Fingerprint128) -> String {
        func h(_ v: UInt64) -> String { let s = String(v, radix: 16); return String(repeating: "0", count: 16 - s.count) + s }
        return h(fp.high) + h(fp.low)
    }

    /// Why this checkpoint cannot be used under `configuration`, or nil if it can.
    public func mismatch(with configuration: EngineConfiguration) -> String? {
        if catalogFingerprint != Self.hex(configuration.catalog.fingerprint) {
            return "it was written under another catalog ('\(catalogName)', fingerprint \(catalogFingerprint)) than the one running ('\(configuration.catalog.name)'); bill with that catalog, or replay into an empty --checkpoint-dir"
        }
        if timeZone != configuration.calendar.timeZoneIdentifier {
            return "it was written with --time-zone \(timeZone), not \(configuration.calendar.timeZoneIdentifier)"
        }
        if allowedLatenessMs != configuration.allowedLatenessMs {
            return "it was written with --allowed-lateness \(DurationText.format(milliseconds: allowedLatenessMs)), not \(DurationText.format(milliseconds: configuration.allowedLatenessMs))"
        }
        if dedupeCapacity != configuration.dedupeCapacity {
            return "it was written with --dedupe-capacity \(dedupeCapacity), not \(configuration.dedupeCapacity)"
        }
        return nil
    }

    func json() -> String {
        let w = ByteWriter(capacity: 1024)
        w.append(raw: "{\"format\":1,\"topic\":")
        w.append(jsonString: topic)
        w.append(utf8: ",\"partition\":\(partition),\"next_offset\":\(nextOffset),\"catalog\":\"\(catalogFingerprint)\",\"catalog_name\":")
        w.append(jsonString: catalogName)
        w.append(raw: ",\"time_zone\":")
        w.append(jsonString: timeZone)
        w.append(utf8: ",\"allowed_lateness_ms\":\(allowedLatenessMs),\"dedupe_capacity\":\(dedupeCapacity),\"created_ms\":\(createdMs)")
        let c = counters
        w.append(utf8: ",\"counters\":{\"records_read\":\(c.recordsRead),\"applied\":\(c.applied),\"duplicates\":\(c.duplicates),\"non_billable\":\(c.nonBillable),\"calls_free\":\(c.callsFree),\"calls_prepaid\":\(c.callsPrepaid),\"calls_overage\":\(c.callsOverage),\"overage_records\":\(c.overageRecords),\"rejected\":{")
        for (i, reason) in RejectReason.allCases.enumerated() {
            w.append(utf8: "\(i > 0 ? "," : "")\"\(reason.rawValue)\":\(c[reason])")
        }
        w.append(raw: "}},\"outputs\":{")
        for (i, topic) in outputEndOffsets.keys.sorted().enumerated() {
            if i > 0 { w.append(UInt8(ascii: ",")) }
            w.append(jsonString: topic)
            w.append(raw: ":{")
            for (k, (partition, offset)) in outputEndOffsets[topic]!.sorted(by: { $0.key < $1.key }).enumerated() {
                w.append(utf8: "\(k > 0 ? "," : "")\"\(partition)\":\(offset)")
            }
            w.append(UInt8(ascii: "}"))
        }
        w.append(raw: "},\"written\":[")
        let (plain, notices) = (alreadyWritten.filter { $0.identity == 0 }, alreadyWritten.filter { $0.identity != 0 })
        for (i, output) in plain.enumerated() { w.append(utf8: i > 0 ? ",\(output.offset)" : "\(output.offset)") }
        w.append(raw: "],\"written_notices\":[")
        for (i, output) in notices.enumerated() { w.append(utf8: "\(i > 0 ? "," : "")[\(output.offset),\(output.identity)]") }
        w.append(raw: "]}")
        return w.string
    }

    init(json text: String) throws(CheckpointError.Problem) {
        guard let value = try? JSONValue.parse(text), let format = value["format"]?.intValue else {
            throw .unreadableHeader
        }
        guard format == 1 else { throw .unknownFormat(Int(format)) }
        guard let topic = value["topic"]?.stringValue, let partition = value["partition"]?.intValue,
              let next = value["next_offset"]?.intValue, let catalog = value["catalog"]?.stringValue,
              let zone = value["time_zone"]?.stringValue, let lateness = value["allowed_lateness_ms"]?.intValue,
              let capacity = value["dedupe_capacity"]?.intValue, let created = value["created_ms"]?.intValue
        else { throw .unreadableHeader }
        self.topic = topic
        self.partition = Int32(partition)
        nextOffset = next
        catalogFingerprint = catalog
        catalogName = value["catalog_name"]?.stringValue ?? "?"
        timeZone = zone
        allowedLatenessMs = lateness
        dedupeCapacity = Int(capacity)
        createdMs = created
        var c = ProcessingCounters()
        if let counters = value["counters"] {
            c.recordsRead = UInt64(counters["records_read"]?.intValue ?? 0)
            c.applied = UInt64(counters["applied"]?.intValue ?? 0)
            c.duplicates = UInt64(counters["duplicates"]?.intValue ?? 0)
            c.nonBillable = UInt64(counters["non_billable"]?.intValue ?? 0)
            c.callsFree = UInt64(counters["calls_free"]?.intValue ?? 0)
            c.callsPrepaid = UInt64(counters["calls_prepaid"]?.intValue ?? 0)
            c.callsOverage = UInt64(counters["calls_overage"]?.intValue ?? 0)
            c.overageRecords = UInt64(counters["overage_records"]?.intValue ?? 0)
            for reason in RejectReason.allCases { c[reason] = UInt64(counters["rejected"]?[reason.rawValue]?.intValue ?? 0) }
        }
        counters = c
        var outputs: [String: [Int32: Int64]] = [:]
        for (topic, partitions) in value["outputs"]?.objectMembers ?? [] {
            var offsets: [Int32: Int64] = [:]
            for (key, offset) in partitions.objectMembers ?? [] {
                if let p = Int32(key), let o = offset.intValue { offsets[p] = o }
            }
            outputs[topic] = offsets
        }
        outputEndOffsets = outputs
        let plain = (value["written"]?.arrayValue ?? []).compactMap(\.intValue).map { WrittenOutput(offset: $0) }
        let notices = (value["written_notices"]?.arrayValue ?? []).compactMap { pair -> WrittenOutput? in
            guard let items = pair.arrayValue, items.count == 2, let offset = items[0].intValue, let identity = items[1].intValue else { return nil }
            return WrittenOutput(offset: offset, identity: identity)
        }
        alreadyWritten = (plain + notices).sorted()
    }
}

/// A checkpoint that cannot be used, named by its file.
public struct CheckpointError: Error, Sendable, CustomStringConvertible {
    public enum Problem: Error, Sendable, Equatable {
        case notACheckpoint
        case unknownFormat(Int)
        case badChecksum
        case truncated
        case unreadableHeader
        case corruptState(String)
        case configurationMismatch(String)
        case io(String)
    }

    public let path: String
    public let problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .notACheckpoint: "checkpoint \(path) is not a packmeter checkpoint (bad magic)"
        case let .unknownFormat(v): "checkpoint \(path) has format version \(v), which this packmeter does not read (it reads \(CheckpointFile.formatVersion))"
        case .badChecksum: "checkpoint \(path) has a bad checksum: it is torn or corrupt"
        case .truncated: "checkpoint \(path) is truncated"
        case .unreadableHeader: "checkpoint \(path) has an unreadable header"
        case let .corruptState(why): "checkpoint \(path) holds corrupt state: \(why)"
        case let .configurationMismatch(why): "checkpoint \(path) cannot be used: \(why)"
        case let .io(why): "checkpoint \(path): \(why)"
        }
    }

    /// Problems after which an older checkpoint may be tried instead.
    public var isDamage: Bool {
        switch problem {
        case .badChecksum, .truncated, .corruptState, .notACheckpoint, .unreadableHeader: true
        default: false
        }
    }
}

