import Foundation

/// The billing time zone's months and UTC offsets, precomputed once for years 1970–2199.
///
/// docs/rules.md §5: a call belongs to the month of its own `ts` in the billing time zone
/// (`Asia/Shanghai` by default), never to the month of processing. Foundation's zone data is
/// consulted only here, at start; afterwards bucketing a timestamp is two array reads and
/// formatting one is a binary search over the zone's offset changes.
public struct BillingCalendar: Sendable {
    public static let firstYear = 1970
    public static let lastYear = 2199

    public let timeZoneIdentifier: String
    /// `monthStarts[i]` is the first instant (epoch ms) of month `firstMonth + i`; the array
    /// has one extra entry, the end of the last month.
    let monthStarts: [Int64]
    let firstMonth: BillingMonth
    /// Offset changes: from `offsetChangeInstants[i]` on the offset is `offsetSeconds[i + 1]`;
    /// before the first change it is `offsetSeconds[0]`.
    let offsetChangeInstants: [Int64]
    let offsetSeconds: [Int32]

    public struct UnknownTimeZone: Error, CustomStringConvertible {
        public let identifier: String
        public var description: String { "unknown time zone '\(identifier)': use an IANA name such as Asia/Shanghai or UTC" }
    }

    public init(timeZoneIdentifier: String) throws(UnknownTimeZone) {
        guard let zone = TimeZone(identifier: timeZoneIdentifier) else {
            throw UnknownTimeZone(identifier: timeZoneIdentifier)
        }
        self.timeZoneIdentifier = timeZoneIdentifier
        let first = BillingMonth(year: Self.firstYear, month: 1)
        firstMonth = first

        // Offsets: walk Foundation's transitions and a sample on the 1st and 15th of every
        // month, and pin every change to the exact second by bisection, so a zone whose
        // offset changed other than by daylight saving is still exact.
        let startSecond = Int64(Civil.days(year: Self.firstYear - 1, month: 12, day: 1)) * 86_400
        let endSecond = Int64(Civil.days(year: Self.lastYear + 1, month: 2, day: 1)) * 86_400
        var probes: [Int64] = []
        var cursor = Date(timeIntervalSince1970: TimeInterval(startSecond))
        while let next = zone.nextDaylightSavingTimeTransition(after: cursor),
              next.timeIntervalSince1970 < TimeInterval(endSecond) {
            probes.append(Int64(next.timeIntervalSince1970.rounded(.down)))
            probes.append(Int64(next.timeIntervalSince1970.rounded(.up)))
            cursor = next
        }
        for year in (Self.firstYear - 1)...(Self.lastYear + 1) {
            for month in 1...12 {
                for day in [1, 15] {
                    probes.append(Int64(Civil.days(year: year, month: month, day: day)) * 86_400)
                }
            }
        }
        probes.sort()
        func offset(_ second: Int64) -> Int32 {
            Int32(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(second))))
        }
        var changes: [Int64] = []
        var offsets: [Int32] = [offset(probes[0])]
        var previous = probes[0]
        for probe in probes.dropFirst() where probe > previous {
            let current = offset(probe)
            if current != offsets[offsets.count - 1] {
                // The change happened in (previous, probe]: find its first second.
                var low = previous
                var high = probe
                while high - low > 1 {
                    let mid = low + (high - low) / 2
                    if offset(mid) == offsets[offsets.count - 1] { low = mid } else { high = mid }
                }
                changes.append(high * 1000)
                offsets.append(current)
            }
            previous = probe
        }
        offsetChangeInstants = changes
        offsetSeconds = offsets

        // Month starts: midnight local time on the 1st (or the first instant after it when
        // midnight falls in a gap), from the offsets just computed.
        var starts: [Int64] = []
        let monthCount = (Self.lastYear - Self.firstYear + 1) * 12
        starts.reserveCapacity(monthCount + 1)
        for index in 0...monthCount {
            let month = BillingMonth(rawValue: first.rawValue + Int32(index))
            let localMs = Int64(Civil.days(year: month.year, month: month.month, day: 1)) * Civil.millisecondsPerDay
            starts.append(Self.instant(forLocal: localMs, changes: changes, offsets: offsets))
        }
        monthStarts = starts
    }

    /// The instant at which local wall time `localMs` first occurs, or the end of the gap
    /// when the zone skips it.
    private static func instant(forLocal localMs: Int64, changes: [Int64], offsets: [Int32]) -> Int64 {
        func offsetMs(_ instant: Int64) -> Int64 { Int64(offsets[Self.changeIndex(instant, changes)]) * 1000 }
        var earliest: Int64?
        for offset in Set(offsets) {
            let candidate = localMs - Int64(offset) * 1000
            if offsetMs(candidate) == Int64(offset) * 1000, candidate < (earliest ?? .max) {
                earliest = candidate
            }
        }
        if let earliest { return earliest }
        for (i, change) in changes.enumerated()
        where change + Int64(offsets[i]) * 1000 <= localMs && localMs < change + Int64(offsets[i + 1]) * 1000 {
            return change
        }
        return localMs - Int64(offsets[offsets.count - 1]) * 1000
    }

    /// Index into `offsetSeconds` for `instant`.
    @inline(__always)
    static func changeIndex(_ instant: Int64, _ changes: [Int64]) -> Int {
        var low = 0
        var high = changes.count
        while low < high {
            let mid = (low + high) / 2
            if changes[mid] <= instant { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The UTC offset of the billing zone at `instant`, in seconds.
    public func offsetSeconds(at instant: Int64) -> Int {
        Int(offsetSeconds[Self.changeIndex(instant, offsetChangeInstants)])
    }

    /// The first and last instants this calendar covers.
    public var supportedRange: Range<Int64> { monthStarts[0]..<monthStarts[monthStarts.count - 1] }

    /// The billing month containing `instant`, or nil outside 1970–2199.
    @inline(__always)
    public func month(containing instant: Int64) -> BillingMonth? {
        guard let index = monthIndex(containing: instant) else { return nil }
        return BillingMonth(rawValue: firstMonth.rawValue + Int32(index))
    }

    @inline(__always)
    func monthIndex(containing instant: Int64) -> Int? {
        let starts = monthStarts
        guard instant >= starts[0], instant < starts[starts.count - 1] else { return nil }
        var index = Int((instant - starts[0]) / 2_629_746_000)  // the mean Gregorian month
        if index >= starts.count - 1 { index = starts.count - 2 }
        while starts[index] > instant { index -= 1 }
        while starts[index + 1] <= instant { index += 1 }
        return index
    }

    /// The first instant of `month`; months outside the table are clamped to its ends.
    @inline(__always)
    public func start(of month: BillingMonth) -> Int64 {
        let index = Int(month.rawValue - firstMonth.rawValue)
        if index < 0 { return Int64.min / 4 }
        if index >= monthStarts.count { return Int64.max / 4 }
        return monthStarts[index]
    }

    /// The same wall-clock instant one calendar year later (Feb 29 becomes Feb 28):
    /// the default `expires` of a prepaid pack (docs/rules.md §6).
    public func oneYearAfter(_ instant: Int64) -> Int64 {
        let offsetMs = Int64(offsetSeconds(at: instant)) * 1000
        let local = instant + offsetMs
        let days = Civil.floorDiv(local, Civil.millisecondsPerDay)
        let timeOfDay = local - days * Civil.millisecondsPerDay
        let date = Civil.date(days: Int(days))
        let day = min(date.day, Civil.daysInMonth(year: date.year + 1, month: date.month))
        let localNext = Int64(Civil.days(year: date.year + 1, month: date.month, day: day)) * Civil.millisecondsPerDay + timeOfDay
        return Self.instant(forLocal: localNext, changes: offsetChangeInstants, offsets: offsetSeconds)
    }

    /// Writes `instant` as RFC 3339 in the billing zone with milliseconds,
    /// e.g. `2026-11-03T10:00:00.123+08:00` (docs/contract.md: timestamps written by packmeter).
    public func writeTimestamp(_ instant: Int64, to out: ByteWriter) {
        Timestamp.write(instant, offsetMinutes: offsetSeconds(at: instant) / 60, to: out)
    }

    public func formatTimestamp(_ instant: Int64) -> String {
        let out = ByteWriter(capacity: 64)
        writeTimestamp(instant, to: out)
        return out.string
    }
}
