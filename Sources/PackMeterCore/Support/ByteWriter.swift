/// A growable byte buffer for writing output records (JSON) without per-record allocation.
///
/// Reused across batches: `removeAll()` keeps the allocation. Values written into it are
/// valid JSON fragments; the string writer escapes per RFC 8259 and replaces invalid UTF-8
/// with U+FFFD, so whatever bytes came in, what goes out parses.
public final class ByteWriter {
    var base: UnsafeMutablePointer<UInt8>
    var capacity: Int
    public private(set) var count: Int

    public init(capacity: Int = 1 << 16) {
        self.capacity = max(capacity, 64)
        base = .allocate(capacity: self.capacity)
        count = 0
    }

    deinit { base.deallocate() }

    public var isEmpty: Bool { count == 0 }

    public func removeAll() { count = 0 }

    /// Drops everything after the first `newCount` bytes.
    public func truncate(to newCount: Int) {
        precondition(newCount >= 0 && newCount <= count)
        count = newCount
    }

    /// The bytes written so far; valid until the next write.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    public var array: [UInt8] { Array(bytes) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    @inline(__always)
    func ensure(_ extra: Int) {
        if count + extra > capacity { grow(count + extra) }
    }

    func grow(_ needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let fresh = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        fresh.initialize(from: base, count: count)
        base.deallocate()
        base = fresh
        capacity = newCapacity
    }

    @inline(__always)
    public func append(_ byte: UInt8) {
        ensure(1)
        base[count] = byte
        count += 1
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        ensure(bytes.count)
        (base + count).update(from: source.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        count += bytes.count
    }

    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Appends a literal's bytes as they are (no escaping). A literal argument picks this
    /// over `append(utf8:)`, which goes through `String.withUTF8`.
    @inline(__always)
    public func append(raw string: StaticString) {
        append(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    public func append(utf8 string: String) {
        var string = string
        string.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    public func append(decimal value: UInt64) {
        ensure(20)
        if value < 10 {
            base[count] = UInt8(truncatingIfNeeded: value) &+ 48
            count += 1
            return
        }
        var digits = 0
        var probe = value
        while probe > 0 { digits += 1; probe /= 10 }
        var v = value
        var i = count + digits - 1
        while v > 0 {
            base[i] = UInt8(truncatingIfNeeded: v % 10) &+ 48
            v /= 10
            i -= 1
        }
        count += digits
    }

    public func append(decimal value: Int64) {
        if value < 0 {
            append(UInt8(ascii: "-"))
            append(decimal: UInt64(bitPattern: 0 &- value))
        } else {
            append(decimal: UInt64(value))
        }
    }

    public func append(decimal value: Int) { append(decimal: Int64(value)) }

    /// Appends `value` as exactly `width` decimal digits, zero padded.
    public func append(padded value: Int, width: Int) {
        ensure(width)
        Self.writeDigits(value, width: width, to: base + count)
        count += width
    }

    /// Stores the last `width` decimal digits of `value` at `p`, zero-padded.
    @inline(__always)
    static func writeDigits(_ value: Int, width: Int, to p: UnsafeMutablePointer<UInt8>) {
        var v = value
        var i = width &- 1
        while i >= 0 {
            let q = v / 10
            p[i] = UInt8(truncatingIfNeeded: v &- q &* 10) &+ 48
            v = q
            i &-= 1
        }
    }

    /// Appends `bytes` as a JSON string literal with quotes. Bytes that need no escaping are
    /// copied in runs; invalid UTF-8 becomes U+FFFD.
    public func append(jsonString bytes: UnsafeRawBufferPointer) {
        append(UInt8(ascii: "\""))
        appendJSONStringBody(bytes)
        append(UInt8(ascii: "\""))
    }

    public func append(jsonString string: String) {
        var string = string
        string.withUTF8 { append(jsonString: UnsafeRawBufferPointer($0)) }
    }

    /// Writes up to `maximum` bytes straight into the buffer: `body` gets where to write and
    /// returns how many bytes it wrote.
    @inline(__always)
    func appendDirect(maximum: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Int) {
        ensure(maximum)
        count += body(base + count)
    }

    func appendJSONStringBody(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        var i = 0
        var runStart = 0
        while i < n {
            // Eight plain bytes at a time (ids and account names are all plain). The bytes the
            // JSON scanner stops at are exactly those that are not plain here.
            if i + 8 <= n && JSONScanner.specialBytes(bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) == 0 {
                i += 8
                continue
            }
            let b = bytes[i]
            if b >= 0x20 && b != 0x22 && b != 0x5C && b < 0x80 {
                i += 1
                continue
            }
            if b >= 0x80 {
                let length = UTF8Validation.sequenceLength(bytes, at: i)
                if length > 0 {
                    i += length
                    continue
                }
                append(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
                append(UTF8Validation.replacementCharacter)
                i += 1
                runStart = i
                continue
            }
            append(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
            switch b {
            case 0x22: append(raw: "\\\"")
            case 0x5C: append(raw: "\\\\")
            case 0x0A: append(raw: "\\n")
            case 0x0D: append(raw: "\\r")
            case 0x09: append(raw: "\\t")
            case 0x08: append(raw: "\\b")
            case 0x0C: append(raw: "\\f")
            default:
                append(raw: "\\u00")
                append(hexDigit(b >> 4))
                append(hexDigit(b & 0xF))
            }
            i += 1
            runStart = i
        }
        append(UnsafeRawBufferPointer(rebasing: bytes[runStart..<n]))
    }

    private func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? v + 48 : v - 10 + 97 }
}

/// UTF-8 well-formedness per RFC 3629 (no overlongs, no surrogates, nothing above U+10FFFF).
enum UTF8Validation {
    /// U+FFFD REPLACEMENT CHARACTER in UTF-8.
    static let replacementCharacter: [UInt8] = [0xEF, 0xBF, 0xBD]

    /// The length of the well-formed multi-byte sequence starting at `i`, or 0 if the bytes
    /// there are not one. `bytes[i]` must be ≥ 0x80.
    @inline(__always)
    static func sequenceLength(_ bytes: UnsafeRawBufferPointer, at i: Int) -> Int {
        let n = bytes.count
        let b0 = bytes[i]
        @inline(__always) func cont(_ j: Int) -> Bool { j < n && bytes[j] & 0xC0 == 0x80 }
        switch b0 {
        case 0xC2...0xDF:
            return cont(i + 1) ? 2 : 0
        case 0xE0:
            return i + 2 < n && (0xA0...0xBF).contains(bytes[i + 1]) && cont(i + 2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF:
            return cont(i + 1) && cont(i + 2) ? 3 : 0
        case 0xED:
            return i + 2 < n && (0x80...0x9F).contains(bytes[i + 1]) && cont(i + 2) ? 3 : 0
        case 0xF0:
            return i + 3 < n && (0x90...0xBF).contains(bytes[i + 1]) && cont(i + 2) && cont(i + 3) ? 4 : 0
        case 0xF1...0xF3:
            return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0
        case 0xF4:
            return i + 3 < n && (0x80...0x8F).contains(bytes[i + 1]) && cont(i + 2) && cont(i + 3) ? 4 : 0
        default:
            return 0
        }
    }
}
