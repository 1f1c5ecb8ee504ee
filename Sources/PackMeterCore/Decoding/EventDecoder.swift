/// Decodes usage events from a record's bytes in place, applying the checks of docs/contract.md
/// ("How one record is judged", checks 1 and 2) in the contract's order.
///
/// One pass validates the whole record as JSON and notes where each known field's value
/// is; unknown fields are skipped (still validated). Strings without escapes are never
/// copied; escaped ones are decoded into a scratch area owned by the decoder. No heap
/// allocation happens for a record that is accepted. Not thread-safe: one per shard.
public final class EventDecoder {
    public static let recordBytesMax = 65_536
    public static let idBytesMax = 128
    public static let accountBytesMax = 64
    public static let countRange: ClosedRange<Int64> = 1...1_000_000
    public static let quantityRange: ClosedRange<Int64> = 1...1_000_000_000

    public let catalog: Catalog
    public let calendar: BillingCalendar

    private let fields: UnsafeMutablePointer<RawField>
    /// Escaped strings of the records decoded since `beginBatch()`, back to back.
    private let scratch: UnsafeMutablePointer<UInt8>
    private var scratchUsed = 0
    /// Bytes of escaped strings the scratch area holds beyond one largest record.
    public static let scratchBatchBytes = 1 << 20
    static let scratchCapacity = scratchBatchBytes + recordBytesMax + 64
    private var base: UnsafePointer<UInt8> = JSONScannerBase.empty

    public init(catalog: Catalog, calendar: BillingCalendar) {
        self.catalog = catalog
        self.calendar = calendar
        fields = .allocate(capacity: Field.allCases.count)
        fields.initialize(repeating: RawField(), count: Field.allCases.count)
        scratch = .allocate(capacity: Self.scratchCapacity)
    }

    deinit {
        fields.deallocate()
        scratch.deallocate()
    }

    /// The fields the decoder knows. Any other field is ignored.
    enum Field: Int, CaseIterable {
        case type, id, account, ts, action, count, code, pack, quantity, effective, expires, purchase, reason

        var name: String {
            switch self {
            case .type: "type"
            case .id: "id"
            case .account: "account"
            case .ts: "ts"
            case .action: "action"
            case .count: "count"
            case .code: "code"
            case .pack: "pack"
            case .quantity: "quantity"
            case .effective: "effective"
            case .expires: "expires"
            case .purchase: "purchase"
            case .reason: "reason"
            }
        }
    }

    /// Where a field's value is. Offsets fit in 32 bits: records are at most
    /// `recordBytesMax` bytes and the scratch area about 1 MiB.
    struct RawField {
        enum Kind: UInt8 { case absent, null, string, integer, number, bool, object, array }
        var kind = Kind.absent
        var inScratch = false
        var start: Int32 = 0
        var length: Int32 = 0
    }

    // MARK: - Decoding

    /// Starts a batch: the byte fields of every event decoded from now on stay valid until
    /// the next `beginBatch()`, as long as `hasRoomForAnotherRecord` was true before each.
    public func beginBatch() { scratchUsed = 0 }

    /// Whether one more record of any size can be decoded in this batch.
    public var hasRoomForAnotherRecord: Bool { scratchUsed <= Self.scratchBatchBytes }

    /// Decodes `record` into `event`, or throws the first check that fails. `fullLength` is
    /// the record's true size when the caller kept only its head (an overlong line).
    public func decode(_ record: UnsafeRawBufferPointer, fullLength: Int? = nil, into event: inout DecodedEvent) throws(Rejection) {
        let length = fullLength ?? record.count
        guard length <= Self.recordBytesMax else {
            throw Rejection(.oversized, "record is \(length) bytes; the limit is \(Self.recordBytesMax)")
        }
        // Escaped strings need at most the record's size; a caller that decodes without
        // batches (one record at a time) gets the scratch area recycled here.
        if scratchUsed + record.count > Self.scratchCapacity { scratchUsed = 0 }
        do {
            try scan(record)
        } catch {
            throw Rejection(.malformedJSON, describe(error, in: record))
        }
        try judgeFields(&event)
    }

