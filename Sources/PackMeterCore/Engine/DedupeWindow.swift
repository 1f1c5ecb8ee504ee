import CPackMeterSupport

/// The ids an engine remembers, to skip a repeated event (RULES.md §8, CONTRACT.md check 5).
///
/// **Layout.** An id is remembered by a 112-bit fingerprint (of its bytes) plus the billing
/// month it belongs to, in one 16-byte slot of an open-addressing table (linear probing, at
/// most 70% full). Two tables are kept as generations: new ids join the current one, lookups
/// check both. Each generation also has a blocked Bloom filter (16 bits per id; a test reads
/// one cache line), small enough to stay in cache, so a big table is only probed when its
/// filter says the id may be there. New ids are first gathered in a small staging table
/// (kept in cache) and moved into the current generation's big table in address order
/// when it fills: a fresh id, the common case, touches no cold memory at all.
///
/// **The bound.** Each generation holds at most `generationCapacity` ids (its table starts
/// small and doubles up to that). When the current generation is full, the previous one is
/// dropped and the current one becomes previous. So the window always holds at least the
/// last `generationCapacity` accepted ids and at most twice that. A remembered id costs
/// 16 / 0.7 ≈ 23 bytes of table plus 2 bytes of filter: two full generations cost about
/// 50 bytes per id of the guaranteed window. Dropping a generation is counted
/// (`evictedIDs`, and `evictedOpenMonthIDs` for ids whose month was still open, i.e. whose
/// repeat would have been billed again): operators size `--dedupe-capacity` to at least
/// their partition's peak rate × the allowed lateness.
///
/// **Month close.** Once a month is closed no call of it is applied again (check 4 comes
/// first), so its ids are purged then, keeping checkpoints small.
///
/// A fingerprint collision (two different ids with the same 112 bits) would make the second
/// a false duplicate; among a million remembered ids the chance per event is about 10⁻²⁸.
final class DedupeWindow {
    struct Slot: BitwiseCopyable, Equatable {
        /// Fingerprint bits 0–63: the table position comes from its top bits, the filter
        /// block from its low bits.
        var high: UInt64
        /// Fingerprint bits 64–111 in the top 48 bits, month tag in the low 16 (0 = empty).
        var lowAndMonth: UInt64

        @inline(__always) var isEmpty: Bool { lowAndMonth & 0xFFFF == 0 }
        @inline(__always) var monthTag: UInt16 { UInt16(truncatingIfNeeded: lowAndMonth) }
        @inline(__always) func matches(_ high: UInt64, _ low: UInt64) -> Bool {
            self.high == high && lowAndMonth & 0xFFFF_FFFF_FFFF_0000 == low
        }
        static let empty = Slot(high: 0, lowAndMonth: 0)
    }

    /// An open-addressing table of slots whose size is a power of two; an id's home is the
    /// top bits of its fingerprint, so walking a table in order visits ids in home order of
    /// any other table.
    struct Table {
        let slots: FlatBuffer<Slot>
        let shift: UInt64
        var count = 0

        init(size: Int) {
            self.init(slots: FlatBuffer(repeating: .empty, count: size), count: 0)
        }

        init(slots: FlatBuffer<Slot>, count: Int) {
            let size = slots.count
            precondition(size.nonzeroBitCount == 1 && size >= 2)
            self.slots = slots
            shift = UInt64(64 - size.trailingZeroBitCount)
            self.count = count
        }

        var size: Int { slots.count }

        @inline(__always)
        func home(_ high: UInt64) -> Int { Int(truncatingIfNeeded: high >> shift) }

        @inline(__always)
        func find(_ high: UInt64, _ low: UInt64) -> Bool {
            let base = slots.base
            let mask = size - 1
            var i = home(high)
            while true {
                let s = base[i]
                if s.isEmpty { return false }
                if s.matches(high, low) { return true }
                i = (i + 1) & mask
            }
        }

        /// Adds `s`, known to be absent.
        @inline(__always)
        mutating func add(_ s: Slot) {
            let base = slots.base
            let mask = size - 1
            var i = home(s.high)
            while !base[i].isEmpty { i = (i + 1) & mask }
            base[i] = s
            count += 1
        }

        mutating func clear() {
            slots.base.update(repeating: .empty, count: size)
            count = 0
        }

        func forEach(_ body: (Slot) -> Void) {
            let base = slots.base
            for k in 0..<size where !base[k].isEmpty { body(base[k]) }
        }
    }

    struct Generation {
        var table: Table
        /// Ids in the generation, staged ones included for the current generation.
        var count = 0
        let filter: BloomFilter
        /// Ids per month tag, to count early evictions without scanning the table.
        var monthCounts: [UInt32]

        init(tableSize: Int, filterBits: Int) {
            table = Table(size: tableSize)
            filter = BloomFilter(bits: filterBits)
            monthCounts = [UInt32](repeating: 0, count: 4096)
        }

