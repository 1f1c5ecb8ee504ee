/// Reads the `source` of a record packmeter wrote (an overage record or a dead letter)
/// without parsing the whole record: the input topic, partition and offset it came from.
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