    private func describe(_ error: JSONSyntaxError, in record: UnsafeRawBufferPointer) -> String {
        if error.problem == .unexpectedCharacter || error.problem == .unexpectedEnd {
            // Say what the record is when it is valid JSON of another kind.
            var scanner = JSONScanner(record)
            scanner.skipWhitespace()
            if scanner.atEnd { return "the record is empty, not a JSON object" }
            if scanner.current != 0x7B {
                var probe = scanner
                if (try? probe.skipValue()) != nil {
                    probe.skipWhitespace()
                    if probe.atEnd { return "the record is \(Self.kindName(scanner.current)), not a JSON object" }
                }
            }
        }
        return error.description
    }

    private static func kindName(_ first: UInt8) -> String {
        switch first {
        case 0x5B: "a JSON array"
        case 0x22: "a JSON string"
        case 0x74, 0x66: "a JSON boolean"
        case 0x6E: "JSON null"
        default: "a JSON number"
        }
    }

    /// The hour of the last RFC 3339 time read (`ts`, `effective`, `expires`).
    private var hourCache = RFC3339HourCache()

    /// Whether `scan` tries `scanPlain` first. Off only in tests, which compare the two.
    var plainScanEnabled = true

    @inline(__always)
    private func clearFields() {
        for k in 0..<Field.allCases.count { fields[k] = RawField() }
    }

    /// Check 1: the whole record is one JSON object. Notes where the known fields are.
    @inline(__always)
    private func scan(_ record: UnsafeRawBufferPointer) throws(JSONSyntaxError) {
        clearFields()
        if plainScanEnabled {
            if scanPlain(record) { return }
            clearFields()
        }
        var s = JSONScanner(record)
        base = s.base
        s.skipWhitespace()
        try s.expect(0x7B)
        s.skipWhitespace()
        if !s.atEnd, s.current == 0x7D {
            s.i += 1
        } else {
            while true {
                s.skipWhitespace()
                guard !s.atEnd, s.current == 0x22 else { throw s.unexpected() }
                let keyToken = try s.scanString()
                let field: Field?
                if keyToken.hasEscapes {
                    let n = s.unescape(keyToken, into: scratch + scratchUsed)
                    field = Self.field(named: UnsafePointer(scratch + scratchUsed), n)
                } else {
                    field = Self.field(named: s.base + keyToken.start, keyToken.end - keyToken.start)
                }
                s.skipWhitespace()
                try s.expect(0x3A)
                s.skipWhitespace()
                guard !s.atEnd else { throw s.error(.unexpectedEnd) }
                if let field {
                    fields[field.rawValue] = try scanKnownValue(&s)
                } else {
                    try s.skipValue()
                }
                s.skipWhitespace()
                guard !s.atEnd else { throw s.error(.unexpectedEnd) }
                if s.current == 0x2C { s.i += 1; continue }
                if s.current == 0x7D { s.i += 1; break }
                throw s.error(.unexpectedCharacter)
            }
        }
        s.skipWhitespace()
        guard s.atEnd else { throw s.error(.trailingData) }
    }

    /// The shortcut for the records nearly every producer writes: an object of known keys
    /// whose values are plain strings (ASCII, no escapes) or integers, without whitespace.
    /// It notes the fields the full scan would note and returns true, or returns false at
    /// the first byte outside that shape and leaves the record to the full scan (which then
    /// also finds any error): it accepts nothing the full scan rejects. It is faster for
    /// having no whitespace to skip between tokens and no kind of value to dispatch on.
    func scanPlain(_ record: UnsafeRawBufferPointer) -> Bool {
        guard let p = record.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
        let end = record.count
        guard end >= 2, p[0] == 0x7B, p[1] == 0x22 else { return false }
        base = p
        var i = 1
        while true {
            // `i` is at a key's opening quote.
            guard let keyEnd = Self.plainStringEnd(p, from: i + 1, end: end),
                  let field = Self.field(named: p + i + 1, keyEnd - i - 1)
            else { return false }
            i = keyEnd + 1
            guard i + 1 < end, p[i] == 0x3A else { return false }
            i += 1
            let first = p[i]
            if first == 0x22 {
                guard let valueEnd = Self.plainStringEnd(p, from: i + 1, end: end) else { return false }
                fields[field.rawValue] = RawField(kind: .string, inScratch: false, start: Int32(truncatingIfNeeded: i + 1),
                                                  length: Int32(truncatingIfNeeded: valueEnd - i - 1))
                i = valueEnd + 1
            } else if first &- 0x30 < 10 {
                // `0`, or a digit 1-9 and more digits; what follows must end the value.
                let start = i
                i += 1
                if first != 0x30 { while i < end, p[i] &- 0x30 < 10 { i += 1 } }
                fields[field.rawValue] = RawField(kind: .integer, inScratch: false, start: Int32(truncatingIfNeeded: start),
                                                  length: Int32(truncatingIfNeeded: i - start))
            } else {
                return false
            }
            guard i < end else { return false }
            if p[i] == 0x2C {
                i += 1
                guard i < end, p[i] == 0x22 else { return false }
                continue
            }
            return p[i] == 0x7D && i + 1 == end
        }
    }

