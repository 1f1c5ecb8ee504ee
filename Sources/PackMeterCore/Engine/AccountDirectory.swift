import CPackMeterSupport

/// An account's position in its partition's tables. Only meaningful within one engine.
@frozen
public struct AccountID: Hashable, Sendable {
    public var rawValue: UInt32
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable var index: Int { Int(rawValue) }
}

/// An account id's bytes with what the directory finds it by: its length, its first 16
/// bytes as two words (zero-padded) and its hash. Made once per record, so that the
/// directory's slot can be requested before the account is interned.
public struct AccountKey {
    let bytes: UnsafeRawBufferPointer
    let head0: UInt64
    let head1: UInt64
    let hash: UInt64

    @inline(__always)
    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        (head0, head1) = Self.heads(bytes)
        hash = bytes.count <= 16 ? Self.hash(head0, head1, bytes.count) : fastHash64(bytes)
    }

    /// The first 16 bytes as little-endian words, zero-padded, reading no byte outside `b`.
    @inline(__always)
    static func heads(_ b: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        let n = b.count
        guard let p = b.baseAddress, n > 0 else { return (0, 0) }
        if n >= 16 {
            return (p.loadUnaligned(as: UInt64.self), p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        if n > 8 {
            // The last 8 bytes, shifted down so that bytes 8..<n land at the bottom.
            let tail = p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) >> UInt64(8 * (16 - n))
            return (p.loadUnaligned(as: UInt64.self), tail)
        }
        if n >= 4 {
            // Two overlapping 4-byte loads; the bytes they share are equal, so OR joins them.
            let low = UInt64(p.loadUnaligned(as: UInt32.self))
            let high = UInt64(p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)) << UInt64(8 * (n - 4))
            return (low | high, 0)
        }
        var w: UInt64 = 0
        for i in 0..<n { w |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << UInt64(8 * i) }
        return (w, 0)
    }

    @inline(__always)
    static func hash(_ head0: UInt64, _ head1: UInt64, _ length: Int) -> UInt64 {
        fmix64((head0 &* 0x9E37_79B9_7F4A_7C15) ^ rotl(head1 &* 0xC2B2_AE3D_27D4_EB4F, 31) ^ UInt64(length))
    }
}

/// Interns account ids (byte strings up to 64 bytes) to dense integers, so that every other
/// table of the engine is an array indexed by account. Account ids live back to back in
/// one arena (`arena`, `starts`: all a checkpoint keeps). The index over them is open
/// addressing with linear probing at load ≤ 3/4, rebuilt from the arena on restore; each
/// 32-byte slot holds 32 bits of the hash, the account number, the id's length and its
/// first 16 bytes, so finding an id of up to 16 bytes (account ids are typically 10–12
/// digits) reads one slot and nothing else, and that slot can be prefetched.
final class AccountDirectory {
    struct Slot: BitwiseCopyable {
        /// The hash's top 32 bits, and the account number + 1 in the low 32; 0 = empty.
        var tagAndNumber: UInt64
        var length: UInt64
        var head0: UInt64
        var head1: UInt64

        static let empty = Slot(tagAndNumber: 0, length: 0, head0: 0, head1: 0)

        init(tagAndNumber: UInt64, length: UInt64, head0: UInt64, head1: UInt64) {
            self.tagAndNumber = tagAndNumber
            self.length = length
            self.head0 = head0
            self.head1 = head1
        }

        init(_ key: AccountKey, number: Int) {
            self.init(tagAndNumber: (key.hash & AccountDirectory.tagMask) | UInt64(number + 1), length: UInt64(key.bytes.count),
                      head0: key.head0, head1: key.head1)
        }
    }

    static let tagMask: UInt64 = 0xFFFF_FFFF_0000_0000

    private(set) var arena = FlatBuffer<UInt8>(capacity: 1 << 16)
    private(set) var starts = FlatBuffer<UInt32>(capacity: 1024)
    private var slots: FlatBuffer<Slot>
    private var mask: Int
    /// False after `adopt` until the first lookup rebuilds the index (a checkpoint's copy
    /// never looks anything up, so it never pays for it).
    private var indexed = true

    init(expectedAccounts: Int = 1024) {
        var size = 1024
        while size * 3 < expectedAccounts * 4 { size *= 2 }
        slots = FlatBuffer(repeating: .empty, count: size)
        mask = size - 1
        starts.append(0)
    }

    var count: Int { starts.count - 1 }

    /// Requests the slot a lookup of `key` starts at.
    @inline(__always)
    func prefetch(_ key: AccountKey) {
        if indexed { pm_prefetch(slots.base + (Int(truncatingIfNeeded: key.hash) & mask)) }
    }

