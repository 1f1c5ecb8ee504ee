/// A prepaid pack bought by an account (docs/rules.md §6): 48 bytes. An account's packs are
/// chained through `next` in deduction order: effective first, ties in order received.
struct PrepaidSlot: BitwiseCopyable {
    var effective: Int64
    var expires: Int64
    /// The purchase's own `ts`: refunds are counted from it.
    var purchasedAt: Int64
    var account: UInt32
    var next: UInt32
    var quantity: UInt32
    var remaining: UInt32
    var pack: UInt16
    var live: Bool
    /// Explicit padding, always zero, so a saved slot's bytes are fully determined.
    var reserved8: UInt8 = 0
    var reserved32: UInt32 = 0

    static let nextOffset = MemoryLayout<PrepaidSlot>.offset(of: \PrepaidSlot.next)!
}

/// A min-heap of (instant, slot): prepaid packs by expiry.
struct ExpiryHeap {
    private(set) var items: [(expires: Int64, slot: UInt32)] = []
    /// The earliest expiry (`.max` when empty), kept as a field: every call compares
    /// its `ts` with it.
    private(set) var minimum: Int64 = .max

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ expires: Int64, _ slot: UInt32) {
        items.append((expires, slot))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[parent].expires > items[i].expires else { break }
            items.swapAt(parent, i)
            i = parent
        }
        minimum = items[0].expires
    }

    mutating func pop() -> (expires: Int64, slot: UInt32) {
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < items.count && items[l].expires < items[m].expires { m = l }
                if r < items.count && items[r].expires < items[m].expires { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        minimum = items.first?.expires ?? .max
        return top
    }

    mutating func removeAll() {
        items.removeAll()
        minimum = .max
    }
}
