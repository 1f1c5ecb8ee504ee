/// Why a record is not valid JSON: the problem and the byte offset where it was found.
public struct JSONSyntaxError: Error, Sendable, CustomStringConvertible {
    public enum Problem: UInt8, Sendable {
        case unexpectedEnd
        case unexpectedCharacter
        case invalidEscape
        case loneSurrogate
        case controlCharacterInString
        case invalidUTF8
        case invalidNumber
        case tooDeep
        case trailingData
    }

    public var problem: Problem
    public var offset: Int
    public var found: UInt8

    public var description: String {
        let at = "at byte \(offset)"
        switch problem {
        case .unexpectedEnd: return "invalid JSON: input ends too early (\(at))"
        case .unexpectedCharacter: return "invalid JSON: unexpected \(Self.show(found)) \(at)"
        case .invalidEscape: return "invalid JSON: bad escape sequence in a string \(at)"
        case .loneSurrogate: return "invalid JSON: \\u escape is a lone UTF-16 surrogate \(at)"
        case .controlCharacterInString: return "invalid JSON: unescaped control character \(Self.show(found)) in a string \(at)"
        case .invalidUTF8: return "invalid JSON: bytes that are not UTF-8 \(at)"
        case .invalidNumber: return "invalid JSON: malformed number \(at)"
        case .tooDeep: return "invalid JSON: nested deeper than \(JSONScanner.depthMax) levels \(at)"
        case .trailingData: return "invalid JSON: data after the end of the object (\(Self.show(found)) \(at))"
        }
    }

    static func show(_ byte: UInt8) -> String {
        if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
        let hex = String(byte, radix: 16, uppercase: true)
        return "byte 0x\(hex.count == 1 ? "0" : "")\(hex)"
    }
}

/// A string token: the bytes between the quotes, and whether they contain escapes.
@usableFromInline
struct StringToken {
    var start: Int
    var end: Int
    var hasEscapes: Bool
}

/// A validating, allocation-free JSON tokenizer over a record's bytes (RFC 8259, strict:
/// UTF-8 only, no control characters in strings, no lone surrogates, no trailing data).
///
/// The event decoder drives it field by field; values it has no use for are skipped with
/// full validation, so a record is only accepted if the whole of it is JSON.
@usableFromInline
struct JSONScanner {
    static let depthMax = 4096

    @usableFromInline let base: UnsafePointer<UInt8>
    @usableFromInline let end: Int
    @usableFromInline var i: Int

