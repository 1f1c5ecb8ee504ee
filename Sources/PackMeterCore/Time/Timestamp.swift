/// RFC 3339 timestamps and epoch milliseconds, read from and written to bytes.
public enum Timestamp {
    /// Parses RFC 3339 with a `Z` or `±HH:MM` offset and optional fractional seconds (kept to
    /// the millisecond, truncated), e.g. `2026-11-03T10:00:00.123+08:00`. Returns epoch ms.
    public static func parseRFC3339(_ s: UnsafeRawBufferPointer) -> Int64? {
        let n = s.count
        guard n >= 20 else { return nil }
        @inline(__always) func digit(_ i: Int) -> Int? {
            let b = s[i] &- 48
            return b < 10 ? Int(b) : nil
        }
        @inline(__always) func two(_ i: Int) -> Int? {
            guard let a = digit(i), let b = digit(i + 1) else { return nil }
            return a * 10 + b
        }
        guard let y1 = two(0), let y2 = two(2), s[4] == 0x2D,
              let month = two(5), s[7] == 0x2D, let day = two(8),
              s[10] == 0x54 || s[10] == 0x74 || s[10] == 0x20,
              let hour = two(11), s[13] == 0x3A, let minute = two(14), s[16] == 0x3A,
              let second = two(17)
        else { return nil }
        let year = y1 * 100 + y2
        guard (1...12).contains(month), day >= 1, day <= Civil.daysInMonth(year: year, month: month),
              hour <= 23, minute <= 59, second <= 59
        else { return nil }
        var i = 19
        var millis = 0
        if s[i] == 0x2E {
            i += 1
            var digits = 0
            while i < n, let d = digit(i) {
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
            guard i + 6 == n, let oh = two(i + 1), s[i + 3] == 0x3A, let om = two(i + 4),
                  oh <= 23, om <= 59
            else { return nil }
            offsetMinutes = (oh * 60 + om) * (s[i] == 0x2D ? -1 : 1)
            i += 6
        default:
            return nil
        }
        guard i == n else { return nil }
        let days = Int64(Civil.days(year: year, month: month, day: day))
        let seconds = days * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetMinutes * 60)
        return seconds * 1000 + Int64(millis)
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
        out.append(padded: date.year, width: 4)
        out.append(UInt8(ascii: "-"))
        out.append(padded: date.month, width: 2)
        out.append(UInt8(ascii: "-"))
        out.append(padded: date.day, width: 2)
        out.append(UInt8(ascii: "T"))
        out.append(padded: hour, width: 2)
        out.append(UInt8(ascii: ":"))
        out.append(padded: minute, width: 2)
        out.append(UInt8(ascii: ":"))
        out.append(padded: second, width: 2)
        out.append(UInt8(ascii: "."))
        out.append(padded: millis, width: 3)
        if offsetMinutes == 0 {
            out.append(UInt8(ascii: "Z"))
        } else {
            out.append(UInt8(ascii: offsetMinutes < 0 ? "-" : "+"))
            let magnitude = abs(offsetMinutes)
            out.append(padded: magnitude / 60, width: 2)
            out.append(UInt8(ascii: ":"))
            out.append(padded: magnitude % 60, width: 2)
        }
    }

    public static func format(_ instant: Int64, offsetMinutes: Int = 0) -> String {
        let out = ByteWriter(capacity: 64)
        write(instant, offsetMinutes: offsetMinutes, to: out)
        return out.string
    }
}
