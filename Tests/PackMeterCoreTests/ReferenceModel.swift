@testable import PackMeterCore

/// A usage event as the log generator means it, before it is written as JSON.
enum ModelEvent {
    case call(id: String, account: String, action: String, ts: Int64, count: Int, code: String?)
    case purchase(id: String, account: String, pack: String, quantity: Int, ts: Int64, effective: Int64?, expires: Int64?)
    case refund(id: String, account: String, purchase: String, ts: Int64)
    case suspend(id: String, account: String, ts: Int64)
    case resume(id: String, account: String, ts: Int64)
    /// A record the decoder must reject, with the reason it must give.
    case bad(line: String, reason: String)

    var line: String {
        func t(_ ms: Int64) -> String { "\"\(shanghai.formatTimestamp(ms))\"" }
        switch self {
        case let .call(id, account, action, ts, count, code):
            let codeField = code.map { ",\"code\":\"\($0)\"" } ?? ""
            let countField = count == 1 && ts % 2 == 0 ? "" : ",\"count\":\(count)"
            // Alternate the two ts forms.
            let tsField = ts % 3 == 0 ? "\(ts)" : t(ts)
            return "{\"type\":\"call\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"action\":\"\(action)\",\"ts\":\(tsField)\(countField)\(codeField)}"
        case let .purchase(id, account, pack, quantity, ts, effective, expires):
            var line = "{\"type\":\"purchase\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"pack\":\"\(pack)\",\"quantity\":\(quantity),\"ts\":\(t(ts))"
            if let effective { line += ",\"effective\":\(t(effective))" }
            if let expires { line += ",\"expires\":\(t(expires))" }
            return line + "}"
        case let .refund(id, account, purchase, ts):
            return "{\"type\":\"refund\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"purchase\":\"\(purchase)\",\"ts\":\(t(ts))}"
        case let .suspend(id, account, ts):
            return "{\"type\":\"suspend\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"reason\":\"arrears\",\"ts\":\(t(ts))}"
        case let .resume(id, account, ts):
            return "{\"type\":\"resume\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"ts\":\(t(ts))}"
        case let .bad(line, _):
            return line
        }
    }
}

/// The rules of docs/rules.md written a second time, as plainly as possible (dictionaries, sorts,
/// no performance concerns), to check the engine against on generated logs.
final class ReferenceModel {
    enum Outcome: Equatable {
        case applied(free: Int, prepaid: Int, overage: Int)
        case nonBillable
        case duplicate
        case rejected(String)
    }

    struct Key: Hashable { var account: String; var pack: String; var month: BillingMonth }
    struct Use { var free = 0; var prepaid = 0; var overage = 0 }
    struct Pack {
        var id: String; var account: String; var pack: String
        var quantity: Int; var remaining: Int
        var effective: Int64; var expires: Int64; var purchasedAt: Int64; var sequence: Int
        /// The watermark has reached `expires` − 7 days (its notice was due then, if any).
        var expiringDue = false
    }

    /// A notice as the contract defines it: its id, and what it is sorted by.
    struct ModelNotice: Comparable {
        var kindOrder: Int; var account: String; var key: String; var threshold: Int; var id: String
        static func < (a: ModelNotice, b: ModelNotice) -> Bool {
            if a.kindOrder != b.kindOrder { return a.kindOrder < b.kindOrder }
            if a.account != b.account { return Array(a.account.utf8).lexicographicallyPrecedes(Array(b.account.utf8)) }
            if a.key != b.key { return Array(a.key.utf8).lexicographicallyPrecedes(Array(b.key.utf8)) }
            return a.threshold < b.threshold
        }
    }

    let catalog: Catalog
    let calendar: BillingCalendar
    let latenessMs: Int64
    var watermark = Int64.min
    var firstOpen = BillingMonth(year: 1970, month: 1)
    var remembered: [String: BillingMonth] = [:]
    var use: [Key: Use] = [:]
    var packs: [Pack] = []
    var suspended: Set<String> = []
    var accounts: Set<String> = []
    var sequence = 0
    /// The notices of the last event applied, in the contract's order.
    var notices: [String] = []
    private var found: [ModelNotice] = []
    let freeThresholds = [80, 100]
    let prepaidThresholds = [90, 100]

