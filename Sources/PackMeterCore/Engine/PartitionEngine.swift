import CPackMeterSupport

/// A billable-call event, decoded and with its account interned: what the engine applies.
@frozen
public struct CallEvent: Sendable {
    public var account: AccountID
    public var pack: PackIndex
    /// Epoch milliseconds; must lie within `BillingCalendar.supportedRange`.
    public var ts: Int64
    public var count: UInt32
    /// Succeeded, or failed with a billable error code (docs/rules.md §3).
    public var billable: Bool
    public var id: Fingerprint128

    @inlinable
    public init(account: AccountID, pack: PackIndex, ts: Int64, count: UInt32, billable: Bool, id: Fingerprint128) {
        self.account = account
        self.pack = pack
        self.ts = ts
        self.count = count
        self.billable = billable
        self.id = id
    }
}

/// How one call was settled: where its `count` calls came from (docs/rules.md §4).
/// `free + prepaid + overage == count` for an applied call.
@frozen
public struct Deduction: Sendable, Equatable {
    public enum Status: UInt8, Sendable {
        /// Billable and settled.
        case applied
        /// A failed call with a non-billable code: remembered, costs nothing.
        case nonBillable
        /// The id was already remembered: costs nothing, produces nothing (check 5).
        case duplicate
        /// Its billing month is closed on this partition (check 4).
        case tooLate
    }

    public var status: Status
    public var month: BillingMonth
    public var free: UInt32
    public var prepaid: UInt32
    public var overage: UInt32
}

/// What happened to an account event (purchase, refund, suspend, resume).
public enum AccountEventOutcome: Equatable, Sendable {
    case applied
    case duplicate
    /// A refund that docs/rules.md §6 does not allow; the detail says why.
    case refundRejected(String)
}

/// The billing state of one input partition, and the rules that change it.
///
/// One engine per partition, owned by one writer: the state is a pure function of the
/// partition's log (docs/contract.md, deterministic). Account events take effect at their
/// position in the log (docs/rules.md §8); calls are bucketed by their own `ts` in the billing
/// time zone (§5). Per account the engine keeps balance slots per (pack, month) for open
/// months, prepaid packs in deduction order, and a suspended flag; per partition, the
/// watermark (newest applied `ts`), the first open month and the dedupe window.
///
/// Applying a call allocates nothing once its (account, pack, month) slot exists.
public final class PartitionEngine {
    public let catalog: Catalog
    public let calendar: BillingCalendar
    public let allowedLatenessMs: Int64

    let accounts: AccountDirectory
    /// Per account: bit 31 = suspended, bits 0–30 = first prepaid pack (`noPack` if none).
    let accountState = FlatBuffer<UInt32>(capacity: 1024)
    static let suspendedBit: UInt32 = 1 << 31
    static let noPack: UInt32 = 0x7FFF_FFFF

    let balances: BalanceTable
    /// Per pack, what a call reads: the free calls a month (the catalog's), and the lowest
    /// and highest count of free calls used at which a `free_grant_used` notice is due
    /// (`UInt32.max` when none is): a call whose grant use ends below the first or starts at
    /// or past the last passes none.
    let grants: FlatBuffer<PackGrant>

    struct PackGrant: BitwiseCopyable {
        var freeCalls: UInt32
        var firstNoticeAt: UInt32
        var lastNoticeAt: UInt32
        var reserved: UInt32 = 0
    }

    let prepaid = FlatBuffer<PrepaidSlot>(capacity: 16)
    var prepaidIDs: [[UInt8]] = []
    var prepaidFreeList = PartitionEngine.noPack
    var expiryHeap = ExpiryHeap()
    public internal(set) var livePrepaidCount = 0

    let dedupe: DedupeWindow

    /// The newest `ts` of the events applied on this partition (docs/contract.md, watermark).
    public internal(set) var watermark: Int64 = .min
    /// Months before this one are closed.
    public internal(set) var firstOpenMonth: BillingMonth {
        didSet { firstOpenTag = monthTag(firstOpenMonth) }
    }
    /// `firstOpenMonth`'s tag, which every call passes to the dedupe window.
    private(set) var firstOpenTag: UInt16 = 0
    var nextCloseAt: Int64

