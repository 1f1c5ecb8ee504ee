import CPackMeterSupport

/// The ids an engine remembers, to skip a repeated event (RULES.md §8, CONTRACT.md check 5).
///
/// **Layout.** An id is remembered by a 112-bit fingerprint (of its bytes) plus the billing
/// month it belongs to, in one 16-byte slot. Two generations are kept: new ids join the
/// current one, lookups check both. A generation files its ids in buckets by the top bits
/// of the fingerprint; a bucket is a chain of 16-slot chunks filled in arrival order, and
/// chunks are handed out in order from one pool. So remembering an id writes the next slot
/// of its bucket's last chunk, and the last chunks of all buckets (a few thousand cache
/// lines) stay in cache: a fresh id, the common case, touches no cold memory, where a hash
/// table would take a random cache miss per id. Each generation also has a blocked Bloom
/// filter (16 bits per id), interleaved with the other's so that testing an id against
/// both reads one cache line, and a bucket (about 128 ids when the generation is full) is
/// only scanned when the filter says the id may be there: for a repeat, or about one
/// fresh id in 300.
///
/// **The bound.** Each generation holds at most `generationCapacity` ids. When the current
/// generation is full, the previous one is dropped and the current one becomes previous.
/// So the window always holds at least the last `generationCapacity` accepted ids and at
/// most twice that. A remembered id costs 16 bytes of pool, 2 bytes of filter and at most
/// 2 of partly filled chunks: two full generations cost about 40 bytes per id of the
/// guaranteed window. Dropping a generation is counted (`evictedIDs`, and
/// `evictedOpenMonthIDs` for ids whose month was still open, i.e. whose repeat would have
/// been billed again): operators size `--dedupe-capacity` to at least their partition's
/// peak rate × the allowed lateness.
///
/// **Month close.** Once a month is closed no call of it is applied again (check 4 comes
/// first), so its ids are purged then, keeping checkpoints small.
///
/// A fingerprint collision (two different ids with the same 112 bits) would make the second
/// a false duplicate; among a million remembered ids the chance per event is about 10⁻²⁸.
final class DedupeWindow {
    struct Slot: BitwiseCopyable, Equatable {
        /// Fingerprint bits 0–63: the bucket comes from its top bits, the filter block from
        /// its low bits.
        var high: UInt64
        /// Fingerprint bits 64–111 in the top 48 bits, month tag in the low 16 (never 0).
        var lowAndMonth: UInt64

        @inline(__always) var monthTag: UInt16 { UInt16(truncatingIfNeeded: lowAndMonth) }
        @inline(__always) func matches(_ high: UInt64, _ low: UInt64) -> Bool {
            self.high == high && lowAndMonth & 0xFFFF_FFFF_FFFF_0000 == low
        }
        static let empty = Slot(high: 0, lowAndMonth: 0)
    }

    /// One generation's ids in buckets of chained chunks (see the type's comment).
    final class Buckets {
        static let chunkSlots = 16
        static let none = UInt32.max
        /// Chunk c holds slots `c * chunkSlots ..< (c + 1) * chunkSlots`.
        let pool: FlatBuffer<Slot>
        /// Per chunk: the next chunk of its bucket, or `none`.
        let next: FlatBuffer<UInt32>
        /// Per bucket: its first and last chunk (`none` when empty) and how many slots of
        /// the last are used.
        let heads: FlatBuffer<UInt32>
        let tails: FlatBuffer<UInt32>
        let fills: FlatBuffer<UInt8>
        let shift: UInt64
        private(set) var count = 0

        init(buckets: Int) {
            precondition(buckets.nonzeroBitCount == 1 && buckets >= 2)
            pool = FlatBuffer(capacity: 64 * Self.chunkSlots)
            next = FlatBuffer(capacity: 64)
            heads = FlatBuffer(repeating: Self.none, count: buckets)
            tails = FlatBuffer(repeating: Self.none, count: buckets)
            fills = FlatBuffer(repeating: 0, count: buckets)
            shift = UInt64(64 - buckets.trailingZeroBitCount)
        }

        /// Makes these buckets an exact copy of `other` (same bucket count).
        func copy(from other: Buckets) {
            pool.replace(with: other.pool)
            next.replace(with: other.next)
            heads.replace(with: other.heads)
            tails.replace(with: other.tails)
            fills.replace(with: other.fills)
            count = other.count
        }

