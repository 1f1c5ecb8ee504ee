import Testing
@testable import PackMeterCore

@Suite("The dedupe window: generations, buckets, month purge")
struct DedupeWindowTests {
    /// A plain model: two generations as Swift sets, rotated at the same count.
    struct Model {
        let capacity: Int
        var current: Set<Fingerprint128> = []
        var previous: Set<Fingerprint128> = []

        mutating func insert(_ fp: Fingerprint128) -> Bool {
            if current.contains(fp) || previous.contains(fp) { return false }
            current.insert(fp)
            if current.count >= capacity {
                previous = current
                current = []
            }
            return true
        }
    }

    @Test(arguments: [1, 100, 20_000, 50_000])
    func agreesWithTwoSetsAcrossRotationsAndChunkChains(capacity: Int) {
        let window = DedupeWindow(generationCapacity: capacity)
        var model = Model(capacity: capacity)
        var random = SplitMix64(seed: UInt64(capacity))
        var recent: [Fingerprint128] = []
        for n in 0..<min(150_000, 3 * capacity + 3000) {
            // Mostly fresh ids; some repeats from the recent past and the distant past.
            let fp: Fingerprint128
            if n % 7 == 0, !recent.isEmpty {
                fp = recent[Int(random.next() % UInt64(recent.count))]
            } else {
                fp = Fingerprint128(high: random.next(), low: random.next())
                recent.append(fp)
                if recent.count > 3 * capacity + 10 { recent.removeFirst(recent.count - 3 * capacity - 10) }
            }
            let accepted = window.insert(fp, monthTag: 5, openMonthTag: 5)
            #expect(accepted == model.insert(fp), "id \(n)")
        }
        #expect(window.count == model.current.count + model.previous.count)
        #expect(window.evictedIDs == window.evictedOpenMonthIDs)
        #expect(window.rotations > 0)
    }

    @Test func purgeForgetsClosedMonthsOnly() {
        let window = DedupeWindow(generationCapacity: 100_000)
        let old = (0..<5000).map { Fingerprint128(high: UInt64($0) &* 0x9E37_79B9_7F4A_7C15, low: UInt64($0) << 20) }
        let new = (0..<5000).map { Fingerprint128(high: UInt64($0 + 10_000) &* 0x9E37_79B9_7F4A_7C15, low: UInt64($0) << 21) }
        for fp in old { #expect(window.insert(fp, monthTag: 10, openMonthTag: 10)) }
        for fp in new { #expect(window.insert(fp, monthTag: 11, openMonthTag: 10)) }
        window.purgeMonths(before: 11)
        #expect(window.count == 5000)
        #expect(old.allSatisfy { !window.contains($0) })
        #expect(new.allSatisfy { window.contains($0) })
    }

    @Test func restoreGivesTheSameWindow() {
        let window = DedupeWindow(generationCapacity: 3000)
        var random = SplitMix64(seed: 9)
        let ids = (0..<7000).map { _ in Fingerprint128(high: random.next(), low: random.next()) }
        for fp in ids { _ = window.insert(fp, monthTag: 3, openMonthTag: 3) }
        let saved = window.savedIDs()
        let copy = DedupeWindow(generationCapacity: 3000)
        copy.restore(current: saved[0].elements, previous: saved[1].elements,
                     counters: (window.evictedIDs, window.evictedOpenMonthIDs, window.rotations))
        #expect(copy.count == window.count)
        for fp in ids { #expect(copy.contains(fp) == window.contains(fp)) }
        // And both go on identically.
        for _ in 0..<5000 {
            let fp = Fingerprint128(high: random.next(), low: random.next())
            #expect(copy.insert(fp, monthTag: 3, openMonthTag: 3) == window.insert(fp, monthTag: 3, openMonthTag: 3))
        }
        #expect(copy.count == window.count && copy.rotations == window.rotations)
    }

    /// A checkpoint's copy has no filter of its own (a saturated one says "maybe" to every
    /// id), yet it must answer exactly as the window it was copied from, before and after
    /// a rotation clears one of its filter's halves.
    @Test func checkpointCopyAnswersAsTheOriginal() {
        let window = DedupeWindow(generationCapacity: 2000)
        var random = SplitMix64(seed: 21)
        var seen = (0..<3500).map { _ in Fingerprint128(high: random.next(), low: random.next()) }
        for fp in seen { _ = window.insert(fp, monthTag: 4, openMonthTag: 4) }
        let copy = DedupeWindow(copying: window)
        #expect(copy.count == window.count)
        #expect(copy.filter.words.count == 2)
        for fp in seen { #expect(copy.contains(fp) == window.contains(fp)) }
        // Repeats (some long evicted) and fresh ids, through two more rotations.
        for n in 0..<5000 {
            let fp = n % 3 == 0 ? seen[Int(random.next() % UInt64(seen.count))] : Fingerprint128(high: random.next(), low: random.next())
            seen.append(fp)
            #expect(copy.insert(fp, monthTag: 4, openMonthTag: 4) == window.insert(fp, monthTag: 4, openMonthTag: 4), "id \(n)")
        }
        #expect(copy.rotations == window.rotations && window.rotations >= 3)
        #expect(copy.count == window.count)
        #expect(copy.savedIDs().map { Array($0.elements) } == window.savedIDs().map { Array($0.elements) })
    }

    /// The filter grows with the ids the window holds, not with its capacity: a quiet
    /// partition keeps a small one, a full window gets 32 bits per id of capacity.
    @Test func filterGrowsWithTheIDs_upToWhatTheCapacityNeeds() {
        let window = DedupeWindow(generationCapacity: 500_000)
        #expect(window.filter.bitsPerHalf == DedupeWindow.initialFilterBits)
        var random = SplitMix64(seed: 5)
        var ids: [Fingerprint128] = []
        for _ in 0..<20_000 {
            let fp = Fingerprint128(high: random.next(), low: random.next())
            ids.append(fp)
            #expect(window.insert(fp, monthTag: 2, openMonthTag: 2))
        }
        // Grown once, at 16,384 ids, to room for twice that.
        #expect(window.filter.bitsPerHalf == 32_768 * DedupeWindow.filterBitsPerID)
        // The rebuild reads the ids in pool order, passing over the buckets' unused slots:
        // it must set exactly the bits that inserting each id would.
        let expected = PairedBloomFilter(bitsPerHalf: window.filter.bitsPerHalf)
        for fp in ids {
            let slot = DedupeWindow.key(fp, monthTag: 2)
            expected.insert(high: slot.high, low: slot.lowAndMonth, half: 0)
        }
        let differing = zip(window.filter.words.elements, expected.words.elements).filter { $0 != $1 }.count
        #expect(differing == 0, "\(differing) filter words differ from an id-by-id filter")
        #expect(ids.allSatisfy { window.contains($0) })
        #expect(ids.allSatisfy { !window.insert($0, monthTag: 2, openMonthTag: 2) })
        for _ in 0..<490_000 { _ = window.insert(Fingerprint128(high: random.next(), low: random.next()), monthTag: 2, openMonthTag: 2) }
        #expect(window.rotations == 1)
        #expect(window.filter.bitsPerHalf == DedupeWindow.filterBits(forIDs: 500_000))
        #expect(ids.allSatisfy { window.contains($0) }, "the first ids are in the previous generation now")
    }
}
