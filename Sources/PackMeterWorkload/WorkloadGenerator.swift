import Foundation
import PackMeterCore

/// Generates realistic usage events as JSON lines: for the demo, the benchmarks and
/// `packmeter generate`. Deterministic for a seed.
///
/// Accounts draw calls with a Zipf-like skew (a few accounts make most calls), over the
/// catalog's actions (a few popular ones, shared packs included), with `count` mostly 1,
/// a share of failed calls (billable and not), and optionally account events (purchases,
/// refunds, suspensions, resumes), producer retries (duplicates) and broken records.
public struct WorkloadGenerator {
    public struct Options: Sendable {
        public var accounts = 5_000
        public var seed: UInt64 = 1
        /// The first event's `ts` (epoch ms); later ones follow `millisecondsPerEvent` apart.
        public var startMs: Int64 = 1_793_462_400_000  // 2026-10-31T00:00:00+08:00
        public var millisecondsPerEvent: Double = 10
        /// Zipf exponent of account popularity: 0 is uniform, 1 strongly skewed.
        public var skew = 1.0
        /// Per mille of events that are account events (purchase, refund, suspend, resume).
        public var accountEventsPerMille = 2
        /// Per mille of events repeated verbatim a little later (producer retries).
        public var duplicatesPerMille = 5
        /// Per mille of broken records (malformed JSON, unknown action, missing field...).
        public var brokenPerMille = 1
        /// Per mille of calls whose `ts` lies up to 10 days before the others (late arrivals;
        /// past the allowed lateness they are `too_late`).
        public var latePerMille = 0
        /// Prefix of account ids, e.g. `1000` gives `100000000042`.
        public var accountPrefix = "1000"

        public init() {}
    }

    public let options: Options
    private var random: SplitMix
    private let cumulative: [Double]
    private let actions: [String]
    private let packs: [String]
    private var serial: UInt64 = 0
    private var recent: [(line: [UInt8], key: String)] = []
    private var purchases: [(id: String, account: String)] = []
    private let calendar: BillingCalendar
    private let scratch = ByteWriter(capacity: 512)

    public init(options: Options, catalog: Catalog, calendar: BillingCalendar) {
        self.options = options
        self.calendar = calendar
        random = SplitMix(seed: options.seed)
        var total = 0.0
        cumulative = (0..<max(options.accounts, 1)).map { rank in
            total += 1 / pow(Double(rank + 1), options.skew)
            return total
        }
        // Popular actions first: they get most of the traffic.
        let popular = ["GeneralBasicOCR", "IDCardOCR", "GeneralAccurateOCR", "VatInvoiceOCR", "BankCardOCR",
                       "VehicleLicenseOCR", "DriverLicenseOCR", "TrainTicketOCR", "BizLicenseOCR", "TableOCR"]
        let known = popular.filter { catalog.action(named: $0) != nil }
        actions = known + catalog.actions.map(\.name).filter { !known.contains($0) }
        packs = catalog.packs.map(\.id)
    }

    /// The account at popularity rank `rank`.
    public func account(_ rank: Int) -> String {
        let digits = String(rank)
        return options.accountPrefix + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    private mutating func pickAccount() -> String {
        let x = Double(random.next() >> 11) / Double(1 << 53) * cumulative[cumulative.count - 1]
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < x { low = mid + 1 } else { high = mid }
        }
        return account(low)
    }

    private mutating func pickAction() -> String {
        // Half the calls go to the first three actions, the rest anywhere.
        let r = random.next() % 100
        if r < 50 { return actions[Int(random.next() % UInt64(min(3, actions.count)))] }
        if r < 85 { return actions[Int(random.next() % UInt64(min(10, actions.count)))] }
        return actions[Int(random.next() % UInt64(actions.count))]
    }

