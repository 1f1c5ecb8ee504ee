/// The ids an engine remembers, to skip a repeated event (RULES.md §8, CONTRACT.md check 5).
///
/// **Layout.** An id is remembered by a 112-bit fingerprint (of its bytes) plus the billing
/// month it belongs to, in one 16-byte slot of an open-addressing table (linear probing, at
/// most 70% full). Two such tables are kept as generations: new ids go into the current one,
/// lookups check both.
///
/// **The bound.** Each generation holds at most `generationCapacity` ids (the table starts
/// small and doubles up to that). When the current generation is full, the previous one is
/// dropped and the current one becomes previous. So the window always holds at least the
/// last `generationCapacity` accepted ids and at most twice that; a table full of ids costs
/// 16 / 0.7 ≈ 23 bytes per id, two full generations ≈ 46 bytes per id of the guaranteed
/// window. Dropping a generation is counted (`evictedIDs`, and `evictedOpenMonthIDs` for ids
/// whose month was still open, i.e. whose repeat would have been billed again): operators
/// size `--dedupe-capacity` to at least their partition's peak rate × the allowed lateness.
///
/// **Month close.** Once a month is closed no call of it is applied again (check 4 comes
/// first), so its ids are purged then, keeping checkpoints small.
///
/// A fingerprint collision (two different ids with the same 112 bits) would make the second
/// a false duplicate; among a million ids the chance is about 10⁻²².
final class DedupeWindow {
    struct Slot: BitwiseCopyable {
        /// Fingerprint bits 0–63.
        var high: UInt64
        /// Fingerprint bits 64–111 in the top 48 bits, month tag in the low 16 (0 = empty).
        var lowAndMonth: UInt64

        @inline(__always) var isEmpty: Bool { lowAndMonth & 0xFFFF == 0 }
        @inline(__always) var monthTag: UInt16 { UInt16(truncatingIfNeeded: lowAndMonth) }
        static let empty = Slot(high: 0, lowAndMonth: 0)
    }

    struct Generation {
        var slots: FlatBuffer<Slot>
        var count: Int

        init(size: Int) {
            slots = FlatBuffer(repeating: .empty, count: size)
            count = 0
        }

        var mask: Int { slots.count - 1 }
    }

    let generationCapacity: Int
    /// The largest table of a generation: the power of two that keeps `generationCapacity`
    /// ids at ≤ 70% load.
    let tableSizeMax: Int
    private(set) var current: Generation
    private(set) var previous: Generation
    private(set) var evictedIDs: UInt64 = 0
    private(set) var evictedOpenMonthIDs: UInt64 = 0
    private(set) var rotations: UInt64 = 0

    static let initialTableSize = 1024

    init(generationCapacity: Int) {
        precondition(generationCapacity > 0)
        self.generationCapacity = generationCapacity
        var size = Self.initialTableSize
        while size * 7 / 10 < generationCapacity { size *= 2 }
        tableSizeMax = size
        current = Generation(size: Self.initialTableSize)
        previous = Generation(size: Self.initialTableSize)
    }

    var count: Int { current.count + previous.count }

    @inline(__always)
    static func key(_ fp: Fingerprint128, monthTag: UInt16) -> Slot {
        Slot(high: fp.high, lowAndMonth: (fp.low & 0xFFFF_FFFF_FFFF_0000) | UInt64(monthTag))
    }

    /// Where a lookup of `fp` starts in a table of `size` slots.
    @inline(__always)
    static func home(_ fp: Fingerprint128, size: Int) -> Int {
        Int(truncatingIfNeeded: fp.high) & (size - 1)
    }

    @inline(__always)
    private static func find(_ fp: Fingerprint128, in g: Generation) -> Bool {
        let mask = g.mask
        var i = home(fp, size: mask + 1)
        let low = fp.low & 0xFFFF_FFFF_FFFF_0000
        let base = g.slots.base
        while true {
            let s = base[i]
            if s.isEmpty { return false }
            if s.high == fp.high && s.lowAndMonth & 0xFFFF_FFFF_FFFF_0000 == low { return true }
            i = (i + 1) & mask
        }
    }

    @inline(__always)
    func contains(_ fp: Fingerprint128) -> Bool {
        Self.find(fp, in: current) || (previous.count > 0 && Self.find(fp, in: previous))
    }