    private var cachedMonthStart: Int64 = 1
    private var cachedMonthEnd: Int64 = 0
    private var cachedMonth = BillingMonth(rawValue: 0)
    private var cachedMonthTag: UInt16 = 0

    // Notices, after the fields the hot path reads most.
    /// Where the notices of the event being applied go; nil when notices are off.
    public let notices: NoticeCollector?
    /// Whether `notices` holds any: a stored flag the apply loop can test cheaply.
    public internal(set) var hasNotices = false
    /// The prepaid thresholds (percentages), where the prepaid draw reads them.
    let prepaidNoticePercents: FlatBuffer<UInt64>
    let prepaidNoticeCount: Int
    /// Live packs whose `prepaid_expiring` notice is not yet due, by when it is. Derived
    /// from the packs and the watermark, so checkpoints need not hold it.
    var noticeHeap = NoticeHeap()
    /// The earliest instant a pack's notice or expiry is due (the smaller heap minimum):
    /// one compare per watermark advance for both.
    var nextPackEventAt: Int64 = .max
    /// A `prepaid_expiring` notice is due this long before the pack expires.
    public static let expiringNoticeMs: Int64 = 7 * 86_400_000

    /// The default dedupe generation capacity (ids); see `DedupeWindow`.
    public static let dedupeCapacityDefault = 500_000

    public convenience init(catalog: Catalog, calendar: BillingCalendar, allowedLatenessMs: Int64 = 72 * 3_600_000,
                            dedupeCapacity: Int = PartitionEngine.dedupeCapacityDefault, expectedAccounts: Int = 1024,
                            notices: NoticeThresholds? = nil) {
        self.init(catalog: catalog, calendar: calendar, allowedLatenessMs: allowedLatenessMs,
                  dedupe: DedupeWindow(generationCapacity: dedupeCapacity), expectedAccounts: expectedAccounts, notices: notices)
    }

    init(catalog: Catalog, calendar: BillingCalendar, allowedLatenessMs: Int64, dedupe: DedupeWindow, expectedAccounts: Int,
         notices: NoticeThresholds?) {
        let collector = notices.map { NoticeCollector(thresholds: $0, grants: catalog.grantByPack) }
        self.notices = collector
        prepaidNoticePercents = FlatBuffer(capacity: 4)
        for t in collector?.thresholds.prepaid ?? [] { prepaidNoticePercents.append(UInt64(t)) }
        prepaidNoticeCount = prepaidNoticePercents.count
        let k = collector?.thresholds.freeGrant.count ?? 0
        grants = FlatBuffer(capacity: catalog.packs.count)
        for (p, grant) in catalog.grantByPack.enumerated() {
            grants.append(PackGrant(freeCalls: grant, firstNoticeAt: k == 0 ? .max : collector!.freeCounts[p * k],
                                    lastNoticeAt: k == 0 ? .max : collector!.freeCounts[p * k + k - 1]))
        }
        self.catalog = catalog
        self.calendar = calendar
        self.allowedLatenessMs = allowedLatenessMs
        accounts = AccountDirectory(expectedAccounts: expectedAccounts)
        balances = BalanceTable(initialSize: max(1024, expectedAccounts * 2))
        self.dedupe = dedupe
        firstOpenMonth = calendar.firstMonth
        nextCloseAt = calendar.start(of: calendar.firstMonth.next) &+ allowedLatenessMs
        firstOpenTag = monthTag(firstOpenMonth)
    }

    // MARK: - Accounts

    /// The account's number in this engine, adding it if new.
    @inline(__always)
    public func intern(account key: AccountKey) -> AccountID {
        let id = accounts.intern(key)
        if id.index == accountState.count { accountState.append(Self.noPack) }
        return id
    }

    @inline(__always)
    public func intern(account bytes: UnsafeRawBufferPointer) -> AccountID { intern(account: AccountKey(bytes)) }

    /// Requests the memory interning `key` will read. A hint only: it changes no state.
    @inline(__always)
    public func prefetch(account key: AccountKey) { accounts.prefetch(key) }

    public func intern(account: String) -> AccountID {
        var account = account
        return account.withUTF8 { intern(account: UnsafeRawBufferPointer($0)) }
    }

    public func account(named name: String) -> AccountID? { accounts.find(name) }
    public func name(of account: AccountID) -> String { accounts.name(of: account) }
    public var accountCount: Int { accounts.count }

