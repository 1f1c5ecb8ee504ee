/// Why saved engine state could not be read back.
public struct StateDecodingError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Writes engine state as a stream of little-endian fields and raw tables, handing bytes to
/// `sink` as it goes (so a large state is never held twice in memory).
public final class StateWriter {
    private let sink: (UnsafeRawBufferPointer) -> Void
    private let pending = ByteWriter(capacity: 1 << 16)
    public private(set) var bytesWritten = 0

    public init(sink: @escaping (UnsafeRawBufferPointer) -> Void) {
        self.sink = sink
    }

    func int64(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { pending.append($0) } }
    func uint64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { pending.append($0) } }
    func int(_ v: Int) { int64(Int64(v)) }

    func bytes(_ b: UnsafeRawBufferPointer) {
        int(b.count)
        if b.count > 4096 {
            flush()
            sink(b)
            bytesWritten += b.count
        } else {
            pending.append(b)
        }
    }

    func bytes(_ array: [UInt8]) { array.withUnsafeBytes { bytes($0) } }

    /// A table: its element count, then its elements' raw bytes.
    func buffer<T: BitwiseCopyable>(_ b: FlatBuffer<T>) {
        int(b.count)
        bytes(UnsafeRawBufferPointer(start: b.base, count: b.count * MemoryLayout<T>.stride))
    }

    /// Hands over everything still buffered.
    public func flush() {
        guard !pending.isEmpty else { return }
        sink(pending.bytes)
        bytesWritten += pending.count
        pending.removeAll()
    }
}

/// Reads what `StateWriter` wrote, checking every length against what is left.
public struct StateReader {
    private let data: UnsafeRawBufferPointer
    private var position = 0

    public init(_ data: UnsafeRawBufferPointer) { self.data = data }

    public var isAtEnd: Bool { position == data.count }

    mutating func int64() throws(StateDecodingError) -> Int64 {
        guard position + 8 <= data.count else { throw StateDecodingError("state ends early at byte \(position)") }
        let v = data.loadUnaligned(fromByteOffset: position, as: Int64.self)
        position += 8
        return Int64(littleEndian: v)
    }

    mutating func uint64() throws(StateDecodingError) -> UInt64 { UInt64(bitPattern: try int64()) }

    mutating func int(max: Int = Int(Int32.max)) throws(StateDecodingError) -> Int {
        let v = try int64()
        guard v >= 0 && v <= Int64(max) else { throw StateDecodingError("value \(v) out of range 0...\(max) at byte \(position - 8)") }
        return Int(v)
    }

    mutating func bytes() throws(StateDecodingError) -> UnsafeRawBufferPointer {
        let n = try int(max: data.count - position)
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: data[position..<position + n])
    }

    mutating func byteArray() throws(StateDecodingError) -> [UInt8] { Array(try bytes()) }

    /// A table written by `StateWriter.buffer`, into a fresh buffer with room for `minimumCapacity`.
    mutating func buffer<T: BitwiseCopyable>(_ type: T.Type, minimumCapacity: Int = 1) throws(StateDecodingError) -> FlatBuffer<T> {
        let count = try int()
        let raw = try bytes()
        guard raw.count == count * MemoryLayout<T>.stride else {
            throw StateDecodingError("table of \(count) \(T.self) has \(raw.count) bytes")
        }
        let b = FlatBuffer<T>(capacity: Swift.max(count, minimumCapacity))
        if count > 0 { UnsafeMutableRawPointer(b.base).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
        b.count = count
        return b
    }
}
