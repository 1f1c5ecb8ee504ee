import CPackMeterSupport

/// The ids an engine remembers, to skip a repeated event (docs/rules.md §8, docs/contract.md check 5).
///
/// **Layout.** An id is remembered by a 112-bit fingerprint (of its bytes) plus the billing
/// month it belongs to, in one 16-byte slot. Two generations are kept: new ids join the
/// current one, lookups check both. A generation files its ids in buckets by the top bits
/// of the fingerprint; a bucket is a chain of 16-slot chunks filled in arrival order, and
/// chunks are handed out in order from one pool. So remembering an id writes the next slot
/// of its bucket's last chunk, and the last chunks of all buckets (a few thousand cache
/// lines) stay in cache: a fresh id, the common case, touches no cold memory, where a hash
/// table would take a random cache miss per id. Each generation also has a blocked Bloom
/// filter (32 to 64 bits per id, one 64-bit word per id; it grows with the ids held, up
/// to what the capacity needs), interleaved with the other's so that testing an id
/// against both reads two adjacent words, and a bucket (about 128 ids when the generation
/// is full) is only scanned when the filter says the id may be there: for a repeat, or
/// about one fresh id in 1,700. A scan requests all of the bucket's lines at once (its
/// chunks lie anywhere in the pool). A window that never fills keeps a filter sized to the
/// ids it holds.
///
/// **The bound.** Each generation holds at most `generationCapacity` ids. When the current
/// generation is full, the previous one is dropped and the current one becomes previous.
/// So the window always holds at least the last `generationCapacity` accepted ids and at
/// most twice that. A remembered id costs 16 bytes of pool, about 4 of filter and at most
/// 2 of partly filled chunks: two full generations cost about 44 bytes per id of the
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
        /// Fingerprint bits 0–63: the bucket comes from its top bits, the filter pair from
        /// its low bits.
        var high: UInt64
        /// Fingerprint bits 64–111 in the top 48 bits, month tag in the low 16 (never 0).
        var lowAndMonth: UInt64

        @inline(always) var monthTag: UInt16 { UInt16(truncatingIfNeeded: lowAndMonth) }
        @inline(always) func matches(_ high: UInt64, _ low: UInt64) -> Bool {
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
        /// Per bucket: its first chunk (`none` when empty).
        let heads: FlatBuffer<UInt32>
        /// Per bucket: the pool slot its next id goes to. A multiple of `chunkSlots` when
        /// the bucket needs a new chunk (it is empty, 0, or its last chunk is full), so one
        /// test decides; otherwise the last chunk is `(end - 1) / chunkSlots`.
        let ends: FlatBuffer<UInt32>
        let shift: UInt64
        private(set) var count = 0

        /// - Parameter capacity: the most ids the generation holds, to reserve the pool for
        ///   (nil: grow as needed, for a checkpoint's copy). Reserved memory is only
        ///   resident once written, and a pool that never grows is never copied: growing
        ///   one by doubling copied it into fresh memory each time, page faults included.
        init(buckets: Int, capacity: Int?) {
            precondition(buckets.nonzeroBitCount == 1 && buckets >= 2)
            // Every chunk but a bucket's last is full.
            let chunks = capacity.map { ($0 + Self.chunkSlots - 1) / Self.chunkSlots + buckets } ?? 64
            pool = FlatBuffer(capacity: chunks * Self.chunkSlots)
            next = FlatBuffer(capacity: chunks)
            heads = FlatBuffer(repeating: Self.none, count: buckets)
            ends = FlatBuffer(repeating: 0, count: buckets)
            shift = UInt64(64 - buckets.trailingZeroBitCount)
        }

        /// Makes these buckets an exact copy of `other` (same bucket count).
        func copy(from other: Buckets) {
            pool.replace(with: other.pool)
            next.replace(with: other.next)
            heads.replace(with: other.heads)
            ends.replace(with: other.ends)
            count = other.count
        }

        @inline(always)
        func bucket(_ high: UInt64) -> Int { Int(truncatingIfNeeded: high &>> shift) }

        /// Where the next id of `high`'s bucket goes (a hint for prefetching; when the
        /// bucket needs a new chunk it may lie past the pool, which a prefetch allows).
        @inline(always)
        func nextSlot(_ high: UInt64) -> UnsafeMutablePointer<Slot> {
            pool.base + Int(ends.base[bucket(high)])
        }

        /// The last chunk of bucket `b` and how many of its slots are used (`b` not empty).
        @inline(always)
        private func last(_ b: Int) -> (chunk: UInt32, used: Int) {
            let end = ends.base[b] &- 1
            return (end / UInt32(Self.chunkSlots), Int(end % UInt32(Self.chunkSlots)) + 1)
        }

        @inline(always)
        func find(_ high: UInt64, _ low: UInt64) -> Bool {
            let b = bucket(high)
            var c = heads.base[b]
            guard c != Self.none else { return false }
            let tail = last(b)
            while c != Self.none {
                let used = c == tail.chunk ? tail.used : Self.chunkSlots
                let chunk = pool.base + Int(c) * Self.chunkSlots
                for i in 0..<used where chunk[i].matches(high, low) { return true }
                c = next.base[Int(c)]
            }
            return false
        }

        /// Requests every cache line of `high`'s bucket before a scan. Its chunks lie
        /// anywhere in the pool, so a plain scan would take their misses one chunk after
        /// another; requested together they overlap. The chain
        /// itself (`heads`, `next`: 4 bytes a chunk) is small enough to stay in cache.
        @inline(always)
        func prefetchBucket(_ high: UInt64) {
            var c = heads.base[bucket(high)]
            while c != Self.none {
                // A chunk is 256 bytes: five lines unless it starts on a line boundary.
                let chunk = UnsafeRawPointer(pool.base + Int(c) * Self.chunkSlots)
                for offset in stride(from: 0, to: Self.chunkSlots * MemoryLayout<Slot>.stride, by: 64) {
                    pm_prefetch(chunk + offset)
                }
                pm_prefetch(chunk + (Self.chunkSlots * MemoryLayout<Slot>.stride - 1))
                c = next.base[Int(c)]
            }
        }

        /// Adds `s`, known to be absent.
        @inline(always)
        func add(_ s: Slot) {
            let b = bucket(s.high)
            // Every address is read once into a local: a store through a pointer could
            // alias this object's fields, so the compiler would read them again after it.
            let ends = self.ends.base
            var end = ends[b]
            if end % UInt32(Self.chunkSlots) == 0 { end = startChunk(b) &* UInt32(Self.chunkSlots) }
            pool.base[Int(end)] = s
            ends[b] = end &+ 1
            count &+= 1
        }

        /// Chains a fresh chunk to bucket `b` (once per 16 ids, so kept off the inlined path)
        /// and returns it.
        @inline(never)
        private func startChunk(_ b: Int) -> UInt32 {
            let c = UInt32(next.count)
            next.append(Self.none)
            pool.appendZeroed(Self.chunkSlots)  // empty slots
            if heads.base[b] == Self.none { heads.base[b] = c } else { next.base[Int(last(b).chunk)] = c }
            return c
        }

        func clear() {
            heads.base.update(repeating: Self.none, count: heads.count)
            ends.base.update(repeating: 0, count: ends.count)
            pool.removeAll()
            next.removeAll()
            count = 0
        }

        /// Every id, bucket by bucket, each in arrival order.
        func forEach(_ body: (Slot) -> Void) {
            for b in 0..<heads.count {
                var c = heads.base[b]
                guard c != Self.none else { continue }
                let tail = last(b)
                while c != Self.none {
                    let used = c == tail.chunk ? tail.used : Self.chunkSlots
                    let chunk = pool.base + Int(c) * Self.chunkSlots
                    for i in 0..<used { body(chunk[i]) }
                    c = next.base[Int(c)]
                }
            }
        }

        /// Bytes in use (of the pool's reservation, the chunks handed out).
        var allocatedBytes: Int {
            pool.count * MemoryLayout<Slot>.stride + next.allocatedBytes + heads.allocatedBytes + ends.allocatedBytes
        }
    }

    /// One generation: its ids and how many belong to each month. The counts (and the
    /// window's filter) follow from the ids, so a checkpoint saves only the ids.
    final class Generation {
        let ids: Buckets
        /// Ids per month tag, to count early evictions without scanning. 4096 tags cover
        /// every month of the billing calendar (1970–2199).
        let monthCounts: FlatBuffer<UInt32>

        init(buckets: Int, capacity: Int?) {
            ids = Buckets(buckets: buckets, capacity: capacity)
            monthCounts = FlatBuffer(repeating: 0, count: 4096)
        }

        var count: Int { ids.count }

        /// Adds `s`, known to be absent, without its filter bits (the window sets them);
        /// returns whether the generation now holds `limit` ids.
        @inline(always)
        func append(_ s: Slot, limit: Int) -> Bool {
            ids.add(s)
            monthCounts.base[Int(s.monthTag)] &+= 1
            return ids.count >= limit
        }

        func clear() {
            ids.clear()
            monthCounts.base.update(repeating: 0, count: monthCounts.count)
        }

        /// Makes this generation hold exactly `entries`, in order (the window then rebuilds
        /// its filter).
        func replace(with entries: some Sequence<Slot>) {
            clear()
            for s in entries { _ = append(s, limit: .max) }
        }

        /// Makes this generation's ids and counts an exact copy of `other`'s.
        func copy(from other: Generation) {
            ids.copy(from: other.ids)
            monthCounts.replace(with: other.monthCounts)
        }
    }

    let generationCapacity: Int
    /// Both generations' filters in one, so that testing an id against both reads one
    /// cache line. It starts small and is rebuilt twice as large whenever the current
    /// generation holds as many ids as it has room for at `filterBitsPerID`, up to the
    /// size the capacity needs: a window that is never full (a quiet partition) never
    /// pays for a filter of its capacity.
    private(set) var filter: PairedBloomFilter
    /// The filter's bits per generation once it has grown to the capacity.
    private let fullFilterBits: Int
    /// The count of the current generation at which `reachedLimit` runs: the capacity
    /// (rotate), or fewer while the filter is still growing (grow it).
    private var limit = 0
    static let filterBitsPerID = 32
    /// Bits per generation of a new window's filter (64 KiB): room for 16,384 ids.
    static let initialFilterBits = 1 << 19
    /// The two generations live as long as the window; which one is current flips on
    /// rotation.
    private let first: Generation
    private let second: Generation
    /// The current generation's word of a filter pair: 0 (the first generation) or 1.
    private var currentHalf = 0
    private var firstIsCurrent: Bool { currentHalf == 0 }
    var evictedIDs: UInt64 = 0
    var evictedOpenMonthIDs: UInt64 = 0
    var rotations: UInt64 = 0

    convenience init(generationCapacity: Int) {
        self.init(generationCapacity: generationCapacity, snapshot: false)
    }

    /// An exact copy of `other`'s ids and counters, for a checkpoint to encode. Its filter
    /// is not copied (4 MiB at the default capacity, for each partition at each checkpoint,
    /// while processing waits): the copy gets a saturated one instead, which says "maybe"
    /// to every id, so the copy still answers exactly as `other` would, only with a bucket
    /// scan per lookup until its first insert rebuilds a filter of its ids.
    convenience init(copying other: DedupeWindow) {
        self.init(generationCapacity: other.generationCapacity, snapshot: true)
        first.copy(from: other.first)
        second.copy(from: other.second)
        currentHalf = other.currentHalf
        evictedIDs = other.evictedIDs
        evictedOpenMonthIDs = other.evictedOpenMonthIDs
        rotations = other.rotations
    }

    private init(generationCapacity: Int, snapshot: Bool) {
        precondition(generationCapacity > 0)
        self.generationCapacity = generationCapacity
        // Buckets per generation: about 128 ids each when the generation is full.
        var buckets = 16
        while buckets * 128 < generationCapacity { buckets *= 2 }
        fullFilterBits = Self.filterBits(forIDs: generationCapacity)
        filter = snapshot ? PairedBloomFilter.saturated() : PairedBloomFilter(bitsPerHalf: Self.filterBits(roomFor: 0, full: fullFilterBits))
        // A snapshot takes only what it copies.
        let reserve = snapshot ? nil : generationCapacity
        first = Generation(buckets: buckets, capacity: reserve)
        second = Generation(buckets: buckets, capacity: reserve)
        updateLimit()
    }

    /// Bits of filter per generation for `ids` ids: at least `filterBitsPerID` each, a
    /// power of two (4,096 at least).
    static func filterBits(forIDs ids: Int) -> Int {
        var bits = 1 << 12
        while bits < ids * filterBitsPerID { bits *= 2 }
        return bits
    }

    /// Bits per generation for a filter that holds `ids` ids with room for as many again:
    /// never below `initialFilterBits`, never above `full` (what the capacity needs).
    static func filterBits(roomFor ids: Int, full: Int) -> Int {
        min(full, max(initialFilterBits, filterBits(forIDs: 2 * ids)))
    }

    private func updateLimit() {
        let bits = filter.bitsPerHalf
        limit = bits >= fullFilterBits ? generationCapacity : max(1, min(generationCapacity, bits / Self.filterBitsPerID))
    }

    /// Makes a new filter of `bits` per generation from the ids both generations hold.
    private func rebuildFilter(bitsPerHalf bits: Int) {
        let rebuilt = PairedBloomFilter(bitsPerHalf: bits)
        rebuilt.insert(poolOf: current.ids, half: currentHalf)
        rebuilt.insert(poolOf: previous.ids, half: 1 &- currentHalf)
        filter = rebuilt
        updateLimit()
    }

    var current: Generation { firstIsCurrent ? first : second }
    var previous: Generation { firstIsCurrent ? second : first }

    var count: Int { current.count + previous.count }

    @inline(always)
    static func key(_ fp: Fingerprint128, monthTag: UInt16) -> Slot {
        Slot(high: fp.high, lowAndMonth: (fp.low & 0xFFFF_FFFF_FFFF_0000) | UInt64(monthTag))
    }

    // The hot path below takes the current generation from the `let` properties in each
    // branch, so that no reference is retained and released per id.

    /// Requests the cache lines a lookup and insert of `fp` touch.
    @inline(always)
    func prefetch(_ fp: Fingerprint128) {
        filter.prefetch(high: fp.high)
        if firstIsCurrent { prefetchNextSlot(fp, of: first) } else { prefetchNextSlot(fp, of: second) }
    }

    @inline(always)
    private func prefetchNextSlot(_ fp: Fingerprint128, of current: Generation) {
        pm_prefetch_write(current.ids.nextSlot(fp.high))
    }

    func contains(_ fp: Fingerprint128) -> Bool {
        let pair = filter.pair(fp.high)
        let mask = PairedBloomFilter.mask(fp.low)
        return remembers(fp, maybeCurrent: pair[currentHalf] & mask == mask, maybePrevious: pair[1 &- currentHalf] & mask == mask)
    }

    /// Remembers `fp` unless it already is; returns false for a duplicate.
    /// `openMonthTag` is the engine's first open month, for counting early evictions.
    ///
    /// One filter pair answers for both generations; only when it says the id may be
    /// there (a repeat, or about one fresh id in 1,700) are buckets scanned, out of line.
    @inline(always)
    func insert(_ fp: Fingerprint128, monthTag: UInt16, openMonthTag: UInt16) -> Bool {
        let pair = filter.pair(fp.high)
        let mask = PairedBloomFilter.mask(fp.low)
        let h = currentHalf
        let words = (current: pair[h], previous: pair[1 &- h])
        let maybeCurrent = words.current & mask == mask
        let maybePrevious = words.previous & mask == mask
        if maybeCurrent || maybePrevious, remembers(fp, maybeCurrent: maybeCurrent, maybePrevious: maybePrevious) {
            return false
        }
        pair[h] = words.current | mask
        let key = Self.key(fp, monthTag: monthTag)
        let atLimit = h == 0 ? first.append(key, limit: limit) : second.append(key, limit: limit)
        if atLimit { reachedLimit(openMonthTag: openMonthTag) }
        return true
    }

    /// The current generation holds `limit` ids: rotate if that is the capacity, else
    /// grow the filter (twice as many bits as the ids now need).
    @inline(never)
    private func reachedLimit(openMonthTag: UInt16) {
        if current.count >= generationCapacity {
            rotate(openMonthTag: openMonthTag)
        } else {
            rebuildFilter(bitsPerHalf: Self.filterBits(roomFor: current.count, full: fullFilterBits))
        }
    }

    /// Whether `fp` is remembered, scanning the buckets of the generations whose filter
    /// word may hold it.
    @inline(never)
    private func remembers(_ fp: Fingerprint128, maybeCurrent: Bool, maybePrevious: Bool) -> Bool {
        let low = fp.low & 0xFFFF_FFFF_FFFF_0000
        if maybeCurrent { current.ids.prefetchBucket(fp.high) }
        if maybePrevious { previous.ids.prefetchBucket(fp.high) }
        return (maybeCurrent && current.ids.find(fp.high, low)) || (maybePrevious && previous.ids.find(fp.high, low))
    }

    /// The previous generation is forgotten; the current one becomes previous.
    private func rotate(openMonthTag: UInt16) {
        var openDropped: UInt64 = 0
        for tag in Int(openMonthTag)..<previous.monthCounts.count { openDropped += UInt64(previous.monthCounts[tag]) }
        evictedIDs += UInt64(previous.count)
        evictedOpenMonthIDs += openDropped
        rotations += 1
        previous.clear()
        filter.clear(half: 1 &- currentHalf)
        currentHalf = 1 &- currentHalf
        updateLimit()
    }

    /// Forgets every id of a month before `openMonthTag` (those months are closed).
    func purgeMonths(before openMonthTag: UInt16) {
        for g in [current, previous] {
            var kept: [Slot] = []
            g.ids.forEach { if $0.monthTag >= openMonthTag { kept.append($0) } }
            g.replace(with: kept)
        }
        rebuildFilter(bitsPerHalf: filter.bitsPerHalf)
    }

    // MARK: - Checkpoints

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
        rebuildFilter(bitsPerHalf: Self.filterBits(roomFor: max(current.count, previous.count), full: fullFilterBits))
        evictedIDs = counters.evicted
        evictedOpenMonthIDs = counters.evictedOpen
        rotations = counters.rotations
    }

    var allocatedBytes: Int {
        current.ids.allocatedBytes + previous.ids.allocatedBytes + filter.words.allocatedBytes
    }
}

