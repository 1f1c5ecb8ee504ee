/// RFC 3339 timestamps and epoch milliseconds, read from and written to bytes.
public enum Timestamp {
    /// Parses RFC 3339 with a `Z` or `±HH:MM` offset and optional fractional seconds (kept to
    /// the millisecond, truncated), e.g. `2026-11-03T10:00:00.123+08:00`. Returns epoch ms.
    public static func parseRFC3339(_ s: UnsafeRawBufferPointer) -> Int64? {
        guard s.count >= 20, let hour = hourStart(s) else { return nil }
        return withinHour(s, hourStart: hour)
    }

    /// The same, remembering in `cache` the hour (`YYYY-MM-DDTHH`) of the last time parsed
    /// with it: a time of that same hour, as most of a stream's next times are, is only
    /// read from its minutes on, and its date's checks and day count are skipped.
    public static func parseRFC3339(_ s: UnsafeRawBufferPointer, cache: inout RFC3339HourCache) -> Int64? {
        guard s.count >= 20, let p = s.baseAddress else { return nil }
        let head = p.loadUnaligned(as: UInt64.self)
        let hourBytes = p.loadUnaligned(fromByteOffset: 5, as: UInt64.self)
        if let hour = cache.hourStart, head == cache.head, hourBytes == cache.hourBytes {
            return withinHour(s, hourStart: hour)
        }
        guard let hour = hourStart(s), let ms = withinHour(s, hourStart: hour) else { return nil }
        cache = RFC3339HourCache(head: head, hourBytes: hourBytes, hourStart: hour)
        return ms
    }

    /// Seconds from the epoch to the start of the hour that bytes 0..<13 (`YYYY-MM-DDTHH`,
    /// at least 20 bytes given) name, read as UTC; nil unless they are a valid date and hour.
    /// Bytes 0-7 (`YYYY-MM-`) are checked eight at a time, 8-12 one by one.
    @inline(__always)
    private static func hourStart(_ s: UnsafeRawBufferPointer) -> Int64? {
        let date = UInt64(littleEndian: s.baseAddress!.loadUnaligned(as: UInt64.self))
        guard Self.matches(date, digits: 0x00FF_FF00_FFFF_FFFF, separators: 0x2D00_002D_0000_0000),
              let day = twoDigits(s, 8), s[10] == 0x54 || s[10] == 0x74 || s[10] == 0x20,
              let hour = twoDigits(s, 11), hour <= 23
        else { return nil }
        let d = date &- 0x0030_3000_3030_3030  // digit bytes become their values
        @inline(__always) func byte(_ k: UInt64) -> Int { Int(truncatingIfNeeded: (d &>> (8 * k)) & 0xFF) }
        let year = byte(0) * 1000 + byte(1) * 100 + byte(2) * 10 + byte(3)
        let month = byte(5) * 10 + byte(6)
        guard (1...12).contains(month), day >= 1, day <= Civil.daysInMonth(year: year, month: month) else { return nil }
        return Int64(Civil.days(year: year, month: month, day: day)) * 86_400 + Int64(hour * 3600)
    }