    func accountBytes(_ account: AccountID) -> UnsafeRawBufferPointer { accounts.bytes(of: account) }

    public func isSuspended(_ account: AccountID) -> Bool {
        accountState[account.index] & Self.suspendedBit != 0
    }

    @inline(__always)
    func firstPack(_ a: Int) -> UInt32 { accountState[a] & Self.noPack }

    @inline(__always)
    func setFirstPack(_ a: Int, _ slot: UInt32) {
        accountState[a] = (accountState[a] & Self.suspendedBit) | slot
    }

    // MARK: - Months

    @inline(__always)
    func month(of ts: Int64) -> BillingMonth {
        if ts < cachedMonthStart || ts >= cachedMonthEnd { cacheMonth(of: ts) }
        return cachedMonth
    }

    /// Makes the month of `ts` the cached one (out of line: calls mostly stay in a month).
    @inline(never)
    private func cacheMonth(of ts: Int64) {
        guard let month = calendar.month(containing: ts) else {
            preconditionFailure("ts \(ts) is outside the billing calendar; the decoder rejects such events")
        }
        cachedMonth = month
        cachedMonthStart = calendar.start(of: month)
        cachedMonthEnd = calendar.start(of: month.next)
        cachedMonthTag = monthTag(month)
    }

    @inline(__always)
    func monthTag(_ month: BillingMonth) -> UInt16 {
        UInt16(truncatingIfNeeded: month.rawValue - calendar.firstMonth.rawValue + 1)
    }

    func month(ofTag tag: UInt16) -> BillingMonth {
        BillingMonth(rawValue: calendar.firstMonth.rawValue + Int32(tag) - 1)
    }

    /// Whether a call of `month` would be `too_late` now.
    public func isClosed(_ month: BillingMonth) -> Bool { month < firstOpenMonth }

    /// The instant at which `month` closes on this partition: its end plus the allowed lateness.
    public func closingInstant(of month: BillingMonth) -> Int64 {
        calendar.start(of: month.next) &+ allowedLatenessMs
    }

    /// docs/rules.md §8: the watermark only moves forward; passing a month's end plus the allowed
    /// lateness closes the month (its balances and remembered ids are dropped), and passing
    /// a prepaid pack's `expires` drops the pack.
    @inline(__always)
    private func advanceWatermark(to ts: Int64) {
        guard ts > watermark else { return }
        watermark = ts
        if ts >= nextCloseAt { closeMonths() }
        if ts >= nextPackEventAt { packEventsDue() }
    }

    /// Sets `nextPackEventAt` after either heap changed.
    func refreshPackEventAt() {
        nextPackEventAt = min(noticeHeap.minimum, expiryHeap.minimum)
    }

    @inline(never)
    private func packEventsDue() {
        // Before the drop: a pack the same event takes past `expires` is still notified.
        if watermark >= noticeHeap.minimum { noticeExpiringPacks() }
        if watermark >= expiryHeap.minimum { dropExpiredPacks() }
        refreshPackEventAt()
    }

    /// `prepaid_expiring` for every pack whose notice the watermark has reached, if it still
    /// has calls (a refunded or expired pack is no longer live).
    @inline(never)
    private func noticeExpiringPacks() {
        guard let notices else { return }
        var seen: [UInt32] = []
        while !noticeHeap.isEmpty && noticeHeap.minimum <= watermark {
            let (due, slot) = noticeHeap.pop()
            let pack = prepaid[Int(slot)]
            guard pack.live, pack.expires &- Self.expiringNoticeMs == due, pack.remaining > 0, !seen.contains(slot) else { continue }
            seen.append(slot)
            notices.add(Notice(kind: .prepaidExpiring, account: AccountID(pack.account), pack: PackIndex(pack.pack),
                               month: BillingMonth(rawValue: 0), threshold: 0, used: UInt64(pack.remaining),
                               limit: UInt64(pack.quantity), expires: pack.expires, purchase: 0..<0),
                        purchase: prepaidIDs[Int(slot)])
            hasNotices = true
        }
    }

    @inline(never)
    private func closeMonths() {
        guard let open = calendar.month(containing: watermark &- allowedLatenessMs) else { return }
        if open > firstOpenMonth {
            firstOpenMonth = open
            let openTag = monthTag(open)
            balances.removeAll { $0.monthTag < openTag }
            dedupe.purgeMonths(before: openTag)
        }
        nextCloseAt = closingInstant(of: firstOpenMonth)
    }

