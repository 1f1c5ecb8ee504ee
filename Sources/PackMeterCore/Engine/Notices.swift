import Foundation

/// The percentages at which notices are due (docs/contract.md, notices): of a free grant,
/// and of a prepaid pack's quantity. An empty list turns that kind off.
public struct NoticeThresholds: Sendable, Equatable {
    /// Ascending, each 1...100, no repeats.
    public let freeGrant: [UInt8]
    public let prepaid: [UInt8]

    public static let defaults = NoticeThresholds(validFreeGrant: [80, 100], prepaid: [90, 100])

    private init(validFreeGrant: [UInt8], prepaid: [UInt8]) {
        freeGrant = validFreeGrant
        self.prepaid = prepaid
    }

    /// Thresholds from lists of percentages; nil (with `problem` set) when one is outside 1...100.
    public init?(freeGrant: [Int], prepaid: [Int], problem: inout String) {
        for (name, list) in [("free grant", freeGrant), ("prepaid", prepaid)] {
            if let bad = list.first(where: { !(1...100).contains($0) }) {
                problem = "\(name) notice threshold \(bad) is not a percentage from 1 to 100"
                return nil
            }
        }
        self.freeGrant = Set(freeGrant).sorted().map(UInt8.init)
        self.prepaid = Set(prepaid).sorted().map(UInt8.init)
    }

    /// `80,100` → [80, 100]; the empty string → []; nil for anything else.
    public static func parseList(_ text: String) -> [Int]? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return [] }
        var values: [Int] = []
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            guard let value = Int(part.trimmingCharacters(in: .whitespaces)) else { return nil }
            values.append(value)
        }
        return values
    }
}

/// One notice the engine found while applying an event (docs/contract.md, notices). The
/// processor writes it as a record.
public struct Notice: Sendable {
    /// The four kinds, in the order the contract writes one event's notices.
    public enum Kind: UInt8, Sendable, Comparable, CaseIterable {
        case freeGrantUsed
        case prepaidUsed
        case overageStarted
        case prepaidExpiring

        public var name: String {
            switch self {
            case .freeGrantUsed: "free_grant_used"
            case .prepaidUsed: "prepaid_used"
            case .overageStarted: "overage_started"
            case .prepaidExpiring: "prepaid_expiring"
            }
        }

        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }

    public var kind: Kind
    public var account: AccountID
    public var pack: PackIndex
    /// The billing month (the two monthly kinds).
    public var month: BillingMonth
    /// The percentage passed (the two threshold kinds), else 0.
    public var threshold: UInt8
    /// Calls used (free grant, prepaid pack, or the call's overage), or, for
    /// `prepaid_expiring`, calls remaining.
    public var used: UInt64
    /// The grant or the pack's quantity.
    public var limit: UInt64
    /// The pack's `expires` (`prepaid_expiring`).
    public var expires: Int64
    /// The purchase id's bytes in the collector's arena (the two prepaid kinds).
    var purchase: Range<Int>
}

/// Where an engine puts the notices of the event it is applying; the processor takes them
/// after each event and clears it. Reuses its storage: no allocation once warm.
public final class NoticeCollector {
    public let thresholds: NoticeThresholds
    public private(set) var notices: [Notice] = []
    /// Purchase ids of the notices, copied: a pack may be gone by the time they are written.
    private(set) var arena: [UInt8] = []
    /// Per pack, the free calls used at which each free-grant threshold is reached:
    /// `ceil(grant × t / 100)`, `freeGrant.count` of them per pack.
    let freeCounts: [UInt32]

    init(thresholds: NoticeThresholds, grants: [UInt32]) {
        self.thresholds = thresholds
        var counts: [UInt32] = []
        for grant in grants {
            for t in thresholds.freeGrant { counts.append(UInt32((UInt64(grant) * UInt64(t) + 99) / 100)) }
        }
        freeCounts = counts
        // Room for a whole batch's notices where nobody takes them after each event.
        notices.reserveCapacity(1024)
        arena.reserveCapacity(16_384)
    }

    public var isEmpty: Bool { notices.isEmpty }

    public func removeAll() {
        notices.removeAll(keepingCapacity: true)
        arena.removeAll(keepingCapacity: true)
    }

    public func purchase(of notice: Notice) -> ArraySlice<UInt8> { arena[notice.purchase] }

    func add(_ notice: Notice) { notices.append(notice) }

    func add(_ notice: Notice, purchase: [UInt8]) {
        var notice = notice
        notice.purchase = arena.count..<arena.count + purchase.count
        arena.append(contentsOf: purchase)
        notices.append(notice)
    }

    /// The contract's order for one event's notices: kind, then account, then pack or
    /// purchase id (bytewise), then threshold. `accountBytes` gives an account's id.
    public func sort(accountBytes: (AccountID) -> UnsafeRawBufferPointer, packID: (PackIndex) -> [UInt8]) {
        guard notices.count > 1 else { return }
        let arena = self.arena
        func key(_ n: Notice) -> [UInt8] {
            switch n.kind {
            case .freeGrantUsed, .overageStarted: packID(n.pack)
            case .prepaidUsed, .prepaidExpiring: Array(arena[n.purchase])
            }
        }
        notices.sort { a, b in
            if a.kind != b.kind { return a.kind < b.kind }
            if a.account != b.account {
                let (x, y) = (accountBytes(a.account), accountBytes(b.account))
                if !x.elementsEqual(y) { return x.lexicographicallyPrecedes(y) }
            }
            let (x, y) = (key(a), key(b))
            if x != y { return x.lexicographicallyPrecedes(y) }
            return a.threshold < b.threshold
        }
    }
}

/// A min-heap of (instant, slot): prepaid packs by the instant their `prepaid_expiring`
/// notice is due, `expires` − 7 days.
typealias NoticeHeap = ExpiryHeap