    init(catalog: Catalog, calendar: BillingCalendar, latenessMs: Int64) {
        self.catalog = catalog
        self.calendar = calendar
        self.latenessMs = latenessMs
    }

    func packID(of action: String) -> String {
        catalog.pack(catalog.action(catalog.action(named: action)!).pack).id
    }

    func apply(_ event: ModelEvent) -> Outcome {
        found = []
        let outcome = applyRules(event)
        notices = found.sorted().map(\.id)
        return outcome
    }

    private func note(_ kind: Int, _ name: String, account: String, key: String, month: BillingMonth?, threshold: Int = 0) {
        var id = "\(account)/\(name)/\(key)"
        if let month { id += "/\(month)" }
        if threshold > 0 { id += "/\(threshold)" }
        found.append(ModelNotice(kindOrder: kind, account: account, key: key, threshold: threshold, id: id))
    }

    /// Whether `before` < the count at which t% of `limit` is reached <= `after`.
    private func passes(_ t: Int, of limit: Int, from before: Int, to after: Int) -> Bool {
        let due = (limit * t + 99) / 100
        return before < due && due <= after
    }

    private func applyRules(_ event: ModelEvent) -> Outcome {
        switch event {
        case let .bad(_, reason):
            return .rejected(reason)
        case let .call(id, account, action, ts, count, code):
            accounts.insert(account)
            let month = calendar.month(containing: ts)!
            if month < firstOpen { return .rejected("too_late") }
            if remembered[id] != nil { return .duplicate }
            remembered[id] = month
            let billable = code == nil || code == "" || code == "Success" || catalog.billableErrorCodes.contains(code!)
            guard billable else {
                advance(ts)
                return .nonBillable
            }
            let pack = packID(of: action)
            let key = Key(account: account, pack: pack, month: month)
            var u = use[key] ?? Use()
            var rest = count
            var free = 0
            if !suspended.contains(account) {
                free = min(rest, 1000 - u.free)
                rest -= free
            }
            for t in freeThresholds where free > 0 && passes(t, of: 1000, from: u.free, to: u.free + free) {
                note(0, "free_grant_used", account: account, key: pack, month: month, threshold: t)
            }
            var prepaid = 0
            let order = packs.indices.filter { packs[$0].account == account && packs[$0].pack == pack }
                .sorted { (packs[$0].effective, packs[$0].sequence) < (packs[$1].effective, packs[$1].sequence) }
            for i in order where rest > 0 && packs[i].effective <= ts && ts < packs[i].expires && packs[i].remaining > 0 {
                let take = min(rest, packs[i].remaining)
                let usedBefore = packs[i].quantity - packs[i].remaining
                packs[i].remaining -= take
                prepaid += take
                rest -= take
                for t in prepaidThresholds where passes(t, of: packs[i].quantity, from: usedBefore, to: usedBefore + take) {
                    note(1, "prepaid_used", account: account, key: packs[i].id, month: nil, threshold: t)
                }
            }
            if rest > 0 && u.overage == 0 { note(2, "overage_started", account: account, key: pack, month: month) }
            u.free += free
            u.prepaid += prepaid
            u.overage += rest
            use[key] = u
            advance(ts)
            return .applied(free: free, prepaid: prepaid, overage: rest)
        case let .purchase(id, account, pack, quantity, ts, effective, expires):
            accounts.insert(account)
            if remembered[id] != nil || packs.contains(where: { $0.account == account && $0.id == id }) { return .duplicate }
            remembered[id] = max(calendar.month(containing: ts)!, firstOpen)
            let start = effective ?? ts
            sequence += 1
            packs.append(Pack(id: id, account: account, pack: pack, quantity: quantity, remaining: quantity,
                              effective: start, expires: expires ?? calendar.oneYearAfter(start), purchasedAt: ts, sequence: sequence))
            advance(ts)
            return .applied(free: 0, prepaid: 0, overage: 0)
        case let .refund(id, account, purchase, ts):
            accounts.insert(account)
            if remembered[id] != nil { return .duplicate }
            guard let i = packs.firstIndex(where: { $0.account == account && $0.id == purchase }),
                  packs[i].remaining == packs[i].quantity, ts - packs[i].purchasedAt <= 7 * 86_400_000
            else { return .rejected("refund_rejected") }
            remembered[id] = max(calendar.month(containing: ts)!, firstOpen)
            packs.remove(at: i)
            advance(ts)
            return .applied(free: 0, prepaid: 0, overage: 0)
        case let .suspend(id, account, ts), let .resume(id, account, ts):
            accounts.insert(account)
            if remembered[id] != nil { return .duplicate }
            remembered[id] = max(calendar.month(containing: ts)!, firstOpen)
            if case .suspend = event { suspended.insert(account) } else { suspended.remove(account) }
            advance(ts)
            return .applied(free: 0, prepaid: 0, overage: 0)
        }
    }