        @inline(__always)
        func bucket(_ high: UInt64) -> Int { Int(truncatingIfNeeded: high >> shift) }

        /// Where the next id of `high`'s bucket goes (a hint for prefetching).
        @inline(__always)
        func nextSlot(_ high: UInt64) -> UnsafeMutablePointer<Slot> {
            let b = bucket(high)
            let tail = tails.base[b]
            return tail == Self.none ? pool.base : pool.base + Int(tail) * Self.chunkSlots + Int(fills.base[b])
        }

        @inline(__always)
        func find(_ high: UInt64, _ low: UInt64) -> Bool {
            let b = bucket(high)
            var c = heads.base[b]
            let tail = tails.base[b]
            while c != Self.none {
                let used = c == tail ? Int(fills.base[b]) : Self.chunkSlots
                let chunk = pool.base + Int(c) * Self.chunkSlots
                for i in 0..<used where chunk[i].matches(high, low) { return true }
                c = next.base[Int(c)]
            }
            return false
        }

        /// Adds `s`, known to be absent.
        @inline(__always)
        func add(_ s: Slot) {
            let b = bucket(s.high)
            var tail = tails.base[b]
            var fill = Int(fills.base[b])
            if tail == Self.none || fill == Self.chunkSlots {
                tail = startChunk(b)
                fill = 0
            }
            pool.base[Int(tail) * Self.chunkSlots + fill] = s
            fills.base[b] = UInt8(fill + 1)
            count += 1
        }

        /// Chains a fresh chunk to bucket `b` (once per 16 ids, so kept off the inlined path)
        /// and returns it.
        @inline(never)
        private func startChunk(_ b: Int) -> UInt32 {
            let c = UInt32(next.count)
            next.append(Self.none)
            pool.append(repeating: .empty, count: Self.chunkSlots)
            let tail = tails.base[b]
            if tail == Self.none { heads.base[b] = c } else { next.base[Int(tail)] = c }
            tails.base[b] = c
            return c
        }

        func clear() {
            heads.base.update(repeating: Self.none, count: heads.count)
            tails.base.update(repeating: Self.none, count: tails.count)
            fills.base.update(repeating: 0, count: fills.count)
            pool.removeAll()
            next.removeAll()
            count = 0
        }

        /// Every id, bucket by bucket, each in arrival order.
        func forEach(_ body: (Slot) -> Void) {
            for b in 0..<heads.count {
                var c = heads.base[b]
                while c != Self.none {
                    let used = c == tails.base[b] ? Int(fills.base[b]) : Self.chunkSlots
                    let chunk = pool.base + Int(c) * Self.chunkSlots
                    for i in 0..<used { body(chunk[i]) }
                    c = next.base[Int(c)]
                }
            }
        }

        var allocatedBytes: Int {
            pool.allocatedBytes + next.allocatedBytes + heads.allocatedBytes + tails.allocatedBytes + fills.allocatedBytes
        }
    }

    /// One generation: its ids, their filter, and how many belong to each month. The
    /// filter and the counts follow from the ids, so a checkpoint saves only the ids.
    final class Generation {
        let ids: Buckets
        /// The window's filter, of which this generation owns one half of every block.
        let filter: PairedBloomFilter
        let half: Int
        /// Ids per month tag, to count early evictions without scanning. 4096 tags cover
        /// every month of the billing calendar (1970–2199).
        let monthCounts: FlatBuffer<UInt32>

        init(buckets: Int, filter: PairedBloomFilter, half: Int) {
            ids = Buckets(buckets: buckets)
            self.filter = filter
            self.half = half
            monthCounts = FlatBuffer(repeating: 0, count: 4096)
        }

        var count: Int { ids.count }

        @inline(__always)
        func add(_ s: Slot) {
            ids.add(s)
            filter.insert(high: s.high, low: s.lowAndMonth, half: half)
            monthCounts.base[Int(s.monthTag)] &+= 1
        }

        func clear() {
            ids.clear()
            filter.clear(half: half)
            monthCounts.base.update(repeating: 0, count: monthCounts.count)
        }

        /// Makes this generation hold exactly `entries`, in order.
        func replace(with entries: some Sequence<Slot>) {
            clear()
            for s in entries { add(s) }
        }

