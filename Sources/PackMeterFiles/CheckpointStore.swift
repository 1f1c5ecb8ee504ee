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

    public var description: String {
        switch problem {
        case .notACheckpoint: "checkpoint \(path) is not a packmeter checkpoint (bad magic)"
        case let .unknownFormat(v): "checkpoint \(path) has format version \(v), which this packmeter does not read (it reads \(CheckpointStore.formatVersion))"
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

/// Checkpoints on disk: one directory per input partition, one file per checkpoint named
/// by the offset it covers, the newest `keep` kept.
///
/// File layout: the magic `PMCKPT\r\n`, format version (u32 LE, 3), header length (u32 LE)
/// and the header as JSON; then the engine state in lz4 blocks, each `raw length (u32 LE),
/// compressed length (u32 LE), bytes`, ended by a zero pair; then a 16-byte checksum
/// (MurmurHash3 x64/128 of every byte before it). Written to a temporary file, fsynced,
/// renamed into place, and the directory fsynced: a crash leaves the old file or the new,
/// never half of one under the real name.
public final class CheckpointStore: Sendable {
    public let directory: String
    public let keep: Int
    public let logger: Logger

    static let magic: [UInt8] = Array("PMCKPT\r\n".utf8)
    /// 3: the account index is rebuilt on restore, not saved; 2: the dedupe window is
    /// saved as its ids (1 saved its hash tables).
    static let formatVersion: UInt32 = 3
    static let blockBytes = 4 << 20

    public init(directory: String, keep: Int = 3, logger: Logger) {
        self.directory = directory
        self.keep = max(1, keep)
        self.logger = logger
    }

    /// Which command keeps its checkpoints in a directory.
    public enum Writer: String, Sendable {
        case run
        case replay
    }

    /// The file naming the command that writes to the directory.
    static let writerMarker = ".packmeter-writer"

    /// Claims the directory for `writer`, or says why not. `run` always may (a replay's
    /// balances are a valid start for a live worker). `replay` may only take a directory
    /// that is new, empty or a replay's own: pointed at a live group's directory it would
    /// restore the live state, re-bill nothing and write into it.
    public func claim(for writer: Writer) throws(CheckpointClaimError) {
        let fm = FileManager.default
        let marker = "\(directory)/\(Self.writerMarker)"
        let owner = (try? String(contentsOfFile: marker, encoding: .utf8)).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if writer == .replay && owner != Writer.replay.rawValue {
            let entries = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).filter { $0 != Self.writerMarker }
            if owner == Writer.run.rawValue || !entries.isEmpty {
                throw CheckpointClaimError(message: "\(directory) holds checkpoints \(owner == Writer.run.rawValue ? "of packmeter run (a live group's state)" : "not written by packmeter replay"); replay keeps its own: give it another --checkpoint-dir (default ./replay-checkpoints)")
            }
        }
        guard owner != writer.rawValue else { return }
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data((writer.rawValue + "\n").utf8).write(to: URL(fileURLWithPath: marker), options: .atomic)
        } catch {
            throw CheckpointClaimError(message: "cannot write to the checkpoint directory \(directory): \(error.localizedDescription)")
        }
    }

    public func partitionDirectory(topic: String, partition: Int32) -> String {
        "\(directory)/\(Self.safeName(topic))/\(partition)"
    }

    public static func safeName(_ topic: String) -> String {
        String(topic.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" ? $0 : "_" })
    }

    static func fileName(nextOffset: Int64) -> String {
        let digits = String(nextOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".ckpt"
    }

    /// Checkpoint files of a partition, newest (highest offset) first.
    public func files(topic: String, partition: Int32) -> [String] {
        let dir = partitionDirectory(topic: topic, partition: partition)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".ckpt") && !$0.hasPrefix(".") }.sorted(by: >).map { "\(dir)/\($0)" }
    }

    /// Encodes `engine` (a copy nobody else touches) and writes it durably; then removes
    /// checkpoints beyond the newest `keep`. Returns the file's path and size.
    @discardableResult
    public func write(_ engine: PartitionEngine, header: CheckpointHeader) throws(CheckpointError) -> (path: String, bytes: Int) {
        let dir = partitionDirectory(topic: header.topic, partition: header.partition)
        let path = "\(dir)/\(Self.fileName(nextOffset: header.nextOffset))"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(path: path, problem: .io("cannot create \(dir): \(error.localizedDescription)"))
        }
        let file = ByteWriter(capacity: 1 << 20)
        file.append(Self.magic)
        let headerBytes = Array(header.json().utf8)
        appendUInt32(file, Self.formatVersion)
        appendUInt32(file, UInt32(headerBytes.count))
        file.append(headerBytes)

        // Engine state, compressed in blocks as it is produced.
        let block = ByteWriter(capacity: Self.blockBytes)
        let bound = Int(LZ4_compressBound(Int32(Self.blockBytes)))
        let compressed = UnsafeMutablePointer<CChar>.allocate(capacity: bound)
        defer { compressed.deallocate() }
        func emit() {
            guard !block.isEmpty else { return }
            let n = block.bytes.withMemoryRebound(to: CChar.self) { raw in
                LZ4_compress_default(raw.baseAddress, compressed, Int32(raw.count), Int32(bound))
            }
            appendUInt32(file, UInt32(block.count))
            appendUInt32(file, UInt32(n))
            file.append(UnsafeRawBufferPointer(start: compressed, count: Int(n)))
            block.removeAll()
        }
        let writer = StateWriter { bytes in
            var rest = bytes
            while !rest.isEmpty {
                let take = min(rest.count, Self.blockBytes - block.count)
                block.append(UnsafeRawBufferPointer(rebasing: rest[0..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if block.count == Self.blockBytes { emit() }
            }
        }
        engine.encodeState(to: writer)
        emit()
        appendUInt32(file, 0)
        appendUInt32(file, 0)
        let checksum = Fingerprint128(file.bytes)
        withUnsafeBytes(of: checksum.high.littleEndian) { file.append($0) }
        withUnsafeBytes(of: checksum.low.littleEndian) { file.append($0) }

        try Self.writeDurably(file.bytes, to: path, directory: dir)
        prune(dir)
        return (path, file.count)
    }

    private func appendUInt32(_ w: ByteWriter, _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { w.append($0) }
    }

    static func writeDurably(_ bytes: UnsafeRawBufferPointer, to path: String, directory: String) throws(CheckpointError) {
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CheckpointError(path: path, problem: .io("cannot create \(temporary): \(String(cString: strerror(errno)))")) }
        var written = 0
        let crashAt = FaultInjection.crashThisCheckpointWrite() ? bytes.count / 2 : Int.max
        while written < bytes.count {
            if written >= crashAt {
                fsync(fd)
                FaultInjection.crash()
            }
            let n = Glibc.write(fd, bytes.baseAddress! + written, min(bytes.count - written, crashAt == Int.max ? Int.max : crashAt - written))
            if n < 0 {
                if errno == EINTR { continue }
                let why = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw CheckpointError(path: path, problem: .io("cannot write: \(why)"))
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw CheckpointError(path: path, problem: .io("cannot fsync: \(why)"))
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw CheckpointError(path: path, problem: .io("cannot rename into place: \(why)"))
        }
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }

    private func prune(_ dir: String) {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
        for name in names.filter({ $0.hasSuffix(".ckpt") && !$0.hasPrefix(".") }).sorted(by: >).dropFirst(keep) {
            unlink("\(dir)/\(name)")
        }
        // Temporary files of a crashed writer.
        for name in names where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            let path = "\(dir)/\(name)"
            var info = stat()
            if stat(path, &info) == 0, time(nil) - info.st_mtim.tv_sec > 3600 { unlink(path) }
        }
    }

    /// Reads and verifies one checkpoint file; restores its state into `engine` (a fresh
    /// engine of the running configuration) when one is given, and checks the header against
    /// `configuration` when one is given.
    public func read(_ path: String, into engine: PartitionEngine?, configuration: EngineConfiguration?) throws(CheckpointError) -> CheckpointHeader {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError(path: path, problem: .io("cannot read the file"))
        }
        let result: Result<CheckpointHeader, CheckpointError.Problem> = data.withUnsafeBytes { raw in
            Result { () throws(CheckpointError.Problem) in try Self.parse(raw, into: engine, configuration: configuration) }
        }
        switch result {
        case let .success(header): return header
        case let .failure(problem): throw CheckpointError(path: path, problem: problem)
        }
    }

    static func parse(_ raw: UnsafeRawBufferPointer, into engine: PartitionEngine?,
                      configuration: EngineConfiguration?) throws(CheckpointError.Problem) -> CheckpointHeader {
        guard raw.count >= 16, Array(raw[0..<8]) == magic else { throw .notACheckpoint }
        let version = raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == Self.formatVersion else { throw .unknownFormat(Int(version)) }
        guard raw.count >= 16 + 16 else { throw .truncated }
        let body = UnsafeRawBufferPointer(rebasing: raw[0..<raw.count - 16])
        let stored = Fingerprint128(high: raw.loadUnaligned(fromByteOffset: raw.count - 16, as: UInt64.self).littleEndian,
                                    low: raw.loadUnaligned(fromByteOffset: raw.count - 8, as: UInt64.self).littleEndian)
        guard Fingerprint128(body) == stored else { throw .badChecksum }
        let headerLength = Int(raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian)
        guard 16 + headerLength <= body.count else { throw .truncated }
        let header = try CheckpointHeader(json: String(decoding: body[16..<16 + headerLength], as: UTF8.self))
        if let configuration, let why = header.mismatch(with: configuration) { throw .configurationMismatch(why) }
        guard let engine else { return header }

        // Decompress every block into one buffer, then decode.
        var position = 16 + headerLength
        var blocks: [(Int, Int, Int)] = []  // (raw length, compressed length, position)
        var total = 0
        while true {
            guard position + 8 <= body.count else { throw .truncated }
            let rawLength = Int(body.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian)
            let compressedLength = Int(body.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self).littleEndian)
            position += 8
            if rawLength == 0 && compressedLength == 0 { break }
            guard rawLength <= blockBytes, position + compressedLength <= body.count else { throw .truncated }
            blocks.append((rawLength, compressedLength, position))
            total += rawLength
            position += compressedLength
        }
        guard position == body.count else { throw .corruptState("data after the last block") }
        let state = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 16)
        defer { state.deallocate() }
        var filled = 0
        for (rawLength, compressedLength, at) in blocks {
            let n = LZ4_decompress_safe(body.baseAddress!.advanced(by: at).assumingMemoryBound(to: CChar.self),
                                        state.baseAddress!.advanced(by: filled).assumingMemoryBound(to: CChar.self),
                                        Int32(compressedLength), Int32(rawLength))
            guard n == Int32(rawLength) else { throw .corruptState("an lz4 block does not decompress") }
            filled += rawLength
        }
        var reader = StateReader(UnsafeRawBufferPointer(rebasing: state[0..<total]))
        do {
            try engine.decodeState(from: &reader)
        } catch {
            throw .corruptState(error.message)
        }
        return header
    }

    /// The newest usable checkpoint of a partition, restored into a new engine; nil when the
    /// partition has none. A damaged newest file is skipped with a warning and the one
    /// before it used; if files exist but none can be used, that is an error (state is never
    /// silently taken as empty).
    public func restore(topic: String, partition: Int32, configuration: EngineConfiguration) throws(CheckpointError) -> (header: CheckpointHeader, engine: PartitionEngine, path: String)? {
        let candidates = files(topic: topic, partition: partition)
        guard !candidates.isEmpty else { return nil }
        var damaged: [CheckpointError] = []
        for path in candidates {
            let engine = configuration.makeEngine()
            do throws(CheckpointError) {
                let header = try read(path, into: engine, configuration: configuration)
                guard header.topic == topic && header.partition == partition else {
                    throw CheckpointError(path: path, problem: .corruptState("it belongs to \(header.topic)[\(header.partition)]"))
                }
                if !damaged.isEmpty {
                    logger.warning("using an older checkpoint", metadata: ["partition": "\(topic)[\(partition)]", "checkpoint": "\(path)"])
                }
                return (header, engine, path)
            } catch {
                guard error.isDamage else { throw error }
                logger.warning("\(error); trying the previous checkpoint", metadata: ["partition": "\(topic)[\(partition)]"])
                damaged.append(error)
            }
        }
        throw CheckpointError(path: candidates[0], problem: .corruptState(
            "no usable checkpoint for \(topic)[\(partition)]: " + damaged.map(\.description).joined(separator: "; ")))
    }
}

/// Fault injection for crash tests: `PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE=N` kills the
/// process (SIGKILL) half-way through writing its N-th checkpoint file. Unset in production.
public enum FaultInjection {
    nonisolated(unsafe) private static var checkpointWrites = 0
    private static let crashAtWrite: Int? = ProcessInfo.processInfo.environment["PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE"].flatMap(Int.init)

    /// Called by the single checkpoint writer thread.
    static func crashThisCheckpointWrite() -> Bool {
        guard let crashAtWrite else { return false }
        checkpointWrites += 1
        return checkpointWrites == crashAtWrite
    }

    static func crash() -> Never {
        kill(getpid(), SIGKILL)
        _exit(137)
    }
}

/// Why a command may not use a checkpoint directory.
public struct CheckpointClaimError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