    /// The watermark, month close, `prepaid_expiring` and pack expiry of docs/contract.md.
    private func advance(_ ts: Int64) {
        defer {
            for i in packs.indices where !packs[i].expiringDue && watermark >= packs[i].expires - 7 * 86_400_000 {
                packs[i].expiringDue = true
                if packs[i].remaining > 0 { note(3, "prepaid_expiring", account: packs[i].account, key: packs[i].id, month: nil) }
            }
            // Also a pack bought with an old ts that has already expired at the watermark.
            packs.removeAll { $0.expires <= watermark }
        }
        if ts > watermark {
            watermark = ts
            let open = calendar.month(containing: watermark - latenessMs)!
            if open > firstOpen {
                firstOpen = open
                use = use.filter { $0.key.month >= open }
                remembered = remembered.filter { $0.value >= open }
            }
        }
    }

    /// The balances the engine should show for `account`.
    func balances(_ account: String) -> AccountBalances {
        let months = Set(use.keys.filter { $0.account == account }.map(\.month)).sorted()
        return AccountBalances(
            account: account, suspended: suspended.contains(account),
            months: months.map { month in
                let packIDs = use.keys.filter { $0.account == account && $0.month == month }.map(\.pack)
                    .sorted { catalog.pack(withID: $0)!.rawValue < catalog.pack(withID: $1)!.rawValue }
                return AccountBalances.Month(month: month, packs: packIDs.map { pack in
                    let u = use[Key(account: account, pack: pack, month: month)]!
                    return AccountBalances.PackMonth(pack: pack, freeGranted: 1000, freeUsed: UInt64(u.free),
                                                     prepaidUsed: UInt64(u.prepaid), overage: UInt64(u.overage))
                })
            },
            prepaid: packs.filter { $0.account == account }
                .sorted { ($0.effective, $0.sequence) < ($1.effective, $1.sequence) }
                .map { AccountBalances.Prepaid(id: $0.id, pack: $0.pack, quantity: UInt64($0.quantity), remaining: UInt64($0.remaining),
                                               effective: $0.effective, expires: $0.expires) })
    }
}

/// Generates logs with every rule at work: skewed accounts, shared packs, counts that split,
/// billable and non-billable failures, purchases (some not yet effective, some short-lived),
/// refunds (valid, used, late, unknown), suspensions, duplicates, late calls past the month
/// close, and broken records.
struct LogGenerator {
    var random: SplitMix64
    let accounts: Int
    var now: Int64
    var events: [ModelEvent] = []
    var purchases: [(id: String, account: String, ts: Int64)] = []
    var serial = 0

    static let actions = ["GeneralBasicOCR", "VehicleLicenseOCR", "DriverLicenseOCR", "IDCardOCR", "TableOCR",
                          "TrainTicketOCR", "TaxiInvoiceOCR", "QrcodeOCR", "TextDetect"]
    static let packs = ["general-basic", "vehicle-driver-license", "id-card", "bill-small", "image-text-basic"]