        /// Makes this generation's ids and counts an exact copy of `other`'s (the window
        /// copies the filter).
        func copy(from other: Generation) {
            ids.copy(from: other.ids)
            monthCounts.replace(with: other.monthCounts)
        }
    }

    let generationCapacity: Int
    /// Bits of filter per generation: 16 per id of capacity, a power of two.
    let filterBits: Int
    /// Both generations' filters in one, so that testing an id against both reads one
    /// cache line.
    let filter: PairedBloomFilter
    /// The two generations live as long as the window; which one is current flips on
    /// rotation.
    private let first: Generation
    private let second: Generation
    private var firstIsCurrent = true
    var evictedIDs: UInt64 = 0
    var evictedOpenMonthIDs: UInt64 = 0
    var rotations: UInt64 = 0

    init(generationCapacity: Int) {
        precondition(generationCapacity > 0)
        self.generationCapacity = generationCapacity
        // Buckets per generation: about 128 ids each when the generation is full.
        var buckets = 16
        while buckets * 128 < generationCapacity { buckets *= 2 }
        var bits = 1 << 12
        while bits < generationCapacity * 16 { bits *= 2 }
        filterBits = bits
        filter = PairedBloomFilter(bitsPerHalf: bits)
        first = Generation(buckets: buckets, filter: filter, half: 0)
        second = Generation(buckets: buckets, filter: filter, half: 1)
    }

    var current: Generation { firstIsCurrent ? first : second }
    var previous: Generation { firstIsCurrent ? second : first }

    var count: Int { current.count + previous.count }

    @inline(__always)
    static func key(_ fp: Fingerprint128, monthTag: UInt16) -> Slot {
        Slot(high: fp.high, lowAndMonth: (fp.low & 0xFFFF_FFFF_FFFF_0000) | UInt64(monthTag))
    }

    // The hot path below passes the generations down as arguments taken from the `let`
    // properties, so no reference is retained and released per id.

    /// Requests the cache lines a lookup and insert of `fp` touch.
    @inline(__always)
    func prefetch(_ fp: Fingerprint128) {
        if firstIsCurrent { prefetch(fp, current: first, previous: second) } else { prefetch(fp, current: second, previous: first) }
    }

    @inline(__always)
    private func prefetch(_ fp: Fingerprint128, current: Generation, previous: Generation) {
        filter.prefetch(high: fp.high)
        pm_prefetch_write(current.ids.nextSlot(fp.high))
    }

    @inline(__always)
    func contains(_ fp: Fingerprint128) -> Bool {
        firstIsCurrent ? contains(fp, current: first, previous: second) : contains(fp, current: second, previous: first)
    }

    @inline(__always)
    private func contains(_ fp: Fingerprint128, current: Generation, previous: Generation) -> Bool {
        let low = fp.low & 0xFFFF_FFFF_FFFF_0000
        if filter.mayContain(high: fp.high, low: fp.low, half: current.half) && current.ids.find(fp.high, low) { return true }
        return previous.count > 0 && filter.mayContain(high: fp.high, low: fp.low, half: previous.half) && previous.ids.find(fp.high, low)
    }

    /// Remembers `fp` unless it already is; returns false for a duplicate.
    /// `openMonthTag` is the engine's first open month, for counting early evictions.
    @inline(__always)
    func insert(_ fp: Fingerprint128, monthTag: UInt16, openMonthTag: UInt16) -> Bool {
        let full: Bool?
        if firstIsCurrent {
            full = insert(fp, monthTag: monthTag, current: first, previous: second)
        } else {
            full = insert(fp, monthTag: monthTag, current: second, previous: first)
        }
        guard let full else { return false }
        if full { rotate(openMonthTag: openMonthTag) }
        return true
    }

    /// nil for a duplicate, else whether the current generation is now full.
    @inline(__always)
    private func insert(_ fp: Fingerprint128, monthTag: UInt16, current: Generation, previous: Generation) -> Bool? {
        if contains(fp, current: current, previous: previous) { return nil }
        current.add(Self.key(fp, monthTag: monthTag))
        return current.count >= generationCapacity
    }

