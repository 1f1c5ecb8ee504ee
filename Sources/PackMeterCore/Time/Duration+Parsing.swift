/// Durations on the command line: `72h`, `10m`, `5s`, `250ms`, `3d`, or sums like `1h30m`.
public enum DurationText {
    /// Milliseconds in `text`, or nil if it is not a duration.
    public static func milliseconds(_ text: String) -> Int64? {
        var total: Int64 = 0
        var bytes = Array(text.utf8)[...]
        guard !bytes.isEmpty else { return nil }
        while !bytes.isEmpty {
            var value: Int64 = 0
            var digits = 0
            while let b = bytes.first, b >= 48, b <= 57 {
                let (v1, o1) = value.multipliedReportingOverflow(by: 10)
                let (v2, o2) = v1.addingReportingOverflow(Int64(b - 48))
                if o1 || o2 { return nil }
                value = v2
                digits += 1
                bytes.removeFirst()
            }
            guard digits > 0 else { return nil }
            var unit: Int64
            if bytes.starts(with: "ms".utf8) {
                unit = 1; bytes.removeFirst(2)
            } else if let b = bytes.first {
                switch b {
                case UInt8(ascii: "s"): unit = 1000
                case UInt8(ascii: "m"): unit = 60_000
                case UInt8(ascii: "h"): unit = 3_600_000
                case UInt8(ascii: "d"): unit = 86_400_000
                default: return nil
                }
                bytes.removeFirst()
            } else {
                return nil
            }
            let (part, o1) = value.multipliedReportingOverflow(by: unit)
            let (sum, o2) = total.addingReportingOverflow(part)
            if o1 || o2 { return nil }
            total = sum
        }
        return total
    }

    /// The shortest text for `milliseconds` that `milliseconds(_:)` reads back.
    public static func format(milliseconds: Int64) -> String {
        if milliseconds == 0 { return "0s" }
        var rest = milliseconds
        var text = ""
        for (unit, suffix) in [(Int64(86_400_000), "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")] {
            if rest >= unit {
                text += "\(rest / unit)\(suffix)"
                rest %= unit
            }
        }
        return text
    }
}
