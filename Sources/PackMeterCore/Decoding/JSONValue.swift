/// A parsed JSON document, for configuration (the catalog) and for reading packmeter's own
/// output back in tests and tools. Not used on the hot path: events are decoded in place.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's text as it appeared, so integers of any size survive.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; a repeated key keeps every occurrence.
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONSyntaxError) -> JSONValue {
        var scanner = JSONScanner(bytes)
        let value = try parseValue(&scanner, depth: 0)
        scanner.skipWhitespace()
        guard scanner.atEnd else { throw scanner.error(.trailingData) }
        return value
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        let result: Result<JSONValue, JSONSyntaxError> = bytes.withUnsafeBytes { raw in
            Result { () throws(JSONSyntaxError) in try parse(raw) }
        }
        return try result.get()
    }

    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    private static func parseValue(_ s: inout JSONScanner, depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard depth < 512 else { throw s.error(.tooDeep) }
        s.skipWhitespace()
        guard !s.atEnd else { throw s.error(.unexpectedEnd) }
        switch s.current {
        case 0x7B:
            s.i += 1
            var members: [(String, JSONValue)] = []
            s.skipWhitespace()
            if !s.atEnd, s.current == 0x7D { s.i += 1; return .object(members) }
            while true {
                s.skipWhitespace()
                guard !s.atEnd, s.current == 0x22 else { throw s.unexpected() }
                let key = try stringValue(&s)
                s.skipWhitespace()
                try s.expect(0x3A)
                members.append((key, try parseValue(&s, depth: depth + 1)))
                s.skipWhitespace()
                guard !s.atEnd else { throw s.error(.unexpectedEnd) }
                if s.current == 0x2C { s.i += 1; continue }
                if s.current == 0x7D { s.i += 1; return .object(members) }
                throw s.error(.unexpectedCharacter)
            }
        case 0x5B:
            s.i += 1
            var elements: [JSONValue] = []
            s.skipWhitespace()
            if !s.atEnd, s.current == 0x5D { s.i += 1; return .array(elements) }
            while true {
                elements.append(try parseValue(&s, depth: depth + 1))
                s.skipWhitespace()
                guard !s.atEnd else { throw s.error(.unexpectedEnd) }
                if s.current == 0x2C { s.i += 1; continue }
                if s.current == 0x5D { s.i += 1; return .array(elements) }
                throw s.error(.unexpectedCharacter)
            }
        case 0x22:
            return .string(try stringValue(&s))
        case 0x2D, 0x30...0x39:
            let (start, _) = try s.scanNumber()
            return .number(String(decoding: UnsafeRawBufferPointer(start: s.base + start, count: s.i - start), as: UTF8.self))
        case 0x74: try s.scanLiteral("true"); return .bool(true)
        case 0x66: try s.scanLiteral("false"); return .bool(false)
        case 0x6E: try s.scanLiteral("null"); return .null
        default:
            throw s.error(.unexpectedCharacter)
        }
    }

    private static func stringValue(_ s: inout JSONScanner) throws(JSONSyntaxError) -> String {
        let token = try s.scanString()
        let length = token.end - token.start
        if !token.hasEscapes {
            return String(decoding: UnsafeRawBufferPointer(start: s.base + token.start, count: length), as: UTF8.self)
        }
        let scanner = s
        return String(unsafeUninitializedCapacity: max(length, 1)) { buffer in
            scanner.unescape(token, into: buffer.baseAddress!)
        }
    }

    // MARK: - Access

    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.last { $0.0 == key }?.1
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    public var intValue: Int64? {
        if case let .number(n) = self { return Int64(n) }
        return nil
    }

    public var boolValue: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case let .array(a) = self { return a }
        return nil
    }

    public var objectMembers: [(String, JSONValue)]? {
        if case let .object(m) = self { return m }
        return nil
    }

    /// The value's kind in words, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