    /// The address of pack `s`'s `next` field, to unlink from a chain in one pass.
    @inline(__always)
    private func prepaidLink(_ s: Int) -> UnsafeMutablePointer<UInt32> {
        (UnsafeMutableRawPointer(prepaid.pointer(s)) + PrepaidSlot.nextOffset).assumingMemoryBound(to: UInt32.self)
    }

    @inline(never)
    private func dropExpiredPacks() {
        while !expiryHeap.isEmpty && expiryHeap.minimum <= watermark {
            let (expires, slot) = expiryHeap.pop()
            let pack = prepaid[Int(slot)]
            guard pack.live, pack.expires == expires else { continue }
            unlinkPrepaid(slot)
        }
    }

    // MARK: - Calls (docs/rules.md §3–§5, §7)

    /// Applies one call event: checks 4 (month closed) and 5 (duplicate), then settles its
    /// billable calls from the free grant, prepaid packs in force, and overage, in that order.
    public func apply(_ call: CallEvent) -> Deduction { settle(call) }

    /// `apply(_:)`'s body, inlined for certain into the apply loop: a call per event would
    /// cost a noticeable share of the work, and `@inline(__always)` leaves the choice to
    /// the optimizer's cost model.
    @inline(always)
    func settle(_ call: CallEvent) -> Deduction {
        let month = month(of: call.ts)
        guard month >= firstOpenMonth else {
            return Deduction(status: .tooLate, month: month, free: 0, prepaid: 0, overage: 0)
        }
        let tag = cachedMonthTag
        guard dedupe.insert(call.id, monthTag: tag, openMonthTag: firstOpenTag) else {
            return Deduction(status: .duplicate, month: month, free: 0, prepaid: 0, overage: 0)
        }
        guard call.billable else {
            advanceWatermark(to: call.ts)
            return Deduction(status: .nonBillable, month: month, free: 0, prepaid: 0, overage: 0)
        }
        let a = call.account.index
        let slot = balances.slot(BalanceTable.key(account: call.account.rawValue, pack: call.pack.rawValue, monthTag: tag))
        let state = accountState[a]
        var rest = call.count
        var free: UInt32 = 0
        if state & Self.suspendedBit == 0 {
            let row = grants.base + Int(call.pack.rawValue)
            let grant = row.pointee.freeCalls
            let before = slot.pointee.freeUsed
            let available = grant &- before
            free = min(rest, available)
            slot.pointee.freeUsed &+= free
            rest &-= free
            if free > 0 && before &+ free >= row.pointee.firstNoticeAt && before < row.pointee.lastNoticeAt {
                noticeFreeGrant(call: call, month: month, before: before, after: before &+ free, grant: grant)
            }
        }
        var fromPrepaid: UInt32 = 0
        if rest > 0 && state & Self.noPack != Self.noPack {
            fromPrepaid = drawPrepaid(first: state & Self.noPack, pack: call.pack.rawValue, ts: call.ts, wanted: rest)
            slot.pointee.prepaidUsed &+= UInt64(fromPrepaid)
            rest &-= fromPrepaid
        }
        if rest > 0 && slot.pointee.overage == 0 && notices != nil { noticeOverageStarted(call: call, month: month, overage: rest) }
        slot.pointee.overage &+= UInt64(rest)
        advanceWatermark(to: call.ts)
        return Deduction(status: .applied, month: month, free: free, prepaid: fromPrepaid, overage: rest)
    }

    /// Applies calls in order, exactly as `apply(_:)` one by one, but with the memory each
    /// will touch (its dedupe slots, balance slot and account state) requested
    /// `prefetchDistance` calls ahead, so that cache misses overlap instead of queueing.
    /// `results[i]` is call `i`'s deduction. Notices the calls cause are found and dropped
    /// (`PartitionProcessor` is what writes them).
    public func apply(_ calls: UnsafeBufferPointer<CallEvent>, into results: UnsafeMutablePointer<Deduction>) {
        var batch = CallBatch(calls: calls, results: results)
        applyLoop(&batch)
        if hasNotices { clearNotices() }
    }

