/// Saving and restoring a partition engine's whole state: the accounts, balances of open
/// months, prepaid packs, suspensions, watermark and dedupe window — everything the
/// engine's future decisions depend on, bit for bit, so that a restored engine decides
/// exactly as the original would have.
extension PartitionEngine {
    static let stateMagic: Int64 = 0x504D_454E_4733  // "PMENG3"
    static let stateEndMagic: Int64 = 0x504D_454E_4445  // "PMENDE"

    /// A deep copy for a checkpoint, taken between batches on the shard's thread. It only
    /// copies tables (memory to memory); encoding it can then happen on another thread
    /// while this engine goes on. Its dedupe window has no filter of its own (see
    /// `DedupeWindow.init(copying:)`): it decides exactly as this engine would, but is
    /// meant to be encoded, not run.
    public func copy() -> PartitionEngine {
        let other = PartitionEngine(catalog: catalog, calendar: calendar, allowedLatenessMs: allowedLatenessMs,
                                    dedupe: DedupeWindow(copying: dedupe), expectedAccounts: 1, notices: nil)
        other.watermark = watermark
        other.firstOpenMonth = firstOpenMonth
        other.nextCloseAt = nextCloseAt
        other.accounts.adopt(arena: accounts.arena.copy(), starts: accounts.starts.copy())
        other.accountState.replace(with: accountState)
        other.balances.slots = balances.slots.copy()
        other.balances.count = balances.count
        other.balances.size = balances.size
        other.balances.growAt = balances.growAt
        other.prepaid.replace(with: prepaid)
        other.prepaidIDs = prepaidIDs
        other.prepaidFreeList = prepaidFreeList
        other.expiryHeap = expiryHeap
        other.refreshPackEventAt()
        other.livePrepaidCount = livePrepaidCount
        return other
    }

    /// Writes the whole state.
    public func encodeState(to w: StateWriter) {
        w.int64(Self.stateMagic)
        w.int64(watermark)
        w.int64(Int64(firstOpenMonth.rawValue))
        w.int64(nextCloseAt)
        w.buffer(accounts.arena)
        w.buffer(accounts.starts)
        w.buffer(accountState)
        w.buffer(balances.slots)
        w.int(balances.count)
        w.int(balances.size)
        w.int(balances.growAt)
        w.buffer(prepaid)
        w.int(prepaidIDs.count)
        for id in prepaidIDs { w.bytes(id) }
        w.int64(Int64(prepaidFreeList))
        w.int(livePrepaidCount)
        w.int(expiryHeap.items.count)
        for item in expiryHeap.items {
            w.int64(item.expires)
            w.int64(Int64(item.slot))
        }
        w.int(dedupe.generationCapacity)
        for ids in dedupe.savedIDs() { w.buffer(ids) }
        w.uint64(dedupe.evictedIDs)
        w.uint64(dedupe.evictedOpenMonthIDs)
        w.uint64(dedupe.rotations)
        w.int64(Self.stateEndMagic)
        w.flush()
    }