    init(seed: UInt64, accounts: Int = 12, start: String = "2026-10-24T00:00:00+08:00") {
        random = SplitMix64(seed: seed)
        self.accounts = accounts
        now = ms(start)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &random) < p }

    mutating func account() -> String {
        // Skewed: account 0 and 1 get most of the traffic.
        let r = int(0...99)
        let index = r < 40 ? 0 : r < 60 ? 1 : int(2...accounts - 1)
        return "acct-\(index)"
    }

    mutating func nextID(_ prefix: String) -> String {
        serial += 1
        return "\(prefix)-\(serial)"
    }

    mutating func generate(_ count: Int) -> [ModelEvent] {
        for _ in 0..<count {
            now += Int64(int(0...20 * 60_000))
            let ts = chance(0.05) ? now - Int64(int(0...12 * 86_400_000)) : now
            let r = int(0...999)
            let event: ModelEvent
            switch r {
            case 0..<780:
                let code: String? = chance(0.9) ? nil : chance(0.5) ? "FailedOperation.InvoiceMismatch" : "FailedOperation.ImageBlur"
                let count = chance(0.8) ? 1 : chance(0.8) ? int(2...60) : int(100...900)
                event = .call(id: nextID("call"), account: account(), action: Self.actions[int(0...Self.actions.count - 1)],
                              ts: ts, count: count, code: chance(0.02) ? "Success" : code)
            case 780..<830:
                let id = nextID("order")
                let account = account()
                let effective: Int64? = chance(0.3) ? now + Int64(int(-5...5)) * 86_400_000 : nil
                let expires: Int64? = chance(0.3) ? (effective ?? now) + Int64(int(1...40)) * 86_400_000 : nil
                purchases.append((id, account, now))
                event = .purchase(id: id, account: account, pack: Self.packs[int(0...Self.packs.count - 1)],
                                  quantity: int(1...3000), ts: now, effective: effective, expires: expires)
            case 830..<850:
                // Of a recent purchase: some within 7 days, some later, some used.
                if let target = purchases.suffix(8).randomElement(using: &random), chance(0.8) {
                    event = .refund(id: nextID("refund"), account: target.account, purchase: target.id, ts: now)
                } else {
                    event = .refund(id: nextID("refund"), account: account(), purchase: "no-such-order", ts: now)
                }
            case 850..<860:
                event = .suspend(id: nextID("suspend"), account: account(), ts: now)
            case 860..<875:
                event = .resume(id: nextID("resume"), account: account(), ts: now)
            case 875..<960:
                // A repeat of a recent event, byte for byte (a producer retry).
                if let recent = events.suffix(50).randomElement(using: &random) {
                    event = recent
                } else {
                    continue
                }
            default:
                let broken: [(String, String)] = [
                    ("{\"id\":\"x\",\"account\":\"a\"", "malformed_json"),
                    ("{\"account\":\"a\",\"action\":\"TableOCR\",\"ts\":1}", "missing_field"),
                    ("{\"id\":\"\(nextID("bad"))\",\"account\":\"a\",\"action\":\"TableOCR\",\"ts\":1,\"count\":0}", "invalid_field"),
                    ("{\"type\":\"gift\",\"id\":\"g\",\"account\":\"a\",\"ts\":1}", "unknown_type"),
                    ("{\"id\":\"\(nextID("bad"))\",\"account\":\"a\",\"action\":\"NoSuchOCR\",\"ts\":1}", "unknown_action"),
                    ("{\"type\":\"purchase\",\"id\":\"p\",\"account\":\"a\",\"pack\":\"gold\",\"quantity\":1,\"ts\":1}", "unknown_pack"),
                ]
                let (line, reason) = broken[int(0...broken.count - 1)]
                event = .bad(line: line, reason: reason)
            }
            events.append(event)
        }
        return events
    }
}