    /// The apply loop: applies `batch`'s events in order, after requesting the memory of
    /// the event `prefetchDistance` places ahead, so that cache misses overlap instead of
    /// queueing. Both `apply(_:into:)` and `PartitionProcessor` bill through it.
    @inline(__always)
    func applyLoop<Batch: ApplyLoopBatch>(_ batch: inout Batch) {
        let count = batch.count
        let distance = min(Self.prefetchDistance, count)
        for i in 0..<distance { batch.prefetch(i, in: self) }
        for i in 0..<count {
            if i &+ distance < count { batch.prefetch(i &+ distance, in: self) }
            batch.apply(i, in: self)
        }
    }

    /// How many calls ahead the apply loop prefetches.
    public static let prefetchDistance = 16

    /// Requests the memory applying `call` will touch. A hint only: it changes no state.
    @inline(__always)
    public func prefetch(_ call: CallEvent) {
        dedupe.prefetch(call.id)
        let tag = call.ts >= cachedMonthStart && call.ts < cachedMonthEnd ? cachedMonthTag : 0
        if tag != 0 {
            balances.prefetch(BalanceTable.key(account: call.account.rawValue, pack: call.pack.rawValue, monthTag: tag))
        }
        pm_prefetch(accountState.base + call.account.index)
    }

    /// `free_grant_used` for each threshold the free calls used went past, from `before` to
    /// `after` (each is passed once: used only grows within a month).
    @inline(never)
    private func noticeFreeGrant(call: CallEvent, month: BillingMonth, before: UInt32, after: UInt32, grant: UInt32) {
        guard let notices else { return }
        let k = notices.thresholds.freeGrant.count
        let base = Int(call.pack.rawValue) &* k
        for j in 0..<k {
            let due = notices.freeCounts[base &+ j]
            if before < due && due <= after {
                notices.add(Notice(kind: .freeGrantUsed, account: call.account, pack: call.pack, month: month,
                                   threshold: notices.thresholds.freeGrant[j], used: UInt64(after), limit: UInt64(grant),
                                   expires: 0, purchase: 0..<0))
                hasNotices = true
            }
        }
    }

    @inline(never)
    private func noticeOverageStarted(call: CallEvent, month: BillingMonth, overage: UInt32) {
        notices?.add(Notice(kind: .overageStarted, account: call.account, pack: call.pack, month: month, threshold: 0,
                            used: UInt64(overage), limit: 0, expires: 0, purchase: 0..<0))
        hasNotices = true
    }

    /// Empties the notices collected (once they are written, or where nobody writes them).
    public func clearNotices() {
        notices?.removeAll()
        hasNotices = false
    }

    /// Takes up to `wanted` calls from the account's packs of `pack` in force at `ts`,
    /// oldest effective first (docs/rules.md §6).
    @inline(never)
    private func drawPrepaid(first: UInt32, pack: UInt16, ts: Int64, wanted: UInt32) -> UInt32 {
        var taken: UInt32 = 0
        var s = first
        while s != Self.noPack && taken < wanted {
            let p = prepaid.pointer(Int(s))
            if p.pointee.pack == pack && p.pointee.remaining > 0 && p.pointee.effective <= ts && ts < p.pointee.expires {
                let take = min(p.pointee.remaining, wanted - taken)
                let usedBefore = p.pointee.quantity - p.pointee.remaining
                p.pointee.remaining -= take
                taken += take
                if prepaidNoticeCount > 0 {
                    notePrepaidUse(slot: s, quantity: p.pointee.quantity, before: usedBefore, after: usedBefore + take)
                }
            }
            s = p.pointee.next
        }
        return taken
    }

    /// `prepaid_used` for each threshold pack `slot`'s used calls went past, from `before` to
    /// `after`. t% of q is reached at ceil(q·t/100) calls, and ceil(q·t/100) ≤ x exactly when
    /// q·t ≤ 100·x: multiplications only, as this runs for every draw from a pack.
    @inline(__always)
    private func notePrepaidUse(slot: UInt32, quantity: UInt32, before: UInt32, after: UInt32) {
        let (low, high) = (UInt64(before) &* 100, UInt64(after) &* 100)
        for j in 0..<prepaidNoticeCount {
            let share = UInt64(quantity) &* prepaidNoticePercents.base[j]
            if share > low && share <= high { noticePrepaid(slot: slot, percent: UInt8(prepaidNoticePercents.base[j])) }
        }
    }

