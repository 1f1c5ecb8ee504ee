/// A calendar month in the billing time zone (docs/rules.md §1, §5): the unit of the free grant.
///
/// Stored as `year * 12 + (month - 1)` so that consecutive months are consecutive integers.
@frozen
public struct BillingMonth: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    @inlinable
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public init(year: Int, month: Int) {
        precondition((1...12).contains(month))
        rawValue = Int32(year * 12 + month - 1)
    }

    public var year: Int { Int(rawValue) / 12 }
    public var month: Int { Int(rawValue) % 12 + 1 }

    public var next: BillingMonth { BillingMonth(rawValue: rawValue + 1) }

    public static func < (a: BillingMonth, b: BillingMonth) -> Bool { a.rawValue < b.rawValue }

    /// `YYYY-MM`, as in output records.
    public var description: String {
        let m = month
        return "\(year)-\(m < 10 ? "0" : "")\(m)"
    }

    /// Parses `YYYY-MM`.
    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              let y = Int(parts[0]), let m = Int(parts[1]), (1...12).contains(m)
        else { return nil }
        self.init(year: y, month: m)
    }

    func write(to out: ByteWriter) {
        out.append(padded: year, width: 4)
        out.append(UInt8(ascii: "-"))
        out.append(padded: month, width: 2)
    }
}
