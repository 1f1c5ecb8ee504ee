import CPackMeterSupport

/// The ids an engine remembers, to skip a repeated event (RULES.md §8, CONTRACT.md check 5).
///
/// **Layout.** An id is remembered by a 112-bit fingerprint (of its bytes) plus the billing
/// month it belongs to, in one 16-byte slot of an open-addressing table (linear probing, at
/// most 70% full). Two such tables are kept as generations: new ids go into the current one,
/// lookups check both. Each generation also keeps a blocked Bloom filter (16 bits per id, one
/// cache line per lookup, small enough to stay in cache), so the previous generation's big
/// table is only probed when its filter says the id may be there: a fresh id costs one
/// random memory access, not two.
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
        var filter: BloomFilter
        /// Ids per month tag, to count early evictions without scanning the table.
        var monthCounts: [UInt32]

        init(size: Int, filterBits: Int) {
            slots = FlatBuffer(repeating: .empty, count: size)
            count = 0
            filter = BloomFilter(bits: filterBits)
            monthCounts = [UInt32](repeating: 0, count: 4096)
        }

        var mask: Int { slots.count - 1 }

        /// Adds `slot` at its place; the caller knows it is absent.
        @inline(__always)
        mutating func add(_ s: Slot) {
            let mask = self.mask
            var i = Int(truncatingIfNeeded: s.high) & mask
            while !slots.base[i].isEmpty { i = (i + 1) & mask }
            slots.base[i] = s
            count += 1
            filter.insert(high: s.high, low: s.lowAndMonth)
            monthCounts[Int(s.monthTag)] &+= 1
        }

        mutating func clear() {
            slots.base.update(repeating: .empty, count: slots.count)
            count = 0
            filter.clear()
            for i in monthCounts.indices { monthCounts[i] = 0 }
        }
    }

    /// Bits in each generation's filter: 16 per id of capacity, a power of two.
    let filterBits: Int

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
        var bits = 1 << 12
        while bits < generationCapacity * 16 { bits *= 2 }
        filterBits = bits
        current = Generation(size: Self.initialTableSize, filterBits: bits)
        previous = Generation(size: Self.initialTableSize, filterBits: bits)
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

    /// Requests the slots a lookup of `fp` starts at, in both generations.
    @inline(__always)
    func prefetch(_ fp: Fingerprint128) {
        pm_prefetch(current.slots.base + Self.home(fp, size: current.mask + 1))
        current.filter.prefetch(high: fp.high, low: fp.low)
        if previous.count > 0 { previous.filter.prefetch(high: fp.high, low: fp.low) }
    }

    @inline(__always)
    private func inPrevious(_ fp: Fingerprint128) -> Bool {
        previous.count > 0 && previous.filter.mayContain(high: fp.high, low: fp.low) && Self.find(fp, in: previous)
    }

    @inline(__always)
    func contains(_ fp: Fingerprint128) -> Bool {
        Self.find(fp, in: current) || inPrevious(fp)
    }

    /// Remembers `fp` unless it already is; returns false for a duplicate.
    /// `openMonthTag` is the engine's first open month, for counting early evictions.
    @inline(__always)
    func insert(_ fp: Fingerprint128, monthTag: UInt16, openMonthTag: UInt16) -> Bool {
        if inPrevious(fp) { return false }
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
        current.filter.insert(high: fp.high, low: fp.low)
        current.monthCounts[Int(monthTag)] &+= 1
        if current.count * 10 > (mask + 1) * 7 || current.count >= generationCapacity {
            makeRoom(openMonthTag: openMonthTag)
        }
        return true
    }

    private func makeRoom(openMonthTag: UInt16) {
        let size = current.mask + 1
        if size < tableSizeMax && current.count < generationCapacity {
            current = rehash(current, size: size * 2, keep: { _ in true })
            return
        }
        // Rotate: the previous generation is forgotten.
        var openDropped: UInt64 = 0
        for tag in Int(openMonthTag)..<previous.monthCounts.count { openDropped += UInt64(previous.monthCounts[tag]) }
        evictedIDs += UInt64(previous.count)
        evictedOpenMonthIDs += openDropped
        rotations += 1
        var recycled = previous
        previous = current
        if recycled.slots.count == size {
            recycled.clear()
            current = recycled
        } else {
            current = Generation(size: size, filterBits: filterBits)
        }
    }

    private func rehash(_ g: Generation, size: Int, keep: (Slot) -> Bool) -> Generation {
        var fresh = Generation(size: size, filterBits: filterBits)
        for k in 0..<g.slots.count {
            let s = g.slots[k]
            if !s.isEmpty && keep(s) { fresh.add(s) }
        }
        return fresh
    }

    /// Forgets every id of a month before `openMonthTag` (those months are closed).
    func purgeMonths(before openMonthTag: UInt16) {
        let keep: (Slot) -> Bool = { $0.monthTag >= openMonthTag }
        current = rehash(current, size: current.mask + 1, keep: keep)
        previous = rehash(previous, size: previous.mask + 1, keep: keep)
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
        current = Generation(size: currentSize, filterBits: filterBits)
        previous = Generation(size: previousSize, filterBits: filterBits)
        for (s, isCurrent) in entries {
            if isCurrent { current.add(s) } else { previous.add(s) }
        }
        evictedIDs = counters.evicted
        evictedOpenMonthIDs = counters.evictedOpen
        rotations = counters.rotations
    }

    var allocatedBytes: Int {
        current.slots.allocatedBytes + previous.slots.allocatedBytes + 2 * filterBits / 8
    }
}

/// A blocked Bloom filter: each id sets 4 bits within one 64-byte block, so a test reads a
/// single cache line. No false negatives; with 16 bits per id about 0.2% false positives.
struct BloomFilter {
    let words: FlatBuffer<UInt64>
    let blockMask: Int

    init(bits: Int) {
        words = FlatBuffer(repeating: 0, count: bits / 64)
        blockMask = bits / 512 - 1
    }

    @inline(__always)
    private func block(_ high: UInt64) -> Int { Int(truncatingIfNeeded: high >> 32) & blockMask }

    @inline(__always)
    func prefetch(high: UInt64, low: UInt64) {
        pm_prefetch(words.base + block(high) * 8)
    }

    @inline(__always)
    func insert(high: UInt64, low: UInt64) {
        let base = words.base + block(high) * 8
        var bits = low
        for _ in 0..<4 {
            let bit = Int(truncatingIfNeeded: bits >> 16) & 511
            base[bit >> 6] |= 1 << UInt64(bit & 63)
            bits = bits >> 9
        }
    }

    @inline(__always)
    func mayContain(high: UInt64, low: UInt64) -> Bool {
        let base = words.base + block(high) * 8
        var bits = low
        for _ in 0..<4 {
            let bit = Int(truncatingIfNeeded: bits >> 16) & 511
            if base[bit >> 6] & (1 << UInt64(bit & 63)) == 0 { return false }
            bits = bits >> 9
        }
        return true
    }

    func clear() { words.base.update(repeating: 0, count: words.count) }
}