    /// `prepaid_used` at `percent` for pack `slot`.
    @inline(never)
    private func noticePrepaid(slot: UInt32, percent t: UInt8) {
        guard let notices else { return }
        let pack = prepaid[Int(slot)]
        let used = UInt64(pack.quantity - pack.remaining)
        notices.add(Notice(kind: .prepaidUsed, account: AccountID(pack.account), pack: PackIndex(pack.pack),
                           month: BillingMonth(rawValue: 0), threshold: t, used: used, limit: UInt64(pack.quantity),
                           expires: pack.expires, purchase: 0..<0),
                    purchase: prepaidIDs[Int(slot)])
        hasNotices = true
    }

    // MARK: - Account events (docs/rules.md §6–§8)

    /// The dedupe month of an account event: its own month, or the first open one if that is
    /// closed, so that its id is remembered at least as long as a current call's.
    private func accountEventTag(_ ts: Int64) -> UInt16 {
        monthTag(max(month(of: ts), firstOpenMonth))
    }

    /// A purchase adds a prepaid pack of `quantity` calls, in force from `effective` until
    /// `expires`. A purchase id already remembered, or equal to a pack the account still
    /// holds, is a duplicate: calls are never added twice.
    public func applyPurchase(account: AccountID, id: UnsafeRawBufferPointer, fingerprint: Fingerprint128,
                              pack: PackIndex, quantity: UInt32, ts: Int64, effective: Int64, expires: Int64) -> AccountEventOutcome {
        if dedupe.contains(fingerprint) || findPrepaid(account: account, id: id) != nil { return .duplicate }
        _ = dedupe.insert(fingerprint, monthTag: accountEventTag(ts), openMonthTag: firstOpenTag)
        let slot = PrepaidSlot(effective: effective, expires: expires, purchasedAt: ts, account: account.rawValue,
                               next: Self.noPack, quantity: quantity, remaining: quantity, pack: pack.rawValue, live: true)
        let index: UInt32
        if prepaidFreeList != Self.noPack {
            index = prepaidFreeList
            prepaidFreeList = prepaid[Int(index)].next
            prepaid[Int(index)] = slot
            prepaidIDs[Int(index)] = Array(id)
        } else {
            precondition(prepaid.count < Int(Self.noPack), "more than 2^31 prepaid packs on one partition")
            index = UInt32(prepaid.count)
            prepaid.append(slot)
            prepaidIDs.append(Array(id))
        }
        // Insert after every pack that took effect at or before this one.
        let a = account.index
        var previous = Self.noPack
        var s = firstPack(a)
        while s != Self.noPack && prepaid[Int(s)].effective <= effective {
            previous = s
            s = prepaid[Int(s)].next
        }
        prepaid[Int(index)].next = s
        if previous == Self.noPack { setFirstPack(a, index) } else { prepaid[Int(previous)].next = index }
        livePrepaidCount += 1
        expiryHeap.push(expires, index)
        if notices != nil { noticeHeap.push(expires &- Self.expiringNoticeMs, index) }
        refreshPackEventAt()
        advanceWatermark(to: ts)
        // A pack bought already within its notice period (or past `expires`) when the
        // watermark did not move.
        if watermark >= noticeHeap.minimum { noticeExpiringPacks() }
        if watermark >= expiryHeap.minimum { dropExpiredPacks() }
        refreshPackEventAt()
        return .applied
    }

    public static let refundWindowMs: Int64 = 7 * 86_400_000