    /// Remembers `fp` unless it already is; returns false for a duplicate.
    /// `openMonthTag` is the engine's first open month, for counting early evictions.
    @inline(__always)
    func insert(_ fp: Fingerprint128, monthTag: UInt16, openMonthTag: UInt16) -> Bool {
        if previous.count > 0 && Self.find(fp, in: previous) { return false }
        let mask = current.mask
        var i = Self.home(fp, size: mask + 1)
        let low = fp.low & 0xFFFF_FFFF_FFFF_0000
        let base = current.slots.base
        while true {
            let s = base[i]
            if s.isEmpty { break }
            if s.high == fp.high && s.lowAndMonth & 0xFFFF_FFFF_FFFF_0000 == low { return false }
            i = (i + 1) & mask
        }
        base[i] = Self.key(fp, monthTag: monthTag)
        current.count += 1
        if current.count * 10 > (mask + 1) * 7 || current.count >= generationCapacity {
            makeRoom(openMonthTag: openMonthTag)
        }
        return true
    }

    private func makeRoom(openMonthTag: UInt16) {
        let size = current.mask + 1
        if size < tableSizeMax && current.count < generationCapacity {
            current = Self.rehash(current, size: size * 2, keep: { _ in true })
            return
        }
        // Rotate: the previous generation is forgotten.
        var openDropped = 0
        let slots = previous.slots
        for k in 0..<slots.count {
            let s = slots[k]
            if !s.isEmpty && s.monthTag >= openMonthTag { openDropped += 1 }
        }
        evictedIDs += UInt64(previous.count)
        evictedOpenMonthIDs += UInt64(openDropped)
        rotations += 1
        let recycled = previous
        previous = current
        if recycled.slots.count == size {
            recycled.slots.base.update(repeating: .empty, count: size)
            current = Generation(slots: recycled.slots, count: 0)
        } else {
            current = Generation(size: size)
        }
    }

    private static func rehash(_ g: Generation, size: Int, keep: (Slot) -> Bool) -> Generation {
        var fresh = Generation(size: size)
        let mask = size - 1
        for k in 0..<g.slots.count {
            let s = g.slots[k]
            guard !s.isEmpty, keep(s) else { continue }
            var i = Int(truncatingIfNeeded: s.high) & mask
            while !fresh.slots[i].isEmpty { i = (i + 1) & mask }
            fresh.slots[i] = s
            fresh.count += 1
        }
        return fresh
    }

    /// Forgets every id of a month before `openMonthTag` (those months are closed).
    func purgeMonths(before openMonthTag: UInt16) {
        let keep: (Slot) -> Bool = { $0.monthTag >= openMonthTag }
        current = Self.rehash(current, size: current.mask + 1, keep: keep)
        previous = Self.rehash(previous, size: previous.mask + 1, keep: keep)
    }

    // MARK: - Checkpoints

    /// Every remembered id with its generation (true = current), in table order.
    func forEachEntry(_ body: (Slot, Bool) -> Void) {
        for (g, isCurrent) in [(current, true), (previous, false)] {
            for k in 0..<g.slots.count where !g.slots[k].isEmpty { body(g.slots[k], isCurrent) }
        }
    }

    var tableSizes: (current: Int, previous: Int) { (current.mask + 1, previous.mask + 1) }

    /// Rebuilds a window from checkpointed entries and table sizes.
    func restore(currentSize: Int, previousSize: Int, entries: [(Slot, Bool)], counters: (evicted: UInt64, evictedOpen: UInt64, rotations: UInt64)) {
        current = Generation(size: currentSize)
        previous = Generation(size: previousSize)
        for (s, isCurrent) in entries {
            var g = isCurrent ? current : previous
            let mask = g.mask
            var i = Int(truncatingIfNeeded: s.high) & mask
            while !g.slots[i].isEmpty { i = (i + 1) & mask }
            g.slots[i] = s
            g.count += 1
            if isCurrent { current = g } else { previous = g }
        }
        evictedIDs = counters.evicted
        evictedOpenMonthIDs = counters.evictedOpen
        rotations = counters.rotations
    }

    var allocatedBytes: Int { current.slots.allocatedBytes + previous.slots.allocatedBytes }
}

extension DedupeWindow.Generation {
    init(slots: FlatBuffer<DedupeWindow.Slot>, count: Int) {
        self.slots = slots
        self.count = count
    }
}
