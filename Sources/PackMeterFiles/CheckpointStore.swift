#if canImport(Glibc)
import Glibc
#endif
import CLZ4
import Foundation
import Logging
import PackMeterCore

/// Where a worker keeps its checkpoints: a directory (`CheckpointDirectory`) or a compacted
/// Kafka topic (the worker's `TopicCheckpointStore`). Both hold the same checkpoint files
/// (`CheckpointFile`), keep the newest few per partition, and never use a torn one.
public protocol CheckpointStore: AnyObject, Sendable {
    /// Names the store in messages: a directory's path or `topic NAME`.
    var location: String { get }
    /// Claims the store for `writer`, or says why not (`CheckpointDirectory.claim`).
    func claim(for writer: CheckpointWriter) throws(CheckpointClaimError)
    /// Encodes `engine` (a copy nobody else touches) and writes it durably; then lets go of
    /// checkpoints beyond the newest few. Returns where it went and its size in bytes.
    @discardableResult
    func write(_ engine: PartitionEngine, header: CheckpointHeader) throws(CheckpointError) -> (path: String, bytes: Int)
    /// The newest usable checkpoint of a partition, restored into a new engine; nil when the
    /// partition has none. A damaged newest checkpoint is skipped with a warning and the one
    /// before it used; if some exist but none can be used, that is an error (state is never
    /// silently taken as empty).
    func restore(topic: String, partition: Int32, configuration: EngineConfiguration) throws(CheckpointError) -> RestoredCheckpoint?
    /// Called before `partitions` are restored (possibly on several threads at once), so
    /// that a store can read for all of them in one pass.
    func prepareRestore(topic: String, partitions: [Int32])
    /// The input partitions that have checkpoints.
    func partitions(topic: String) throws(CheckpointError) -> [Int32]
    /// The header of the partition's newest checkpoint that is not damaged (as `restore`
    /// picks it), without its state; `warn` hears of each damaged one passed over.
    func newestHeader(topic: String, partition: Int32, warn: (CheckpointError) -> Void) throws(CheckpointError) -> (path: String, header: CheckpointHeader)?
}

/// A restored checkpoint: its header, the engine holding its state, and where it was read.
public struct RestoredCheckpoint {
    public var header: CheckpointHeader
    public var engine: PartitionEngine
    public var path: String
    /// Newer checkpoints passed over because they were damaged.
    public var damagedSkipped = 0

    public init(header: CheckpointHeader, engine: PartitionEngine, path: String, damagedSkipped: Int = 0) {
        self.header = header
        self.engine = engine
        self.path = path
        self.damagedSkipped = damagedSkipped
    }
}

/// Which command keeps its checkpoints in a store.
public enum CheckpointWriter: String, Sendable {
    case run
    case replay
}

extension CheckpointStore {
    public func prepareRestore(topic: String, partitions: [Int32]) {}

    /// Tries `candidates` newest first: the first one that reads, restored; damaged ones are
    /// passed over with a warning; nil when there are none.
    public static func restoreNewest<Candidate>(_ candidates: [Candidate], topic: String, partition: Int32, logger: Logger,
                                         read: (Candidate, PartitionEngine) throws(CheckpointError) -> (CheckpointHeader, String),
                                         configuration: EngineConfiguration) throws(CheckpointError) -> RestoredCheckpoint? {
        guard !candidates.isEmpty else { return nil }
        var damaged: [CheckpointError] = []
        for candidate in candidates {
            let engine = configuration.makeEngine()
            do throws(CheckpointError) {
                let (header, path) = try read(candidate, engine)
                guard header.topic == topic && header.partition == partition else {
                    throw CheckpointError(path: path, problem: .corruptState("it belongs to \(header.topic)[\(header.partition)]"))
                }
                if !damaged.isEmpty {
                    logger.warning("using an older checkpoint", metadata: ["partition": "\(topic)[\(partition)]", "checkpoint": "\(path)"])
                }
                return RestoredCheckpoint(header: header, engine: engine, path: path, damagedSkipped: damaged.count)
            } catch {
                guard error.isDamage else { throw error }
                logger.warning("\(error); trying the previous checkpoint", metadata: ["partition": "\(topic)[\(partition)]"])
                damaged.append(error)
            }
        }
        throw CheckpointError(path: damaged.first?.path ?? topic, problem: .corruptState(
            "no usable checkpoint for \(topic)[\(partition)]: " + damaged.map(\.description).joined(separator: "; ")))
    }
}

/// Checkpoints on disk: one directory per input partition, one file per checkpoint named
/// by the offset it covers, the newest `keep` kept.
///
/// Each file is a `CheckpointFile`, written to a temporary file, fsynced,
/// renamed into place, and the directory fsynced: a crash leaves the old file or the new,
/// never half of one under the real name.
public final class CheckpointDirectory: CheckpointStore {
    public let directory: String
    public let keep: Int
    public let logger: Logger

    public var location: String { directory }

    public init(directory: String, keep: Int = 3, logger: Logger) {
        self.directory = directory
        self.keep = max(1, keep)
        self.logger = logger
    }

    /// The file naming the command that writes to the directory.
    static let writerMarker = ".packmeter-writer"