    /// Replaces this engine's state with `r`'s. The engine must have been created with the
    /// same catalog, calendar, lateness and dedupe capacity as the one that wrote it (the
    /// checkpoint header records them; the caller compares first).
    public func decodeState(from r: inout StateReader) throws(StateDecodingError) {
        guard try r.int64() == Self.stateMagic else { throw StateDecodingError("not packmeter engine state (bad magic)") }
        watermark = try r.int64()
        let open = try r.int64()
        guard open >= 0 && open <= Int64(Int32.max) else { throw StateDecodingError("first open month \(open) out of range") }
        firstOpenMonth = BillingMonth(rawValue: Int32(open))
        nextCloseAt = try r.int64()
        let arena = try r.buffer(UInt8.self, minimumCapacity: 1 << 16)
        let starts = try r.buffer(UInt32.self, minimumCapacity: 1024)
        guard AccountDirectory.isValid(arena: arena, starts: starts, maxBytes: EventDecoder.accountBytesMax) else {
            throw StateDecodingError("account table is inconsistent")
        }
        accounts.adopt(arena: arena, starts: starts)
        let states = try r.buffer(UInt32.self, minimumCapacity: 1024)
        guard states.count == accounts.count else { throw StateDecodingError("\(states.count) account states for \(accounts.count) accounts") }
        accountState.replace(with: states)
        balances.slots = try r.buffer(BalanceTable.Slot.self)
        balances.count = try r.int()
        balances.size = try r.int()
        balances.growAt = try r.int()
        guard balances.size == balances.slots.count, balances.count <= balances.size else {
            throw StateDecodingError("balance table is inconsistent")
        }
        prepaid.replace(with: try r.buffer(PrepaidSlot.self, minimumCapacity: 16))
        let idCount = try r.int()
        guard idCount == prepaid.count else { throw StateDecodingError("\(idCount) purchase ids for \(prepaid.count) prepaid packs") }
        prepaidIDs = []
        prepaidIDs.reserveCapacity(idCount)
        for _ in 0..<idCount { prepaidIDs.append(try r.byteArray()) }
        let freeList = try r.int64()
        guard freeList >= 0 && freeList <= Int64(Self.noPack) else { throw StateDecodingError("prepaid free list out of range") }
        prepaidFreeList = UInt32(freeList)
        livePrepaidCount = try r.int()
        let heapCount = try r.int()
        expiryHeap.removeAll()
        var items: [(expires: Int64, slot: UInt32)] = []
        items.reserveCapacity(heapCount)
        for _ in 0..<heapCount {
            let expires = try r.int64()
            let slot = try r.int64()
            guard slot >= 0 && slot < Int64(prepaid.count) else { throw StateDecodingError("expiry entry for unknown pack \(slot)") }
            items.append((expires, UInt32(slot)))
        }
        expiryHeap.restore(items)
        let capacity = try r.int()
        guard capacity == dedupe.generationCapacity else {
            throw StateDecodingError("the state was written with a dedupe capacity of \(capacity) ids, this engine has \(dedupe.generationCapacity)")
        }
        var saved: [FlatBuffer<DedupeWindow.Slot>] = []
        for _ in 0..<2 {
            let ids = try r.buffer(DedupeWindow.Slot.self)
            guard ids.count <= dedupe.generationCapacity else {
                throw StateDecodingError("a dedupe generation holds \(ids.count) ids, more than its capacity \(dedupe.generationCapacity)")
            }
            guard ids.elements.allSatisfy({ $0.monthTag != 0 }) else { throw StateDecodingError("a remembered id has no month") }
            saved.append(ids)
        }
        let counters = (evicted: try r.uint64(), evictedOpen: try r.uint64(), rotations: try r.uint64())
        dedupe.restore(current: saved[0].elements, previous: saved[1].elements, counters: counters)
        guard try r.int64() == Self.stateEndMagic, r.isAtEnd else { throw StateDecodingError("state does not end where it should") }
        rebuildNoticeHeap()
    }

    /// The live packs whose `prepaid_expiring` notice the watermark has not reached yet: those
    /// it has reached were notified (or had no calls left) when it did.
    func rebuildNoticeHeap() {
        noticeHeap.removeAll()
        refreshPackEventAt()
        guard notices != nil else { return }
        for (slot, pack) in prepaid.elements.enumerated() where pack.live && pack.expires &- Self.expiringNoticeMs > watermark {
            noticeHeap.push(pack.expires &- Self.expiringNoticeMs, UInt32(slot))
        }
        refreshPackEventAt()
    }
}

extension FlatBuffer {
    /// Makes this buffer an exact copy of `other`.
    func replace(with other: FlatBuffer<Element>) {
        reserve(other.count)
        if other.count > 0 { base.update(from: other.base, count: other.count) }
        count = other.count
    }
}

extension ExpiryHeap {
    /// Takes a heap's items exactly as saved (they are already in heap order).
    mutating func restore(_ saved: [(expires: Int64, slot: UInt32)]) {
        removeAll()
        for item in saved { push(item.expires, item.slot) }
    }
}