    /// Where the plain string whose bytes start at `start` ends (its closing quote), or nil
    /// if a backslash, a control character or a byte that is not ASCII comes first, or the
    /// record ends. Read as `JSONScanner.scanString` reads.
    @inline(__always)
    private static func plainStringEnd(_ p: UnsafePointer<UInt8>, from start: Int, end: Int) -> Int? {
        let i = JSONScanner.firstSpecialByte(p, from: start, end: end)
        return i < end && p[i] == 0x22 ? i : nil
    }

    // `always`: as a call it would keep the scanner's position in memory, loaded and stored
    // around every byte it looks at; inlined, the position stays in a register.
    @inline(always)
    private func scanKnownValue(_ s: inout JSONScanner) throws(JSONSyntaxError) -> RawField {
        switch s.current {
        case 0x22:
            let token = try s.scanString()
            if token.hasEscapes {
                let n = s.unescape(token, into: scratch + scratchUsed)
                defer { scratchUsed += n }
                return RawField(kind: .string, inScratch: true, start: Int32(scratchUsed), length: Int32(n))
            }
            return RawField(kind: .string, inScratch: false, start: Int32(truncatingIfNeeded: token.start),
                            length: Int32(truncatingIfNeeded: token.end &- token.start))
        case 0x2D, 0x30...0x39:
            let (start, isInteger) = try s.scanNumber()
            return RawField(kind: isInteger ? .integer : .number, inScratch: false, start: Int32(truncatingIfNeeded: start),
                            length: Int32(truncatingIfNeeded: s.i &- start))
        case 0x6E:
            try s.scanLiteral("null")
            return RawField(kind: .null)
        case 0x74, 0x66:
            try s.skipValue()
            return RawField(kind: .bool)
        case 0x7B:
            try s.skipValue()
            return RawField(kind: .object)
        case 0x5B:
            try s.skipValue()
            return RawField(kind: .array)
        default:
            throw s.error(.unexpectedCharacter)
        }
    }

    @inline(always)
    private static func field(named p: UnsafePointer<UInt8>, _ n: Int) -> Field? {
        @inline(__always) func equals(_ word: StaticString) -> Bool {
            bytesEqual(UnsafeRawPointer(p), UnsafeRawPointer(word.utf8Start), n)
        }
        switch n {
        case 2:
            if equals("id") { return .id }
            if equals("ts") { return .ts }
        case 4:
            if equals("type") { return .type }
            if equals("code") { return .code }
            if equals("pack") { return .pack }
        case 5:
            if equals("count") { return .count }
        case 6:
            if equals("action") { return .action }
            if equals("reason") { return .reason }
        case 7:
            if equals("account") { return .account }
            if equals("expires") { return .expires }
        case 8:
            if equals("quantity") { return .quantity }
            if equals("purchase") { return .purchase }
        case 9:
            if equals("effective") { return .effective }
        default:
            break
        }
        return nil
    }

    // MARK: - Check 2: fields

    @inline(__always)
    private func raw(_ field: Field) -> RawField { fields[field.rawValue] }