    init(_ bytes: UnsafeRawBufferPointer) {
        // An empty buffer may have no base address; point at a static byte instead.
        base = bytes.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) } ?? JSONScanner.emptyBase
        end = bytes.count
        i = 0
    }

    nonisolated(unsafe) private static let emptyBase: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.initialize(to: 0)
        return UnsafePointer(p)
    }()

    @inline(__always) var atEnd: Bool { i >= end }

    @inline(__always) var current: UInt8 { base[i] }

    func error(_ problem: JSONSyntaxError.Problem, at offset: Int? = nil) -> JSONSyntaxError {
        let at = offset ?? i
        return JSONSyntaxError(problem: problem, offset: at, found: at < end ? base[at] : 0)
    }

    func unexpected() -> JSONSyntaxError {
        atEnd ? error(.unexpectedEnd) : error(.unexpectedCharacter)
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while i < end {
            let b = base[i]
            // Every byte that can start a token is above the space: one comparison for them.
            guard b <= 0x20, b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            i += 1
        }
    }

    @inline(__always)
    mutating func expect(_ byte: UInt8) throws(JSONSyntaxError) {
        guard i < end, base[i] == byte else { throw unexpected() }
        i += 1
    }

    /// Scans the string starting at the opening quote at `i`; leaves `i` after the closing one.
    @inline(always)
    mutating func scanString() throws(JSONSyntaxError) -> StringToken {
        assert(base[i] == 0x22)
        i += 1
        let start = i
        var hasEscapes = false
        while true {
            i = Self.firstSpecialByte(base, from: i, end: end)
            guard i < end else { throw error(.unexpectedEnd) }
            let b = base[i]
            if b == 0x22 {
                let token = StringToken(start: start, end: i, hasEscapes: hasEscapes)
                i += 1
                return token
            }
            if b == 0x5C {
                hasEscapes = true
                i += 1
                guard i < end else { throw error(.unexpectedEnd) }
                switch base[i] {
                case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:
                    i += 1
                case 0x75:
                    let unit = try hex4(at: i + 1)
                    i += 5
                    if unit >= 0xD800 && unit <= 0xDBFF {
                        guard i + 6 <= end, base[i] == 0x5C, base[i + 1] == 0x75 else {
                            throw error(.loneSurrogate, at: i - 6)
                        }
                        let low = try hex4(at: i + 2)
                        guard low >= 0xDC00 && low <= 0xDFFF else { throw error(.loneSurrogate, at: i) }
                        i += 6
                    } else if unit >= 0xDC00 && unit <= 0xDFFF {
                        throw error(.loneSurrogate, at: i - 6)
                    }
                default:
                    throw error(.invalidEscape)
                }
            } else if b < 0x20 {
                throw error(.controlCharacterInString)
            } else {
                // Not ASCII: `firstSpecialByte` stops at no other byte.
                let length = UTF8Validation.sequenceLength(UnsafeRawBufferPointer(start: base, count: end), at: i)
                guard length > 0 else { throw error(.invalidUTF8) }
                i += length
            }
        }
    }

    /// The index of the first special string byte (quote, backslash, control character or
    /// not ASCII) at or after `start`, or `end` if there is none: ordinary bytes are passed
    /// eight at a time, and only the last few (fewer than eight) one by one.
    @inline(__always)
    static func firstSpecialByte(_ base: UnsafePointer<UInt8>, from start: Int, end: Int) -> Int {
        var i = start
        while i + 8 <= end {
            let special = specialBytes(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self))
            if special != 0 { return i + (special.trailingZeroBitCount >> 3) }
            i += 8
        }
        while i < end {
            let b = base[i]
            if b == 0x22 || b == 0x5C || b < 0x20 || b >= 0x80 { return i }
            i += 1
        }
        return end
    }

    /// The high bit of each byte of `word` (little endian) that is `"`, `\`, below 0x20 or
    /// at least 0x80, and possibly of bytes after the first such one (a borrow carries
    /// upward): the lowest set bit always marks exactly the first special byte.
    @inline(__always)
    static func specialBytes(_ word: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let zeroQuote = (quote &- ones) & ~quote
        let zeroBackslash = (backslash &- ones) & ~backslash
        let below20 = (word &- ones &* 0x20) & ~word
        return ((zeroQuote | zeroBackslash | below20) & highs) | (word & highs)
    }

    @inline(__always)
    func hex4(at offset: Int) throws(JSONSyntaxError) -> UInt32 {
        guard offset + 4 <= end else { throw error(.unexpectedEnd) }
        var value: UInt32 = 0
        for k in 0..<4 {
            let c = base[offset + k]
            let digit: UInt8
            switch c {
            case 0x30...0x39: digit = c - 0x30
            case 0x41...0x46: digit = c - 0x41 + 10
            case 0x61...0x66: digit = c - 0x61 + 10
            default: throw error(.invalidEscape, at: offset + k)
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// Decodes the escaped string `token` (already validated) into `out`, returning the
    /// number of bytes written. `out` must hold at least `token.end - token.start` bytes.
    func unescape(_ token: StringToken, into out: UnsafeMutablePointer<UInt8>) -> Int {
        var r = token.start
        var w = 0
        while r < token.end {
            let b = base[r]
            if b != 0x5C {
                out[w] = b
                w += 1
                r += 1
                continue
            }
            let e = base[r + 1]
            r += 2
            switch e {
            case 0x62: out[w] = 0x08; w += 1
            case 0x66: out[w] = 0x0C; w += 1
            case 0x6E: out[w] = 0x0A; w += 1
            case 0x72: out[w] = 0x0D; w += 1
            case 0x74: out[w] = 0x09; w += 1
            case 0x75:
                var scalar = (try? hex4(at: r)) ?? 0xFFFD
                r += 4
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    let low = (try? hex4(at: r + 2)) ?? 0xDC00
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    r += 6
                }
                w += Self.encodeUTF8(scalar, into: out + w)
            default: out[w] = e; w += 1  // " \ /
            }
        }
        return w
    }

    static func encodeUTF8(_ scalar: UInt32, into out: UnsafeMutablePointer<UInt8>) -> Int {
        switch scalar {
        case 0..<0x80:
            out[0] = UInt8(scalar)
            return 1
        case 0x80..<0x800:
            out[0] = UInt8(0xC0 | (scalar >> 6))
            out[1] = UInt8(0x80 | (scalar & 0x3F))
            return 2
        case 0x800..<0x10000:
            out[0] = UInt8(0xE0 | (scalar >> 12))
            out[1] = UInt8(0x80 | ((scalar >> 6) & 0x3F))
            out[2] = UInt8(0x80 | (scalar & 0x3F))
            return 3
        default:
            out[0] = UInt8(0xF0 | (scalar >> 18))
            out[1] = UInt8(0x80 | ((scalar >> 12) & 0x3F))
            out[2] = UInt8(0x80 | ((scalar >> 6) & 0x3F))
            out[3] = UInt8(0x80 | (scalar & 0x3F))
            return 4
        }
    }

    /// Scans a number per the JSON grammar; returns whether it is an integer (no fraction,
    /// no exponent). `i` must be at `-` or a digit.
    @inline(__always)
    mutating func scanNumber() throws(JSONSyntaxError) -> (start: Int, isInteger: Bool) {
        let start = i
        if base[i] == 0x2D { i += 1 }
        guard i < end else { throw error(.unexpectedEnd) }
        if base[i] == 0x30 {
            i += 1
        } else if base[i] >= 0x31 && base[i] <= 0x39 {
            i += 1
            while i < end, base[i] &- 0x30 < 10 { i += 1 }
        } else {
            throw error(.invalidNumber)
        }
        var isInteger = true
        if i < end, base[i] == 0x2E {
            isInteger = false
            i += 1
            guard i < end, base[i] &- 0x30 < 10 else { throw error(.invalidNumber) }
            while i < end, base[i] &- 0x30 < 10 { i += 1 }
        }
        if i < end, base[i] == 0x65 || base[i] == 0x45 {
            isInteger = false
            i += 1
            if i < end, base[i] == 0x2B || base[i] == 0x2D { i += 1 }
            guard i < end, base[i] &- 0x30 < 10 else { throw error(.invalidNumber) }
            while i < end, base[i] &- 0x30 < 10 { i += 1 }
        }
        return (start, isInteger)
    }

    @inline(__always)
    mutating func scanLiteral(_ word: StaticString) throws(JSONSyntaxError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= end else { throw error(.unexpectedEnd) }
        let w = word.utf8Start
        for k in 0..<n where base[i + k] != w[k] {
            throw error(.unexpectedCharacter, at: i + k)
        }
        i += n
    }

    /// Skips one value of any kind, validating all of it. Nesting is tracked in a bit stack
    /// (one bit a level: object or array), not by recursion, so any record fits in bounded
    /// stack space.
    mutating func skipValue() throws(JSONSyntaxError) {
        var stack = DepthStack()
        outer: while true {
            // A value starts here.
            skipWhitespace()
            guard i < end else { throw error(.unexpectedEnd) }
            switch base[i] {
            case 0x7B:  // {
                i += 1
                skipWhitespace()
                if i < end, base[i] == 0x7D {
                    i += 1
                } else {
                    guard stack.push(isObject: true) else { throw error(.tooDeep) }
                    try scanKeyAndColon()
                    continue outer
                }
            case 0x5B:  // [
                i += 1
                skipWhitespace()
                if i < end, base[i] == 0x5D {
                    i += 1
                } else {
                    guard stack.push(isObject: false) else { throw error(.tooDeep) }
                    continue outer
                }
            case 0x22:
                _ = try scanString()
            case 0x2D, 0x30...0x39:
                _ = try scanNumber()
            case 0x74: try scanLiteral("true")
            case 0x66: try scanLiteral("false")
            case 0x6E: try scanLiteral("null")
            default:
                throw error(.unexpectedCharacter)
            }
            // After a value: close containers or move to the next element.
            while true {
                if stack.isEmpty { return }
                skipWhitespace()
                guard i < end else { throw error(.unexpectedEnd) }
                let b = base[i]
                if b == 0x2C {
                    i += 1
                    if stack.topIsObject { try scanKeyAndColon() }
                    continue outer
                }
                if (b == 0x7D && stack.topIsObject) || (b == 0x5D && !stack.topIsObject) {
                    i += 1
                    stack.pop()
                    continue
                }
                throw error(.unexpectedCharacter)
            }
        }
    }

    /// Scans `"key" :` inside an object.
    @inline(__always)
    mutating func scanKeyAndColon() throws(JSONSyntaxError) {
        skipWhitespace()
        guard i < end, base[i] == 0x22 else { throw unexpected() }
        _ = try scanString()
        skipWhitespace()
        try expect(0x3A)
    }
}

/// One bit per nesting level, `JSONScanner.depthMax` levels, on the stack.
struct DepthStack {
    private var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var overflow: [UInt64] = []
    private(set) var depth = 0

    var isEmpty: Bool { depth == 0 }

    mutating func push(isObject: Bool) -> Bool {
        guard depth < JSONScanner.depthMax else { return false }
        set(depth, isObject)
        depth += 1
        return true
    }

    mutating func pop() { depth -= 1 }

    var topIsObject: Bool { bit(at: depth - 1) }

    private func bit(at level: Int) -> Bool {
        let word = level >> 6
        let bit = UInt64(1) << UInt64(level & 63)
        if word < 8 {
            return withUnsafeBytes(of: words) { $0.load(fromByteOffset: word * 8, as: UInt64.self) } & bit != 0
        }
        return overflow[word - 8] & bit != 0
    }

    private mutating func set(_ level: Int, _ value: Bool) {
        let word = level >> 6
        let bit = UInt64(1) << UInt64(level & 63)
        if word < 8 {
            withUnsafeMutableBytes(of: &words) { raw in
                var w = raw.load(fromByteOffset: word * 8, as: UInt64.self)
                w = value ? w | bit : w & ~bit
                raw.storeBytes(of: w, toByteOffset: word * 8, as: UInt64.self)
            }
        } else {
            while overflow.count <= word - 8 { overflow.append(0) }
            overflow[word - 8] = value ? overflow[word - 8] | bit : overflow[word - 8] & ~bit
        }
    }
}
