/// The records a batch of input produced, in input order: overage records, dead letters and
/// notices, each with its Kafka key, laid out in one reusable byte buffer.
public final class OutputBatch {
    public enum Kind: UInt8, Sendable {
        case overage
        case deadLetter
        case notice
    }

    public struct Entry: Sendable {
        public var kind: Kind
        /// The input offset the record derives from.
        public var sourceOffset: Int64
        var keyStart: Int32
        /// -1 for a record without a key.
        var keyLength: Int32
        var valueStart: Int32
        var valueLength: Int32
    }

    public let bytes: ByteWriter
    public private(set) var entries: [Entry] = []

    public init(capacityBytes: Int = 1 << 20) {
        bytes = ByteWriter(capacity: capacityBytes)
        entries.reserveCapacity(1024)
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    public func removeAll() {
        bytes.removeAll()
        entries.removeAll(keepingCapacity: true)
    }

    public func key(of entry: Entry) -> UnsafeRawBufferPointer? {
        entry.keyLength < 0 ? nil : bytes.slice(Int(entry.keyStart)..<Int(entry.keyStart + entry.keyLength))
    }

    public func value(of entry: Entry) -> UnsafeRawBufferPointer {
        bytes.slice(Int(entry.valueStart)..<Int(entry.valueStart + entry.valueLength))
    }

    /// Starts a record: writes its key; the caller then writes the value and calls `finish`.
    func begin(key: UnsafeRawBufferPointer?) -> (keyStart: Int32, keyLength: Int32) {
        let start = Int32(bytes.count)
        guard let key else { return (start, -1) }
        bytes.append(key)
        return (start, Int32(key.count))
    }

    func finish(kind: Kind, sourceOffset: Int64, key: (keyStart: Int32, keyLength: Int32)) {
        let valueStart = key.keyStart + max(key.keyLength, 0)
        entries.append(Entry(kind: kind, sourceOffset: sourceOffset, keyStart: key.keyStart, keyLength: key.keyLength,
                             valueStart: valueStart, valueLength: Int32(bytes.count) - valueStart))
    }
}