    /// A refund removes a pack only if none of it was used and it comes within 7 days of
    /// the purchase's `ts` (docs/rules.md §6). A rejected refund is not remembered.
    public func applyRefund(account: AccountID, fingerprint: Fingerprint128, purchase: UnsafeRawBufferPointer, ts: Int64) -> AccountEventOutcome {
        if dedupe.contains(fingerprint) { return .duplicate }
        let purchaseName = String(decoding: purchase, as: UTF8.self)
        guard let slot = findPrepaid(account: account, id: purchase) else {
            return .refundRejected("purchase '\(purchaseName)' is not a pack held by account '\(name(of: account))' (never bought, already refunded, or expired)")
        }
        let pack = prepaid[Int(slot)]
        guard pack.remaining == pack.quantity else {
            return .refundRejected("purchase '\(purchaseName)' has been used (\(pack.quantity - pack.remaining) of \(pack.quantity) calls); only an unused pack can be refunded")
        }
        guard ts - pack.purchasedAt <= Self.refundWindowMs else {
            let elapsed = ts - pack.purchasedAt
            return .refundRejected("refund at \(calendar.formatTimestamp(ts)) comes \(DurationText.format(milliseconds: elapsed)) after purchase '\(purchaseName)' at \(calendar.formatTimestamp(pack.purchasedAt)); refunds are allowed within 7d")
        }
        _ = dedupe.insert(fingerprint, monthTag: accountEventTag(ts), openMonthTag: firstOpenTag)
        unlinkPrepaid(slot)
        advanceWatermark(to: ts)
        return .applied
    }

    /// docs/rules.md §7: a suspended account gets no free grant until resumed.
    public func applySuspension(account: AccountID, fingerprint: Fingerprint128, ts: Int64, suspended: Bool) -> AccountEventOutcome {
        if dedupe.contains(fingerprint) { return .duplicate }
        _ = dedupe.insert(fingerprint, monthTag: accountEventTag(ts), openMonthTag: firstOpenTag)
        if suspended {
            accountState[account.index] |= Self.suspendedBit
        } else {
            accountState[account.index] &= ~Self.suspendedBit
        }
        advanceWatermark(to: ts)
        return .applied
    }

    private func findPrepaid(account: AccountID, id: UnsafeRawBufferPointer) -> UInt32? {
        var s = firstPack(account.index)
        while s != Self.noPack {
            let stored = prepaidIDs[Int(s)]
            if stored.count == id.count && stored.withUnsafeBytes({ $0.elementsEqual(id) }) { return s }
            s = prepaid[Int(s)].next
        }
        return nil
    }

    private func unlinkPrepaid(_ slot: UInt32) {
        let a = Int(prepaid[Int(slot)].account)
        var previous = Self.noPack
        var s = firstPack(a)
        while s != slot {
            previous = s
            s = prepaid[Int(s)].next
        }
        if previous == Self.noPack { setFirstPack(a, prepaid[Int(slot)].next) } else { prepaid[Int(previous)].next = prepaid[Int(slot)].next }
        prepaid[Int(slot)].live = false
        prepaid[Int(slot)].next = prepaidFreeList
        prepaidIDs[Int(slot)] = []
        prepaidFreeList = slot
        livePrepaidCount -= 1
    }

    // MARK: - Statistics

    /// Live (account, pack, month) balances.
    public var liveBalanceCount: Int { balances.count }
    /// Ids currently remembered.
    public var rememberedIDs: Int { dedupe.count }
    /// Ids forgotten because the window was full, and among them those whose month was open.
    public var dedupeEvictions: (all: UInt64, openMonth: UInt64) { (dedupe.evictedIDs, dedupe.evictedOpenMonthIDs) }

    /// Bytes held by each part of the state, for sizing a deployment.
    public var memoryFootprint: (balances: Int, accounts: Int, dedupe: Int, prepaid: Int) {
        (balances.allocatedBytes, accounts.allocatedBytes + accountState.allocatedBytes, dedupe.allocatedBytes,
         prepaid.allocatedBytes + prepaidIDs.reduce(0) { $0 + $1.count + 16 })
    }
}

/// Events the apply loop walks: it asks for the memory of one ahead, then applies one.
protocol ApplyLoopBatch {
    var count: Int { get }
    func prefetch(_ i: Int, in engine: PartitionEngine)
    mutating func apply(_ i: Int, in engine: PartitionEngine)
}

/// Decoded calls and where their deductions go: what `apply(_:into:)` walks.
struct CallBatch: ApplyLoopBatch {
    let calls: UnsafeBufferPointer<CallEvent>
    let results: UnsafeMutablePointer<Deduction>

    var count: Int { calls.count }

    @inline(__always)
    func prefetch(_ i: Int, in engine: PartitionEngine) { engine.prefetch(calls[i]) }

    @inline(__always)
    func apply(_ i: Int, in engine: PartitionEngine) {
        results[i] = engine.settle(calls[i])
    }
}