        init(table: Table, count: Int, filter: BloomFilter, monthCounts: [UInt32]) {
            self.table = table
            self.count = count
            self.filter = filter
            self.monthCounts = monthCounts
        }

        mutating func clear() {
            table.clear()
            count = 0
            filter.clear()
            for i in monthCounts.indices { monthCounts[i] = 0 }
        }
    }

    let generationCapacity: Int
    /// The largest table of a generation: the power of two that keeps `generationCapacity`
    /// ids at ≤ 70% load.
    let tableSizeMax: Int
    /// Bits in each generation's filter: 16 per id of capacity, a power of two.
    let filterBits: Int
    var current: Generation
    var previous: Generation
    /// New ids of the current generation not yet in its table.
    var staging: Table
    private let stagingLimit: Int
    var evictedIDs: UInt64 = 0
    var evictedOpenMonthIDs: UInt64 = 0
    var rotations: UInt64 = 0

    static let initialTableSize = 1024
    static let stagingSize = 1 << 14

    init(generationCapacity: Int) {
        precondition(generationCapacity > 0)
        self.generationCapacity = generationCapacity
        var size = Self.initialTableSize
        while size * 7 / 10 < generationCapacity { size *= 2 }
        tableSizeMax = size
        var bits = 1 << 12
        while bits < generationCapacity * 16 { bits *= 2 }
        filterBits = bits
        current = Generation(tableSize: Self.initialTableSize, filterBits: bits)
        previous = Generation(tableSize: Self.initialTableSize, filterBits: bits)
        staging = Table(size: Self.stagingSize)
        stagingLimit = Self.stagingSize / 2
    }

    var count: Int { current.count + previous.count }

    @inline(__always)
    static func key(_ fp: Fingerprint128, monthTag: UInt16) -> Slot {
        Slot(high: fp.high, lowAndMonth: (fp.low & 0xFFFF_FFFF_FFFF_0000) | UInt64(monthTag))
    }

    /// Requests the cache lines a lookup of `fp` reads.
    @inline(__always)
    func prefetch(_ fp: Fingerprint128) {
        pm_prefetch(staging.slots.base + staging.home(fp.high))
        current.filter.prefetch(high: fp.high)
        if previous.count > 0 { previous.filter.prefetch(high: fp.high) }
    }

    @inline(__always)
    func contains(_ fp: Fingerprint128) -> Bool {
        let low = fp.low & 0xFFFF_FFFF_FFFF_0000
        if staging.count > 0 && staging.find(fp.high, low) { return true }
        if current.filter.mayContain(high: fp.high, low: fp.low) && current.table.find(fp.high, low) { return true }
        return previous.count > 0 && previous.filter.mayContain(high: fp.high, low: fp.low) && previous.table.find(fp.high, low)
    }

    /// Remembers `fp` unless it already is; returns false for a duplicate.
    /// `openMonthTag` is the engine's first open month, for counting early evictions.
    @inline(__always)
    func insert(_ fp: Fingerprint128, monthTag: UInt16, openMonthTag: UInt16) -> Bool {
        if contains(fp) { return false }
        staging.add(Self.key(fp, monthTag: monthTag))
        current.count += 1
        current.filter.insert(high: fp.high, low: fp.low)
        current.monthCounts[Int(monthTag)] &+= 1
        if staging.count >= stagingLimit || current.count >= generationCapacity {
            flushStaging()
            if current.count >= generationCapacity { rotate(openMonthTag: openMonthTag) }
        }
        return true
    }

    /// Moves staged ids into the current table. The staging table is walked in order, which
    /// is the order of their homes in the big table, with each insert's line requested a
    /// few ids ahead.
    private func flushStaging() {
        guard staging.count > 0 else { return }
        let needed = current.table.count + staging.count
        if needed * 10 > current.table.size * 7 {
            var size = current.table.size
            while needed * 10 > size * 7 { size *= 2 }
            current.table = Self.rehash(current.table, size: size) { _ in true }
        }
        let base = staging.slots.base
        let target = current.table.slots.base
        // A second cursor runs a few staged ids ahead, requesting their lines.
        var ahead = 0
        var lead = 0
        while lead < 16 && ahead < staging.size {
            if !base[ahead].isEmpty {
                pm_prefetch_write(target + current.table.home(base[ahead].high))
                lead += 1
            }
            ahead += 1
        }
        for k in 0..<staging.size where !base[k].isEmpty {
            while ahead < staging.size {
                let s = base[ahead]
                ahead += 1
                if !s.isEmpty {
                    pm_prefetch_write(target + current.table.home(s.high))
                    break
                }
            }
            current.table.add(base[k])
            base[k] = .empty
        }
        staging.count = 0
    }