    private mutating func requestID() -> String {
        serial += 1
        let a = random.next()
        let b = random.next()
        func hex(_ v: UInt64, _ digits: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, digits - s.count)) + s.suffix(digits)
        }
        return "\(hex(a >> 32, 8))-\(hex((a >> 16) & 0xFFFF, 4))-4\(hex(a & 0xFFF, 3))-8\(hex(b >> 52, 3))-\(hex(b & 0xFFFF_FFFF_FFFF, 12))"
    }

    /// The next event as one JSON line (no newline) and its key (the account), appended to
    /// `out`; returns the ranges of key and value in `out`.
    public mutating func next(into out: ByteWriter) -> (key: Range<Int>, value: Range<Int>) {
        let ts = options.startMs + Int64(Double(serial) * options.millisecondsPerEvent)
        let roll = Int(random.next() % 1000)
        let line: [UInt8]
        let account: String
        if roll < options.duplicatesPerMille, let again = recent.randomElement(using: &random) {
            line = again.line
            account = again.key
            serial += 1
        } else if roll < options.duplicatesPerMille + options.brokenPerMille {
            account = pickAccount()
            line = Array(broken(account: account, ts: ts).utf8)
        } else if roll < options.duplicatesPerMille + options.brokenPerMille + options.accountEventsPerMille {
            // Keyed by the account the event is about (a refund names its purchase's account).
            let event = accountEvent(account: pickAccount(), ts: ts)
            account = event.account
            line = Array(event.line.utf8)
        } else {
            account = pickAccount()
            let late = options.latePerMille > 0 && Int(random.next() % 1000) < options.latePerMille
            line = Array(call(account: account, ts: late ? ts - Int64(random.next() % 864_000_000) : ts).utf8)
        }
        if random.next() % 64 == 0 {
            recent.append((line, account))
            if recent.count > 256 { recent.removeFirst(64) }
        }
        let keyStart = out.count
        out.append(utf8: account)
        let valueStart = out.count
        out.append(line)
        return (keyStart..<valueStart, valueStart..<out.count)
    }


    private mutating func timestamp(_ ts: Int64) -> String { calendar.formatTimestamp(ts) }

    private mutating func call(account: String, ts: Int64) -> String {
        let count = random.next() % 20 == 0 ? 1 + Int(random.next() % 50) : 1
        let r = random.next() % 100
        let code = r < 95 ? "" : r < 97 ? "FailedOperation.ImageBlur" : "FailedOperation.EmptyImageError"
        return "{\"type\":\"call\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"action\":\"\(pickAction())\",\"ts\":\"\(timestamp(ts))\",\"count\":\(count),\"code\":\"\(code)\"}"
    }

    private mutating func accountEvent(account: String, ts: Int64) -> (line: String, account: String) {
        switch random.next() % 10 {
        case 0..<6:
            serial += 1
            let id = "order-\(options.seed)-\(serial)"
            purchases.append((id, account))
            let quantity = [1000, 5000, 10000, 100_000][Int(random.next() % 4)]
            let pack = random.next() % 2 == 0 ? packs[0] : packs[Int(random.next() % UInt64(packs.count))]
            return ("{\"type\":\"purchase\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"pack\":\"\(pack)\",\"quantity\":\(quantity),\"ts\":\"\(timestamp(ts))\"}", account)
        case 6..<7:
            let target = purchases.randomElement(using: &random) ?? (id: "order-unknown", account: account)
            return ("{\"type\":\"refund\",\"id\":\"\(requestID())\",\"account\":\"\(target.account)\",\"purchase\":\"\(target.id)\",\"ts\":\"\(timestamp(ts))\"}", target.account)
        case 7..<9:
            return ("{\"type\":\"suspend\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"reason\":\"arrears\",\"ts\":\"\(timestamp(ts))\"}", account)
        default:
            return ("{\"type\":\"resume\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"ts\":\"\(timestamp(ts))\"}", account)
        }
    }

    private mutating func broken(account: String, ts: Int64) -> String {
        switch random.next() % 4 {
        case 0: return "{\"type\":\"call\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"action\":\"GeneralBasicOCR\",\"ts\":"
        case 1: return "{\"type\":\"call\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"action\":\"HandwritingPlusOCR\",\"ts\":\"\(timestamp(ts))\"}"
        case 2: return "{\"type\":\"call\",\"id\":\"\(requestID())\",\"action\":\"GeneralBasicOCR\",\"ts\":\"\(timestamp(ts))\"}"
        default: return "{\"type\":\"call\",\"id\":\"\(requestID())\",\"account\":\"\(account)\",\"action\":\"GeneralBasicOCR\",\"ts\":\"\(timestamp(ts))\",\"count\":-3}"
        }
    }
}

/// SplitMix64: small, fast and good enough for generating workloads.
public struct SplitMix: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