    @inline(__always)
    private func bytes(_ f: RawField) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: f.inScratch ? UnsafeRawPointer(scratch + Int(f.start)) : UnsafeRawPointer(base + Int(f.start)),
                               count: Int(f.length))
    }

    @inline(__always)
    private func isPresent(_ field: Field) -> Bool {
        let kind = fields[field.rawValue].kind
        return kind != .absent && kind != .null
    }

    private func judgeFields(_ event: inout DecodedEvent) throws(Rejection) {
        // The type decides which fields are required; an unknown type is reported after
        // missing and invalid fields (docs/contract.md check 2 order).
        var type: EventType? = .call
        let typeField = raw(.type)
        if typeField.kind == .string {
            type = Self.eventType(bytes(typeField))
        } else if typeField.kind != .absent && typeField.kind != .null {
            type = nil
        }

        // Missing required fields.
        if !isPresent(.id) { throw missing(.id, type: nil) }
        if !isPresent(.account) { throw missing(.account, type: nil) }
        if !isPresent(.ts) { throw missing(.ts, type: nil) }
        if let type {
            switch type {
            case .call:
                if !isPresent(.action) { throw missing(.action, type: type) }
            case .purchase:
                if !isPresent(.pack) { throw missing(.pack, type: type) }
                if !isPresent(.quantity) { throw missing(.quantity, type: type) }
            case .refund:
                if !isPresent(.purchase) { throw missing(.purchase, type: type) }
            case .suspend:
                if !isPresent(.reason) { throw missing(.reason, type: type) }
            case .resume:
                break
            }
        }

        // Invalid fields: common ones, then the type's own.
        if typeField.kind != .absent && typeField.kind != .null && typeField.kind != .string {
            throw invalid("'type' must be a string, not \(Self.kindName(typeField.kind))")
        }
        event.id = try boundedString(.id, maxBytes: Self.idBytesMax)
        event.account = try boundedString(.account, maxBytes: Self.accountBytesMax)
        event.ts = try timestamp(.ts)
        guard calendar.supportedRange.contains(event.ts) else {
            throw invalid("'ts' \(show(raw(.ts))) is outside the supported years \(BillingCalendar.firstYear)–\(BillingCalendar.lastYear)")
        }
        guard let type else {
            throw Rejection(.unknownType, "type \(show(typeField)) is not one of call, purchase, refund, suspend, resume")
        }
        event.type = type
        switch type {
        case .call:
            let actionName = try boundedString(.action, maxBytes: Self.recordBytesMax)
            event.count = 1
            if isPresent(.count) {
                event.count = UInt32(try integer(.count, in: Self.countRange))
            }
            event.billable = true
            if isPresent(.code) {
                let code = raw(.code)
                guard code.kind == .string else { throw invalid("'code' must be a string, not \(Self.kindName(code.kind))") }
                let text = bytes(code)
                if text.count > 0 && !Self.isSuccess(text) {
                    event.billable = catalog.isBillableErrorCode(text)
                }
            }
            guard let action = catalog.action(named: actionName) else {
                throw Rejection(.unknownAction, "action \(show(raw(.action))) is not in the catalog")
            }
            event.action = action
            event.pack = catalog.pack(of: action)
        case .purchase:
            let packName = try boundedString(.pack, maxBytes: Self.recordBytesMax)
            event.quantity = UInt32(try integer(.quantity, in: Self.quantityRange))
            event.effective = isPresent(.effective) ? try timestamp(.effective) : event.ts
            if isPresent(.expires) {
                event.expires = try timestamp(.expires)
                guard event.effective < event.expires else {
                    throw invalid("'expires' \(show(raw(.expires))) is not after 'effective' \(calendar.formatTimestamp(event.effective))")
                }
            } else {
                event.expires = calendar.oneYearAfter(event.effective)
            }
            guard let pack = catalog.pack(withID: packName) else {
                throw Rejection(.unknownPack, "pack \(show(raw(.pack))) is not in the catalog")
            }
            event.pack = pack
        case .refund:
            event.purchase = try boundedString(.purchase, maxBytes: Self.idBytesMax)
        case .suspend:
            let reason = try boundedString(.reason, maxBytes: 64)
            if bytesEqual(reason, "arrears") {
                event.reason = .arrears
            } else if bytesEqual(reason, "violation") {
                event.reason = .violation
            } else {
                throw invalid("'reason' must be 'arrears' or 'violation', not \(show(raw(.reason)))")
            }
        case .resume:
            break
        }
    }

    @inline(__always)
    private static func eventType(_ b: UnsafeRawBufferPointer) -> EventType? {
        switch b.count {
        case 4 where bytesEqual(b, "call"): .call
        case 6 where bytesEqual(b, "refund"): .refund
        case 6 where bytesEqual(b, "resume"): .resume
        case 7 where bytesEqual(b, "suspend"): .suspend
        case 8 where bytesEqual(b, "purchase"): .purchase
        default: nil
        }
    }

    @inline(__always)
    private static func isSuccess(_ b: UnsafeRawBufferPointer) -> Bool {
        b.count == 7 && bytesEqual(b, "Success")
    }

    @inline(__always)
    private func boundedString(_ field: Field, maxBytes: Int) throws(Rejection) -> UnsafeRawBufferPointer {
        let f = raw(field)
        guard f.kind == .string else {
            throw invalid("'\(field.name)' must be a string, not \(Self.kindName(f.kind))")
        }
        guard f.length > 0 else { throw invalid("'\(field.name)' is empty") }
        guard f.length <= maxBytes else {
            throw invalid("'\(field.name)' is \(f.length) bytes; at most \(maxBytes) are allowed")
        }
        return bytes(f)
    }

    @inline(__always)
    private func integer(_ field: Field, in range: ClosedRange<Int64>) throws(Rejection) -> Int64 {
        let f = raw(field)
        if f.kind == .integer, let value = Self.parseInteger(bytes(f)), range.contains(value) {
            return value
        }
        let found = f.kind == .integer || f.kind == .number ? show(f) : Self.kindName(f.kind)
        throw invalid("'\(field.name)' must be an integer from \(range.lowerBound) to \(range.upperBound), not \(found)")
    }

    @inline(__always)
    private func timestamp(_ field: Field) throws(Rejection) -> Int64 {
        let f = raw(field)
        switch f.kind {
        case .string:
            if let ms = Timestamp.parseRFC3339(bytes(f), cache: &hourCache) { return ms }
            throw invalid("'\(field.name)' \(show(f)) is not an RFC 3339 time with an offset (2026-11-03T10:00:00+08:00)")
        case .integer:
            if let ms = Self.parseInteger(bytes(f)) { return ms }
            throw invalid("'\(field.name)' \(show(f)) is out of range for epoch milliseconds")
        default:
            throw invalid("'\(field.name)' must be an RFC 3339 string or integer epoch milliseconds, not \(f.kind == .number ? show(f) : Self.kindName(f.kind))")
        }
    }

    /// A JSON integer's digits as Int64, or nil on overflow.
    @inline(__always)
    static func parseInteger(_ b: UnsafeRawBufferPointer) -> Int64? {
        var i = 0
        let negative = b[0] == 0x2D
        if negative { i = 1 }
        guard b.count - i <= 19 else { return nil }
        var value: Int64 = 0
        while i < b.count {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(b[i] &- 48))
            if o1 || o2 { return nil }
            value = a
            i += 1
        }
        return negative ? -value : value
    }

    // MARK: - Messages (rejection path only)

    private func missing(_ field: Field, type: EventType?) -> Rejection {
        let absent = raw(field).kind == .null ? "is null" : "is missing"
        if let type {
            return Rejection(.missingField, "a \(type.name) needs '\(field.name)', which \(absent)")
        }
        return Rejection(.missingField, "required field '\(field.name)' \(absent)")
    }

    private func invalid(_ detail: String) -> Rejection { Rejection(.invalidField, detail) }

    private static func kindName(_ kind: RawField.Kind) -> String {
        switch kind {
        case .absent: "absent"
        case .null: "null"
        case .string: "a string"
        case .integer, .number: "a number"
        case .bool: "a boolean"
        case .object: "an object"
        case .array: "an array"
        }
    }

    /// A field's value for a message: strings quoted and cut at 80 bytes.
    private func show(_ f: RawField) -> String {
        let b = bytes(f)
        let cut = UnsafeRawBufferPointer(rebasing: b[0..<min(b.count, 80)])
        let text = String(decoding: cut, as: UTF8.self) + (b.count > 80 ? "…" : "")
        return f.kind == .string ? "'\(text)'" : text
    }
}

enum JSONScannerBase {
    nonisolated(unsafe) static let empty: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.initialize(to: 0)
        return UnsafePointer(p)
    }()
}

@inline(__always)
func bytesEqual(_ b: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
    b.count == word.utf8CodeUnitCount && (b.count == 0 || bytesEqual(b.baseAddress!, UnsafeRawPointer(word.utf8Start), b.count))
}
