import CPackMeterSupport

/// The free-grant, prepaid and overage use of every (account, pack, billing month) in open
/// months (docs/rules.md §4–§5), in one open-addressing table keyed by all three.
///
/// A call's slot is found from the call alone (no per-account chain to walk), so the engine
/// can prefetch it several calls ahead. Each slot is 32 bytes; the table stays between 1/2
/// and 3/4 full (it grows by half when 3/4 full), so a live balance costs 43–64 bytes.
final class BalanceTable {
    struct Slot: BitwiseCopyable {
        /// `(account + 1) << 32 | pack << 16 | month tag`; 0 = empty.
        var key: UInt64
        /// Calls taken from this month's free grant.
        var freeUsed: UInt32
        var reserved: UInt32
        /// Calls taken from prepaid packs by calls of this month.
        var prepaidUsed: UInt64
        /// Calls billed as overage in this month.
        var overage: UInt64

        static let empty = Slot(key: 0, freeUsed: 0, reserved: 0, prepaidUsed: 0, overage: 0)

        var account: UInt32 { UInt32(truncatingIfNeeded: key >> 32) - 1 }
        var pack: UInt16 { UInt16(truncatingIfNeeded: key >> 16) }
        var monthTag: UInt16 { UInt16(truncatingIfNeeded: key) }
    }

    var slots: FlatBuffer<Slot>
    var count = 0
    var size: Int
    var growAt: Int

    init(initialSize: Int = 1024) {
        size = max(initialSize, 16)
        slots = FlatBuffer(repeating: .empty, count: size)
        growAt = size * 3 / 4
    }

    @inline(always)
    static func key(account: UInt32, pack: UInt16, monthTag: UInt16) -> UInt64 {
        (UInt64(account) + 1) << 32 | UInt64(pack) << 16 | UInt64(monthTag)
    }

    /// Where the probe for `key` starts: a mixed hash mapped onto `0..<size`.
    @inline(always)
    private func home(_ key: UInt64) -> Int {
        let mixed = (key ^ (key >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return Int(truncatingIfNeeded: mixed.multipliedFullWidth(by: UInt64(size)).high)
    }

    /// Requests the line of `key`'s home slot and of the slot after it: a slot is half a
    /// line, and at this table's load a lookup often takes a second probe, which from an odd
    /// home is the next line.
    @inline(always)
    func prefetch(_ key: UInt64) {
        let slot = slots.base + home(key)
        pm_prefetch_write(slot)
        pm_prefetch_write(slot + 1)  // past the end is allowed: a prefetch never faults
    }

    /// The slot of `key`, created empty if absent.
    @inline(always)
    func slot(_ key: UInt64) -> UnsafeMutablePointer<Slot> {
        var i = home(key)
        let base = slots.base
        while true {
            let k = base[i].key
            if k == key { return base + i }
            if k == 0 { break }
            i += 1
            if i == size { i = 0 }
        }
        return add(key, at: i)
    }

    /// Creates `key`'s slot at `i`, the empty slot that ended its probe, or after growing
    /// the table. Out of line: once per (account, pack, month).
    @inline(never)
    private func add(_ key: UInt64, at empty: Int) -> UnsafeMutablePointer<Slot> {
        var i = empty
        if count >= growAt {
            grow()
            i = firstEmpty(from: home(key))
        }
        slots.base[i] = Slot(key: key, freeUsed: 0, reserved: 0, prepaidUsed: 0, overage: 0)
        count += 1
        return slots.base + i
    }

    /// The slot of `key` if it exists.
    func find(_ key: UInt64) -> Slot? {
        var i = home(key)
        while true {
            let s = slots[i]
            if s.key == key { return s }
            if s.key == 0 { return nil }
            i += 1
            if i == size { i = 0 }
        }
    }

    /// The first empty slot at or after `i`, wrapping around.
    private func firstEmpty(from i: Int) -> Int {
        var i = i
        while slots.base[i].key != 0 {
            i += 1
            if i == size { i = 0 }
        }
        return i
    }

    private func grow() {
        rebuild(size: size + size / 2) { _ in true }
    }

    /// Keeps only the slots `keep` accepts (used when months close).
    func removeAll(where drop: (Slot) -> Bool) {
        rebuild(size: size) { !drop($0) }
    }

    private func rebuild(size newSize: Int, keep: (Slot) -> Bool) {
        let old = slots
        size = newSize
        slots = FlatBuffer(repeating: .empty, count: newSize)
        growAt = newSize * 3 / 4
        count = 0
        for k in 0..<old.count {
            let s = old[k]
            guard s.key != 0, keep(s) else { continue }
            slots.base[firstEmpty(from: home(s.key))] = s
            count += 1
        }
    }

    /// Every live slot, in table order.
    func forEach(_ body: (Slot) -> Void) {
        for k in 0..<slots.count where slots[k].key != 0 { body(slots[k]) }
    }

    var allocatedBytes: Int { slots.allocatedBytes }
}