    /// Claims the directory for `writer`, or says why not. `run` always may (a replay's
    /// balances are a valid start for a live worker). `replay` may only take a directory
    /// that is new, empty or a replay's own: pointed at a live group's directory it would
    /// restore the live state, re-bill nothing and write into it.
    public func claim(for writer: CheckpointWriter) throws(CheckpointClaimError) {
        let fm = FileManager.default
        let marker = "\(directory)/\(Self.writerMarker)"
        let owner = (try? String(contentsOfFile: marker, encoding: .utf8)).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if writer == .replay && owner != CheckpointWriter.replay.rawValue {
            let entries = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).filter { $0 != Self.writerMarker }
            if owner == CheckpointWriter.run.rawValue || !entries.isEmpty {
                throw CheckpointClaimError(message: "\(directory) holds checkpoints \(owner == CheckpointWriter.run.rawValue ? "of packmeter run (a live group's state)" : "not written by packmeter replay"); replay keeps its own: give it another --checkpoint-dir (default ./replay-checkpoints)")
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

    @discardableResult
    public func write(_ engine: PartitionEngine, header: CheckpointHeader) throws(CheckpointError) -> (path: String, bytes: Int) {
        let dir = partitionDirectory(topic: header.topic, partition: header.partition)
        let path = "\(dir)/\(Self.fileName(nextOffset: header.nextOffset))"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(path: path, problem: .io("cannot create \(dir): \(error.localizedDescription)"))
        }
        let file = CheckpointFile.encode(engine, header: header)
        try Self.writeDurably(file.bytes, to: path, directory: dir)
        prune(dir)
        return (path, file.count)
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
            Result { () throws(CheckpointError.Problem) in try CheckpointFile.parse(raw, into: engine, configuration: configuration) }
        }
        switch result {
        case let .success(header): return header
        case let .failure(problem): throw CheckpointError(path: path, problem: problem)
        }
    }

    public func restore(topic: String, partition: Int32, configuration: EngineConfiguration) throws(CheckpointError) -> RestoredCheckpoint? {
        try Self.restoreNewest(files(topic: topic, partition: partition), topic: topic, partition: partition, logger: logger,
                               read: { (path, engine) throws(CheckpointError) in
                                   (try read(path, into: engine, configuration: configuration), path)
                               }, configuration: configuration)
    }

    public func partitions(topic: String) -> [Int32] {
        let root = "\(directory)/\(Self.safeName(topic))"
        return ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int32.init).sorted()
    }

    public func newestHeader(topic: String, partition: Int32, warn: (CheckpointError) -> Void) throws(CheckpointError) -> (path: String, header: CheckpointHeader)? {
        for path in files(topic: topic, partition: partition) {
            do {
                return (path, try read(path, into: nil, configuration: nil))
            } catch {
                guard error.isDamage else { throw error }
                warn(error)
            }
        }
        return nil
    }
}

/// Fault injection for crash tests: `PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE=N` kills the
/// process (SIGKILL) half-way through writing its N-th checkpoint (file or topic records).
/// Unset in production.
public enum FaultInjection {
    nonisolated(unsafe) private static var checkpointWrites = 0
    private static let crashAtWrite: Int? = ProcessInfo.processInfo.environment["PACKMETER_FAULT_CRASH_CHECKPOINT_WRITE"].flatMap(Int.init)

    /// Called by the single checkpoint writer thread.
    public static func crashThisCheckpointWrite() -> Bool {
        guard let crashAtWrite else { return false }
        checkpointWrites += 1
        return checkpointWrites == crashAtWrite
    }

    public static func crash() -> Never {
        kill(getpid(), SIGKILL)
        _exit(137)
    }
}

/// Why a command may not use a checkpoint directory.
public struct CheckpointClaimError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// The bytes of one checkpoint, whichever store keeps them.
///
/// Layout: the magic `PMCKPT\r\n`, format version (u32 LE, 3), header length (u32 LE)
/// and the header as JSON; then the engine state in lz4 blocks, each `raw length (u32 LE),
/// compressed length (u32 LE), bytes`, ended by a zero pair; then a 16-byte checksum
/// (MurmurHash3 x64/128 of every byte before it).
public enum CheckpointFile {
    static let magic: [UInt8] = Array("PMCKPT\r\n".utf8)
    /// 3: the account index is rebuilt on restore, not saved; 2: the dedupe window is
    /// saved as its ids (1 saved its hash tables).
    static let formatVersion: UInt32 = 3
    static let blockBytes = 4 << 20

    /// Encodes `engine` (a copy nobody else touches) under `header`.
    public static func encode(_ engine: PartitionEngine, header: CheckpointHeader) -> ByteWriter {
        let file = ByteWriter(capacity: 1 << 20)
        file.append(magic)
        let headerBytes = Array(header.json().utf8)
        appendUInt32(file, formatVersion)
        appendUInt32(file, UInt32(headerBytes.count))
        file.append(headerBytes)

        // Engine state, compressed in blocks as it is produced.
        let block = ByteWriter(capacity: blockBytes)
        let bound = Int(LZ4_compressBound(Int32(blockBytes)))
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
                let take = min(rest.count, blockBytes - block.count)
                block.append(UnsafeRawBufferPointer(rebasing: rest[0..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if block.count == blockBytes { emit() }
            }
        }
        engine.encodeState(to: writer)
        emit()
        appendUInt32(file, 0)
        appendUInt32(file, 0)
        let checksum = Fingerprint128(file.bytes)
        withUnsafeBytes(of: checksum.high.littleEndian) { file.append($0) }
        withUnsafeBytes(of: checksum.low.littleEndian) { file.append($0) }

        return file
    }

    private static func appendUInt32(_ w: ByteWriter, _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { w.append($0) }
    }

    /// Verifies a checkpoint's bytes and reads its header; restores its state into `engine`
    /// when one is given, and checks the header against `configuration` when one is given.
    public static func parse(_ raw: UnsafeRawBufferPointer, into engine: PartitionEngine?,
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

}