/// Two blocked Bloom filters over fingerprints, interleaved: word 2j belongs to the first
/// generation and word 2j + 1 to the second; an id picks its pair j from its fingerprint
/// and sets five bits in its generation's word. Testing an id against both generations
/// reads two adjacent words, tests each against one mask, and takes no branch. No false
/// negatives; at 32 bits per id, few false positives (docs/performance.md gives the rate).
struct PairedBloomFilter {
    let words: FlatBuffer<UInt64>
    let pairMask: Int

    init(bitsPerHalf: Int) {
        self.init(words: FlatBuffer(repeating: 0, count: bitsPerHalf / 32))
    }

    /// A filter over `words` (a power of two of them, as `init(bitsPerHalf:)` makes).
    init(words: FlatBuffer<UInt64>) {
        self.words = words
        pairMask = words.count / 2 - 1
    }

    /// Each generation's share of the bits.
    var bitsPerHalf: Int { words.count * 32 }

    /// One pair of words with every bit set: it says "maybe" to every id, which is never
    /// wrong, only slow. Clearing a half makes that half a (one-word) filter again.
    static func saturated() -> PairedBloomFilter {
        PairedBloomFilter(words: FlatBuffer(repeating: ~0, count: 2))
    }

    /// An id's two words: the first generation's, then the second's.
    @inline(always)
    func pair(_ high: UInt64) -> UnsafeMutablePointer<UInt64> {
        words.base + (Int(truncatingIfNeeded: high) & pairMask) &* 2
    }