    /// The account's number, adding it if new.
    @inline(__always)
    func intern(_ key: AccountKey) -> AccountID {
        let (found, empty) = probe(key)
        return found ?? add(key, at: empty)
    }

    /// The number of `key`'s account if it is known, else the empty slot the probe ended at.
    @inline(__always)
    private func probe(_ key: AccountKey) -> (found: AccountID?, empty: Int) {
        if !indexed { rebuildIndex() }
        let tag = key.hash & Self.tagMask
        var i = Int(truncatingIfNeeded: key.hash) & mask
        while true {
            let s = slots.base[i]
            if s.tagAndNumber == 0 { return (nil, i) }
            if s.tagAndNumber & Self.tagMask == tag, matches(s, key) {
                return (AccountID(UInt32(truncatingIfNeeded: s.tagAndNumber) - 1), i)
            }
            i = (i + 1) & mask
        }
    }

    /// Adds the account of `key` at the empty slot `i` that ended its probe. Out of line:
    /// once per account.
    @inline(never)
    private func add(_ key: AccountKey, at i: Int) -> AccountID {
        let number = count
        let bytes = key.bytes
        arena.reserve(arena.count + bytes.count)
        if let source = bytes.baseAddress, bytes.count > 0 {
            (arena.base + arena.count).initialize(from: source.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        }
        arena.count += bytes.count
        starts.append(UInt32(arena.count))
        slots.base[i] = Slot(key, number: number)
        if count * 4 > (mask + 1) * 3 { rebuildIndex(size: (mask + 1) * 2) }
        return AccountID(UInt32(number))
    }

    /// The account's number if it is known.
    func find(_ bytes: UnsafeRawBufferPointer) -> AccountID? { probe(AccountKey(bytes)).found }

    func find(_ account: String) -> AccountID? {
        var account = account
        return account.withUTF8 { find(UnsafeRawBufferPointer($0)) }
    }

    /// Whether slot `s` holds `key`'s id: its length and first 16 bytes from the slot, any
    /// further bytes from the arena.
    @inline(__always)
    private func matches(_ s: Slot, _ key: AccountKey) -> Bool {
        guard s.length == UInt64(key.bytes.count), s.head0 == key.head0, s.head1 == key.head1 else { return false }
        let n = key.bytes.count
        if n <= 16 { return true }
        let start = Int(starts[Int(UInt32(truncatingIfNeeded: s.tagAndNumber) - 1)])
        return bytesEqual(UnsafeRawPointer(arena.base + start + 16), key.bytes.baseAddress! + 16, n - 16)
    }

    /// The account id's bytes; valid until the next `intern`.
    @inline(__always)
    func bytes(of account: AccountID) -> UnsafeRawBufferPointer {
        let start = Int(starts[account.index])
        return UnsafeRawBufferPointer(start: arena.base + start, count: Int(starts[account.index + 1]) - start)
    }

    func name(of account: AccountID) -> String {
        String(decoding: bytes(of: account), as: UTF8.self)
    }

    /// Takes the ids of a saved or copied directory (account i's bytes are
    /// `arena[starts[i]..<starts[i + 1]]`); the index is rebuilt on the first lookup.
    func adopt(arena: FlatBuffer<UInt8>, starts: FlatBuffer<UInt32>) {
        self.arena = arena
        self.starts = starts
        slots = FlatBuffer(repeating: .empty, count: 16)
        mask = 15
        indexed = false
    }

    /// Whether `arena` and `starts` describe ids as `adopt` needs them: offsets from 0,
    /// never decreasing, ending at the arena's end, each id at most `maxBytes` long.
    static func isValid(arena: FlatBuffer<UInt8>, starts: FlatBuffer<UInt32>, maxBytes: Int) -> Bool {
        guard starts.count >= 1, starts[0] == 0, Int(starts[starts.count - 1]) == arena.count else { return false }
        for i in 1..<starts.count where starts[i] < starts[i - 1] || Int(starts[i] - starts[i - 1]) > maxBytes {
            return false
        }
        return true
    }

    /// Rebuilds the index over every id, at a size that keeps the load ≤ 3/4.
    private func rebuildIndex(size minimum: Int = 1024) {
        var size = max(minimum, 16)
        while size * 3 < count * 4 + 4 { size *= 2 }
        let fresh = FlatBuffer<Slot>(repeating: .empty, count: size)
        for number in 0..<count {
            let key = AccountKey(bytes(of: AccountID(UInt32(number))))
            var i = Int(truncatingIfNeeded: key.hash) & (size - 1)
            while fresh.base[i].tagAndNumber != 0 { i = (i + 1) & (size - 1) }
            fresh.base[i] = Slot(key, number: number)
        }
        slots = fresh
        mask = size - 1
        indexed = true
    }

    var allocatedBytes: Int { arena.allocatedBytes + starts.allocatedBytes + slots.allocatedBytes }
}