    /// The previous generation is forgotten; the current one becomes previous.
    private func rotate(openMonthTag: UInt16) {
        var openDropped: UInt64 = 0
        for tag in Int(openMonthTag)..<previous.monthCounts.count { openDropped += UInt64(previous.monthCounts[tag]) }
        evictedIDs += UInt64(previous.count)
        evictedOpenMonthIDs += openDropped
        rotations += 1
        var recycled = previous
        previous = current
        if recycled.table.size == current.table.size {
            recycled.clear()
            current = recycled
        } else {
            current = Generation(tableSize: previous.table.size, filterBits: filterBits)
        }
    }

    private static func rehash(_ table: Table, size: Int, keep: (Slot) -> Bool) -> Table {
        var fresh = Table(size: size)
        table.forEach { if keep($0) { fresh.add($0) } }
        return fresh
    }

    /// Rebuilds a generation from `entries`: table, filter and month counts.
    private func generation(tableSize: Int, entries: [Slot]) -> Generation {
        var g = Generation(tableSize: tableSize, filterBits: filterBits)
        for s in entries {
            g.table.add(s)
            g.count += 1
            g.filter.insert(high: s.high, low: s.lowAndMonth)
            g.monthCounts[Int(s.monthTag)] &+= 1
        }
        return g
    }

    /// Forgets every id of a month before `openMonthTag` (those months are closed).
    func purgeMonths(before openMonthTag: UInt16) {
        flushStaging()
        var keptCurrent: [Slot] = []
        var keptPrevious: [Slot] = []
        current.table.forEach { if $0.monthTag >= openMonthTag { keptCurrent.append($0) } }
        previous.table.forEach { if $0.monthTag >= openMonthTag { keptPrevious.append($0) } }
        current = generation(tableSize: current.table.size, entries: keptCurrent)
        previous = generation(tableSize: previous.table.size, entries: keptPrevious)
    }

    // MARK: - Checkpoints

    /// Every remembered id with its generation (true = current), in table order.
    func forEachEntry(_ body: (Slot, Bool) -> Void) {
        flushStaging()
        current.table.forEach { body($0, true) }
        previous.table.forEach { body($0, false) }
    }

    var tableSizes: (current: Int, previous: Int) { (current.table.size, previous.table.size) }

    /// Rebuilds a window from checkpointed entries and table sizes.
    func restore(currentSize: Int, previousSize: Int, entries: [(Slot, Bool)], counters: (evicted: UInt64, evictedOpen: UInt64, rotations: UInt64)) {
        staging.clear()
        current = generation(tableSize: currentSize, entries: entries.filter(\.1).map(\.0))
        previous = generation(tableSize: previousSize, entries: entries.filter { !$0.1 }.map(\.0))
        evictedIDs = counters.evicted
        evictedOpenMonthIDs = counters.evictedOpen
        rotations = counters.rotations
    }

    var allocatedBytes: Int {
        current.table.slots.allocatedBytes + previous.table.slots.allocatedBytes + staging.slots.allocatedBytes + 2 * filterBits / 8
    }
}

/// A blocked Bloom filter over fingerprints: each id sets 4 bits within one 64-byte block,
/// so a test reads a single cache line. No false negatives; at 16 bits per id about 0.2%
/// false positives.
struct BloomFilter {
    let words: FlatBuffer<UInt64>
    let blockMask: Int

    init(bits: Int) {
        self.init(words: FlatBuffer(repeating: 0, count: bits / 64))
    }

    init(words: FlatBuffer<UInt64>) {
        self.words = words
        blockMask = words.count / 8 - 1
    }

    @inline(__always)
    private func block(_ high: UInt64) -> UnsafeMutablePointer<UInt64> {
        words.base + (Int(truncatingIfNeeded: high) & blockMask) * 8
    }

    @inline(__always)
    func prefetch(high: UInt64) { pm_prefetch(block(high)) }

    /// The 4 bit positions come from fingerprint bits 80–115 (`low` bits 16–51), which a
    /// stored slot keeps.
    @inline(__always)
    func insert(high: UInt64, low: UInt64) {
        let base = block(high)
        var bits = low >> 16
        for _ in 0..<4 {
            let bit = Int(truncatingIfNeeded: bits) & 511
            base[bit >> 6] |= 1 << UInt64(bit & 63)
            bits >>= 9
        }
    }

    @inline(__always)
    func mayContain(high: UInt64, low: UInt64) -> Bool {
        let base = block(high)
        var bits = low >> 16
        for _ in 0..<4 {
            let bit = Int(truncatingIfNeeded: bits) & 511
            if base[bit >> 6] & (1 << UInt64(bit & 63)) == 0 { return false }
            bits >>= 9
        }
        return true
    }

    func clear() { words.base.update(repeating: 0, count: words.count) }
}