    @inline(always)
    func prefetch(high: UInt64) { pm_prefetch(pair(high)) }

    /// The bits an id sets in its word, from fingerprint bits 80–109 (`low` bits 16–45, six
    /// for each; a stored slot keeps them). `&<<` takes its shift modulo 64.
    @inline(always)
    static func mask(_ low: UInt64) -> UInt64 {
        (1 &<< (low &>> 16)) | (1 &<< (low &>> 22)) | (1 &<< (low &>> 28)) | (1 &<< (low &>> 34)) | (1 &<< (low &>> 40))
    }

    func insert(high: UInt64, low: UInt64, half h: Int) {
        pair(high)[h] |= Self.mask(low)
    }

    /// Sets the bits of every id of `ids` in generation `h`'s words. The ids are read in
    /// pool order, which is memory order (a bucket's chunks lie anywhere in the pool, so
    /// following buckets would take a cache miss every few ids). Each id's word is
    /// requested 16 ids ahead. A bucket's
    /// unused slots are zero (a stored id's month tag never is) and are passed over.
    func insert(poolOf ids: DedupeWindow.Buckets, half h: Int) {
        let slots = ids.pool.base
        let count = ids.pool.count
        let ahead = 16
        for i in 0..<count {
            if i &+ ahead < count { prefetch(high: slots[i &+ ahead].high) }
            let s = slots[i]
            if s.lowAndMonth != 0 { insert(high: s.high, low: s.lowAndMonth, half: h) }
        }
    }

    /// Forgets one generation's words.
    func clear(half h: Int) {
        var word = words.base + h
        for _ in 0...pairMask {
            word.pointee = 0
            word += 2
        }
    }
}
