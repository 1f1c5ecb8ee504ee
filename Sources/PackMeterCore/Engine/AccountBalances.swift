/// An account's balances as shown everywhere (docs/contract.md, balances): open months with any
/// use of a pack, and the prepaid packs neither expired nor refunded.
public struct AccountBalances: Equatable, Sendable {
    public struct PackMonth: Equatable, Sendable {
        public var pack: String
        public var freeGranted: UInt64
        public var freeUsed: UInt64
        public var freeRemaining: UInt64 { freeGranted - min(freeUsed, freeGranted) }
        public var prepaidUsed: UInt64
        public var overage: UInt64
    }

    public struct Month: Equatable, Sendable {
        public var month: BillingMonth
        /// In catalog order.
        public var packs: [PackMonth]
    }

    public struct Prepaid: Equatable, Sendable {
        public var id: String
        public var pack: String
        public var quantity: UInt64
        public var remaining: UInt64
        public var effective: Int64
        public var expires: Int64
    }

    public var account: String
    public var suspended: Bool
    /// Oldest first.
    public var months: [Month]
    /// In deduction order: effective first, ties in order received.
    public var prepaid: [Prepaid]

    /// Writes the contract's JSON object (one line, no trailing newline).
    public func write(to out: ByteWriter, calendar: BillingCalendar) {
        out.append(raw: "{\"account\":")
        out.append(jsonString: account)
        out.append(raw: suspended ? ",\"suspended\":true,\"months\":[" : ",\"suspended\":false,\"months\":[")
        for (i, month) in months.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(raw: "{\"month\":\"")
            month.month.write(to: out)
            out.append(raw: "\",\"packs\":[")
            for (k, pack) in month.packs.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                out.append(raw: "{\"pack\":")
                out.append(jsonString: pack.pack)
                out.append(raw: ",\"free\":{\"granted\":")
                out.append(decimal: pack.freeGranted)
                out.append(raw: ",\"used\":")
                out.append(decimal: pack.freeUsed)
                out.append(raw: ",\"remaining\":")
                out.append(decimal: pack.freeRemaining)
                out.append(raw: "},\"prepaid_used\":")
                out.append(decimal: pack.prepaidUsed)
                out.append(raw: ",\"overage\":")
                out.append(decimal: pack.overage)
                out.append(UInt8(ascii: "}"))
            }
            out.append(raw: "]}")
        }
        out.append(raw: "],\"prepaid\":[")
        for (i, pack) in prepaid.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(raw: "{\"id\":")
            out.append(jsonString: pack.id)
            out.append(raw: ",\"pack\":")
            out.append(jsonString: pack.pack)
            out.append(raw: ",\"quantity\":")
            out.append(decimal: pack.quantity)
            out.append(raw: ",\"remaining\":")
            out.append(decimal: pack.remaining)
            out.append(raw: ",\"effective\":\"")
            calendar.writeTimestamp(pack.effective, to: out)
            out.append(raw: "\",\"expires\":\"")
            calendar.writeTimestamp(pack.expires, to: out)
            out.append(raw: "\"}")
        }
        out.append(raw: "]}")
    }

    public func json(calendar: BillingCalendar) -> String {
        let out = ByteWriter(capacity: 512)
        write(to: out, calendar: calendar)
        return out.string
    }

    /// The balance of one pack in one month, if the account used it.
    public func pack(_ packID: String, in month: BillingMonth) -> PackMonth? {
        months.first { $0.month == month }?.packs.first { $0.pack == packID }
    }
}

extension PartitionEngine {
    /// The balances of `account`; with `month`, only that month's use.
    public func balances(of account: AccountID, month: BillingMonth? = nil) -> AccountBalances {
        var months: [AccountBalances.Month] = []
        if watermark != .min {
            let newest = self.month(of: watermark)
            var m = firstOpenMonth
            while m <= newest {
                if month == nil || month == m {
                    var packs: [AccountBalances.PackMonth] = []
                    for (p, pack) in catalog.packs.enumerated() {
                        let key = BalanceTable.key(account: account.rawValue, pack: UInt16(p), monthTag: monthTag(m))
                        if let slot = balances.find(key) {
                            packs.append(AccountBalances.PackMonth(
                                pack: pack.id, freeGranted: UInt64(pack.freeCallsPerMonth), freeUsed: UInt64(slot.freeUsed),
                                prepaidUsed: slot.prepaidUsed, overage: slot.overage))
                        }
                    }
                    if !packs.isEmpty { months.append(AccountBalances.Month(month: m, packs: packs)) }
                }
                m = m.next
            }
        }
        var packs: [AccountBalances.Prepaid] = []
        var p = firstPack(account.index)
        while p != Self.noPack {
            let slot = prepaid[Int(p)]
            packs.append(AccountBalances.Prepaid(
                id: String(decoding: prepaidIDs[Int(p)], as: UTF8.self), pack: catalog.packs[Int(slot.pack)].id,
                quantity: UInt64(slot.quantity), remaining: UInt64(slot.remaining),
                effective: slot.effective, expires: slot.expires))
            p = slot.next
        }
        return AccountBalances(account: name(of: account), suspended: isSuspended(account), months: months, prepaid: packs)
    }

    public func balances(ofAccountNamed name: String, month: BillingMonth? = nil) -> AccountBalances? {
        account(named: name).map { balances(of: $0, month: month) }
    }

    /// The `limit` accounts with the most calls billed in open months (free, prepaid and
    /// overage), most first; equal counts in the order accounts were first seen. One pass
    /// over the balances, so it stays quick with a million accounts.
    public func busiestAccounts(limit: Int) -> [(account: AccountID, calls: UInt64)] {
        guard limit > 0 else { return [] }
        var calls = [UInt64](repeating: 0, count: accountCount)
        balances.forEach { calls[Int($0.account)] += UInt64($0.freeUsed) + $0.prepaidUsed + $0.overage }
        var top: [(account: AccountID, calls: UInt64)] = []
        for (a, n) in calls.enumerated() where n > 0 && (top.count < limit || n > top[top.count - 1].calls) {
            let at = top.firstIndex { $0.calls < n } ?? top.count
            top.insert((AccountID(UInt32(a)), n), at: at)
            if top.count > limit { top.removeLast() }
        }
        return top
    }

    /// Accounts with any state (a balance in an open month, a prepaid pack, or a suspension),
    /// ordered by their id's bytes.
    public func accountsWithState() -> [AccountID] {
        var hasState = [Bool](repeating: false, count: accountCount)
        balances.forEach { hasState[Int($0.account)] = true }
        for a in 0..<accountCount where accountState[a] != Self.noPack { hasState[a] = true }
        var ids: [AccountID] = []
        for a in 0..<accountCount where hasState[a] { ids.append(AccountID(UInt32(a))) }
        return ids.sorted { x, y in accountBytes(x).lexicographicallyPrecedes(accountBytes(y)) }
    }
}
