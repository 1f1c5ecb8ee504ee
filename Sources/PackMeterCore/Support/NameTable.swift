/// A fast 64-bit hash for interning short byte strings (account ids, catalog names).
/// Eight bytes a step; every lookup confirms with a full byte comparison, so collisions
/// cost time, never correctness.
@inline(__always)
func fastHash64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    let k: UInt64 = 0x9E37_79B9_7F4A_7C15
    var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(bytes.count)
    guard let base = bytes.baseAddress else { return fmix64(h) }
    let n = bytes.count
    var i = 0
    while i + 8 <= n {
        let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        h = (h ^ word) &* k
        h = rotl(h, 29)
        i += 8
    }
    if i < n {
        var word: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            word |= UInt64(base.load(fromByteOffset: i, as: UInt8.self)) &<< shift
            shift += 8
            i += 1
        }
        h = (h ^ word) &* k
    }
    return fmix64(h)
}

@inline(__always)
func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Bool {
    if count >= 8 {
        // Eight bytes a step, the last step ending at the last byte (it may overlap).
        var i = 0
        while i + 8 < count {
            if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
                return false
            }
            i += 8
        }
        return a.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
    }
    // Shorter: two loads of four (or two) bytes that overlap as needed.
    if count >= 4 {
        return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
            && a.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self) == b.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)
    }
    if count >= 2 {
        return a.loadUnaligned(as: UInt16.self) == b.loadUnaligned(as: UInt16.self)
            && a.loadUnaligned(fromByteOffset: count - 2, as: UInt16.self) == b.loadUnaligned(fromByteOffset: count - 2, as: UInt16.self)
    }
    return count == 0 || a.load(as: UInt8.self) == b.load(as: UInt8.self)
}

/// An immutable map from names (byte strings) to their positions, built once: the catalog's
/// actions, packs and billable error codes. Open addressing at load ≤ 1/4.
struct NameTable: Sendable {
    private let arena: [UInt8]
    private let starts: [Int]
    private let slots: [Int32]  // -1 empty, else entry index
    private let hashes: [UInt64]
    private let mask: Int

    init(_ names: [String]) {
        var arena: [UInt8] = []
        var starts: [Int] = []
        for name in names {
            starts.append(arena.count)
            arena.append(contentsOf: name.utf8)
        }
        starts.append(arena.count)
        var size = 8
        while size < names.count * 4 { size *= 2 }
        var slots = [Int32](repeating: -1, count: size)
        var hashes: [UInt64] = []
        arena.withUnsafeBytes { raw in
            for index in names.indices {
                let h = fastHash64(UnsafeRawBufferPointer(rebasing: raw[starts[index]..<starts[index + 1]]))
                hashes.append(h)
                var slot = Int(truncatingIfNeeded: h) & (size - 1)
                while slots[slot] >= 0 { slot = (slot + 1) & (size - 1) }
                slots[slot] = Int32(index)
            }
        }
        self.arena = arena
        self.starts = starts
        self.slots = slots
        self.hashes = hashes
        mask = size - 1
    }

    /// The position of `name`, or nil.
    @inline(__always)
    func index(of name: UnsafeRawBufferPointer) -> Int? {
        let h = fastHash64(name)
        var slot = Int(truncatingIfNeeded: h) & mask
        return arena.withUnsafeBytes { raw -> Int? in
            while true {
                let entry = Int(slots[slot])
                if entry < 0 { return nil }
                if hashes[entry] == h {
                    let start = starts[entry]
                    let length = starts[entry + 1] - start
                    if length == name.count,
                       length == 0 || bytesEqual(raw.baseAddress! + start, name.baseAddress!, length) {
                        return entry
                    }
                }
                slot = (slot + 1) & mask
            }
        }
    }

    func index(of name: String) -> Int? {
        var name = name
        return name.withUTF8 { index(of: UnsafeRawBufferPointer($0)) }
    }
}