    /// The previous generation is forgotten; the current one becomes previous.
    private func rotate(openMonthTag: UInt16) {
        var openDropped: UInt64 = 0
        for tag in Int(openMonthTag)..<previous.monthCounts.count { openDropped += UInt64(previous.monthCounts[tag]) }
        evictedIDs += UInt64(previous.count)
        evictedOpenMonthIDs += openDropped
        rotations += 1
        previous.clear()
        firstIsCurrent.toggle()
    }

    /// Forgets every id of a month before `openMonthTag` (those months are closed).
    func purgeMonths(before openMonthTag: UInt16) {
        for g in [current, previous] {
            var kept: [Slot] = []
            g.ids.forEach { if $0.monthTag >= openMonthTag { kept.append($0) } }
            g.replace(with: kept)
        }
    }

    // MARK: - Checkpoints

    /// Makes this window an exact copy of `other` (same capacity), for a checkpoint.
    func copy(from other: DedupeWindow) {
        precondition(other.generationCapacity == generationCapacity)
        first.copy(from: other.first)
        second.copy(from: other.second)
        filter.words.replace(with: other.filter.words)
        firstIsCurrent = other.firstIsCurrent
        evictedIDs = other.evictedIDs
        evictedOpenMonthIDs = other.evictedOpenMonthIDs
        rotations = other.rotations
    }

    /// What a checkpoint saves of each generation (current, then previous): its ids,
    /// bucket by bucket, each in arrival order. The filter and month counts follow from them.
    func savedIDs() -> [FlatBuffer<Slot>] {
        [current, previous].map { g in
            let ids = FlatBuffer<Slot>(capacity: g.count)
            g.ids.forEach { ids.append($0) }
            return ids
        }
    }

    /// Rebuilds the window from what `savedIDs()` gave: re-adding the ids in that order
    /// rebuilds the same buckets.
    func restore(current saved: some Sequence<Slot>, previous savedPrevious: some Sequence<Slot>,
                 counters: (evicted: UInt64, evictedOpen: UInt64, rotations: UInt64)) {
        current.replace(with: saved)
        previous.replace(with: savedPrevious)
        evictedIDs = counters.evicted
        evictedOpenMonthIDs = counters.evictedOpen
        rotations = counters.rotations
    }

    var allocatedBytes: Int {
        current.ids.allocatedBytes + previous.ids.allocatedBytes + filter.words.allocatedBytes
    }
}

/// Two split-block Bloom filters over fingerprints, interleaved: every 64-byte block holds
/// a 256-bit half per generation, four 64-bit words each, and an id sets one bit in each
/// word of its generation's half of its block. Testing an id against both generations
/// reads one cache line and takes no branch. No false negatives; at 16 bits per id about
/// 0.3% false positives per generation.
struct PairedBloomFilter {
    let words: FlatBuffer<UInt64>
    let blockMask: Int

    init(bitsPerHalf: Int) {
        words = FlatBuffer(repeating: 0, count: bitsPerHalf / 32)
        blockMask = words.count / 8 - 1
    }

    @inline(__always)
    private func half(_ high: UInt64, _ half: Int) -> UnsafeMutablePointer<UInt64> {
        words.base + (Int(truncatingIfNeeded: high) & blockMask) * 8 + half * 4
    }

    @inline(__always)
    func prefetch(high: UInt64) { pm_prefetch(half(high, 0)) }

    /// Word i's bit comes from fingerprint bits 80 + 6i ..< 86 + 6i (`low` bits 16–39),
    /// which a stored slot keeps.
    @inline(__always)
    private static func bit(_ low: UInt64, _ word: Int) -> UInt64 { (low >> UInt64(16 + 6 * word)) & 63 }

    @inline(__always)
    func insert(high: UInt64, low: UInt64, half h: Int) {
        let base = half(high, h)
        for w in 0..<4 { base[w] |= 1 << Self.bit(low, w) }
    }

    @inline(__always)
    func mayContain(high: UInt64, low: UInt64, half h: Int) -> Bool {
        let base = half(high, h)
        var all: UInt64 = 1
        for w in 0..<4 { all &= base[w] >> Self.bit(low, w) }
        return all & 1 != 0
    }

    /// Forgets one generation's half of every block.
    func clear(half h: Int) {
        var block = words.base + h * 4
        for _ in 0...blockMask {
            block.update(repeating: 0, count: 4)
            block += 8
        }
    }
}