    /// The rest of a time from byte 13 (`:MM:SS`, fraction, offset; at least 20 bytes
    /// given) added to its hour's start; nil unless the rest is valid. Bytes 13-18 are
    /// checked eight at a time, with the hour's two bytes masked out.
    @inline(__always)
    private static func withinHour(_ s: UnsafeRawBufferPointer, hourStart: Int64) -> Int64? {
        let n = s.count
        let time = UInt64(littleEndian: s.baseAddress!.loadUnaligned(fromByteOffset: 11, as: UInt64.self)) & 0xFFFF_FFFF_FFFF_0000
        guard Self.matches(time, digits: 0xFFFF_00FF_FF00_0000, separators: 0x0000_3A00_003A_0000) else { return nil }
        let t = time &- 0x3030_0030_3000_0000
        @inline(__always) func byte(_ k: UInt64) -> Int { Int(truncatingIfNeeded: (t &>> (8 * k)) & 0xFF) }
        let minute = byte(3) * 10 + byte(4)
        let second = byte(6) * 10 + byte(7)
        guard minute <= 59, second <= 59 else { return nil }
        var i = 19
        var millis = 0
        if s[i] == 0x2E {
            i += 1
            var digits = 0
            while i < n, let d = digit(s, i) {
                if digits < 3 { millis = millis * 10 + d }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            if digits == 1 { millis *= 100 } else if digits == 2 { millis *= 10 }
        }
        guard i < n else { return nil }
        var offsetMinutes = 0
        switch s[i] {
        case 0x5A, 0x7A:  // Z z
            i += 1
        case 0x2B, 0x2D:  // + -
            guard i + 6 == n, let oh = twoDigits(s, i + 1), s[i + 3] == 0x3A, let om = twoDigits(s, i + 4),
                  oh <= 23, om <= 59
            else { return nil }
            offsetMinutes = (oh * 60 + om) * (s[i] == 0x2D ? -1 : 1)
            i += 6
        default:
            return nil
        }
        guard i == n else { return nil }
        let seconds = hourStart + Int64(minute * 60 + second) - Int64(offsetMinutes * 60)
        return seconds * 1000 + Int64(millis)
    }

    @inline(__always)
    private static func digit(_ s: UnsafeRawBufferPointer, _ i: Int) -> Int? {
        let b = s[i] &- 48
        return b < 10 ? Int(b) : nil
    }

    @inline(__always)
    private static func twoDigits(_ s: UnsafeRawBufferPointer, _ i: Int) -> Int? {
        guard let a = digit(s, i), let b = digit(s, i + 1) else { return nil }
        return a * 10 + b
    }

    /// Whether the bytes of `word` (first byte lowest) under `digits` are ASCII digits and
    /// the others equal those of `separators`. A digit's high nibble is 3 and adding 6 to it
    /// leaves it 3; once every byte under the mask has high nibble 3, adding 6 carries
    /// into no other byte.
    @inline(__always)
    static func matches(_ word: UInt64, digits mask: UInt64, separators: UInt64) -> Bool {
        let highNibbles = 0xF0F0_F0F0_F0F0_F0F0 & mask
        let threes = 0x3030_3030_3030_3030 & mask
        return word & ~mask == separators
            && word & highNibbles == threes
            && (word &+ (0x0606_0606_0606_0606 & mask)) & highNibbles == threes
    }

    public static func parseRFC3339(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { parseRFC3339(UnsafeRawBufferPointer($0)) }
    }

    /// Writes `instant` as `YYYY-MM-DDTHH:MM:SS.mmm±HH:MM` (or `Z` for a zero offset).
    public static func write(_ instant: Int64, offsetMinutes: Int, to out: ByteWriter) {
        let local = instant + Int64(offsetMinutes) * 60_000
        let days = Civil.floorDiv(local, Civil.millisecondsPerDay)
        var rest = Int(local - days * Civil.millisecondsPerDay)
        let date = Civil.date(days: Int(days))
        let millis = rest % 1000; rest /= 1000
        let second = rest % 60; rest /= 60
        let minute = rest % 60
        let hour = rest / 60
        // Stored straight into the buffer (29 bytes at most) rather than appended piece by
        // piece, each field its last digits as `append(padded:width:)` writes them.
        out.appendDirect(maximum: 29) { p in
            @inline(__always) func put(_ value: Int, _ width: Int, at i: Int) { ByteWriter.writeDigits(value, width: width, to: p + i) }
            put(date.year, 4, at: 0)
            p[4] = UInt8(ascii: "-"); put(date.month, 2, at: 5)
            p[7] = UInt8(ascii: "-"); put(date.day, 2, at: 8)
            p[10] = UInt8(ascii: "T"); put(hour, 2, at: 11)
            p[13] = UInt8(ascii: ":"); put(minute, 2, at: 14)
            p[16] = UInt8(ascii: ":"); put(second, 2, at: 17)
            p[19] = UInt8(ascii: "."); put(millis, 3, at: 20)
            if offsetMinutes == 0 {
                p[23] = UInt8(ascii: "Z")
                return 24
            }
            let magnitude = abs(offsetMinutes)
            p[23] = UInt8(ascii: offsetMinutes < 0 ? "-" : "+"); put(magnitude / 60, 2, at: 24)
            p[26] = UInt8(ascii: ":"); put(magnitude % 60, 2, at: 27)
            return 29
        }
    }

    public static func format(_ instant: Int64, offsetMinutes: Int = 0) -> String {
        let out = ByteWriter(capacity: 64)
        write(instant, offsetMinutes: offsetMinutes, to: out)
        return out.string
    }
}

/// The hour of the last valid RFC 3339 time `Timestamp.parseRFC3339(_:cache:)` parsed:
/// its first 13 bytes (as two overlapping words) and the hour's start (nil: none yet).
public struct RFC3339HourCache {
    var head: UInt64 = 0
    var hourBytes: UInt64 = 0
    var hourStart: Int64?

    public init() {}

    init(head: UInt64, hourBytes: UInt64, hourStart: Int64) {
        self.head = head
        self.hourBytes = hourBytes
        self.hourStart = hourStart
    }
}
