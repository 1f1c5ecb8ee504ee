/// One output already in the output topics: the input offset it derives from, and which of
/// that record's outputs it is (0 for its overage record or dead letter; for a notice, a
/// hash of the notice's `id`, never 0).
public struct WrittenOutput: Hashable, Comparable, Sendable {
    public var offset: Int64
    public var identity: Int64

    public init(offset: Int64, identity: Int64 = 0) {
        self.offset = offset
        self.identity = identity
    }

    public static func < (a: WrittenOutput, b: WrittenOutput) -> Bool {
        (a.offset, a.identity) < (b.offset, b.identity)
    }
}

/// Reads the `source` of a record packmeter wrote (an overage record, a dead letter or a
/// notice) without parsing the whole record: the input topic, partition and offset it came
/// from.
///
/// The first `"source":{"topic":` in the bytes is the real one: inside a JSON string a quote
/// is always escaped, so that byte sequence cannot occur in any value before it.
public enum OutputSource {
    public struct Source: Equatable, Sendable {
        public var topic: String
        public var partition: Int32
        public var offset: Int64
    }

    static let marker = Array(#""source":{"topic":"#.utf8)

    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Source? {
        guard let start = find(marker, in: bytes) else { return nil }
        var s = JSONScanner(UnsafeRawBufferPointer(rebasing: bytes[(start + marker.count)...]))
        guard !s.atEnd, s.current == 0x22, let token = try? s.scanString() else { return nil }
        let topicLength = token.end - token.start
        let topic: String
        if token.hasEscapes {
            topic = String(unsafeUninitializedCapacity: max(topicLength, 1)) { s.unescape(token, into: $0.baseAddress!) }
        } else {
            topic = String(decoding: UnsafeRawBufferPointer(start: s.base + token.start, count: topicLength), as: UTF8.self)
        }
        guard expect(&s, ",\"partition\":"), let partition = integer(&s),
              expect(&s, ",\"offset\":"), let offset = integer(&s),
              partition >= 0, partition <= Int64(Int32.max)
        else { return nil }
        return Source(topic: topic, partition: Int32(partition), offset: offset)
    }

    private static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        let n = needle.count
        guard haystack.count >= n else { return nil }
        var i = 0
        while i <= haystack.count - n {
            if haystack[i] == needle[0] {
                var k = 1
                while k < n && haystack[i + k] == needle[k] { k += 1 }
                if k == n { return i }
            }
            i += 1
        }
        return nil
    }

    private static func expect(_ s: inout JSONScanner, _ text: StaticString) -> Bool {
        let n = text.utf8CodeUnitCount
        guard s.i + n <= s.end else { return false }
        for k in 0..<n where s.base[s.i + k] != text.utf8Start[k] { return false }
        s.i += n
        return true
    }

    private static func integer(_ s: inout JSONScanner) -> Int64? {
        var value: Int64 = 0
        var digits = 0
        while s.i < s.end, s.base[s.i] &- 48 < 10, digits < 19 {
            value = value * 10 + Int64(s.base[s.i] - 48)
            s.i += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}

extension OutputSource {
    static let noticePrefix = Array(#"{"v":1,"id":""#.utf8)

    /// A notice's identity among its record's outputs: a hash of the bytes of its `id`
    /// (as written, escapes included), never 0. Only for a notice: an overage record starts
    /// the same way, so the caller knows which it holds.
    public static func noticeIdentity(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        let n = noticePrefix.count
        guard bytes.count > n, bytes.prefix(n).elementsEqual(noticePrefix) else { return nil }
        var i = n
        while i < bytes.count {
            if bytes[i] == 0x5C { i += 2; continue }
            if bytes[i] == 0x22 { break }
            i += 1
        }
        guard i < bytes.count else { return nil }
        let hash = Fingerprint128(UnsafeRawBufferPointer(rebasing: bytes[n..<i])).low
        return Int64(bitPattern: (hash & 0x7FFF_FFFF_FFFF_FFFF) | 1)
    }
}
