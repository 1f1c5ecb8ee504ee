/// An account's position in its partition's tables. Only meaningful within one engine.
@frozen
public struct AccountID: Hashable, Sendable {
    public var rawValue: UInt32
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable var index: Int { Int(rawValue) }
}

/// Interns account ids (byte strings up to 64 bytes) to dense integers, so that every other
/// table of the engine is an array indexed by account. Open addressing with linear probing
/// at load ≤ 1/2; each slot holds 32 bits of the hash beside the account number, so a probe
/// compares bytes only on a likely match. Account ids live back to back in one arena.
final class AccountDirectory {
    var arena = FlatBuffer<UInt8>(capacity: 1 << 16)
    var starts = FlatBuffer<UInt32>(capacity: 1024)
    var slots: FlatBuffer<UInt64>
    var mask: Int

    init(expectedAccounts: Int = 1024) {
        var size = 1024
        while size < expectedAccounts * 2 { size *= 2 }
        slots = FlatBuffer(repeating: 0, count: size)
        mask = size - 1
        starts.append(0)
    }

    var count: Int { starts.count - 1 }

    /// The account's number, adding it if new.
    @inline(__always)
    func intern(_ bytes: UnsafeRawBufferPointer) -> AccountID {
        let h = fastHash64(bytes)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[slot]
            if s == 0 { break }
            if s & 0xFFFF_FFFF_0000_0000 == tag {
                let id = Int(s & 0xFFFF_FFFF) - 1
                if matches(id, bytes) { return AccountID(UInt32(id)) }
            }
            slot = (slot + 1) & mask
        }
        let id = count
        arena.reserve(arena.count + bytes.count)
        if let source = bytes.baseAddress, bytes.count > 0 {
            (arena.base + arena.count).initialize(from: source.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        }
        arena.count += bytes.count
        starts.append(UInt32(arena.count))
        slots[slot] = tag | UInt64(id + 1)
        if count * 2 > mask + 1 { grow() }
        return AccountID(UInt32(id))
    }

    /// The account's number if it is known.
    func find(_ bytes: UnsafeRawBufferPointer) -> AccountID? {
        let h = fastHash64(bytes)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[slot]
            if s == 0 { return nil }
            if s & 0xFFFF_FFFF_0000_0000 == tag {
                let id = Int(s & 0xFFFF_FFFF) - 1
                if matches(id, bytes) { return AccountID(UInt32(id)) }
            }
            slot = (slot + 1) & mask
        }
    }

    func find(_ account: String) -> AccountID? {
        var account = account
        return account.withUTF8 { find(UnsafeRawBufferPointer($0)) }
    }

    @inline(__always)
    private func matches(_ id: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let start = Int(starts[id])
        let length = Int(starts[id + 1]) - start
        return length == bytes.count && (length == 0 || bytesEqual(UnsafeRawPointer(arena.base + start), bytes.baseAddress!, length))
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

    private func grow() {
        let size = (mask + 1) * 2
        let fresh = FlatBuffer<UInt64>(repeating: 0, count: size)
        for id in 0..<count {
            let h = fastHash64(bytes(of: AccountID(UInt32(id))))
            var slot = Int(truncatingIfNeeded: h) & (size - 1)
            while fresh[slot] != 0 { slot = (slot + 1) & (size - 1) }
            fresh[slot] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(id + 1)
        }
        slots = fresh
        mask = size - 1
    }

    var allocatedBytes: Int { arena.allocatedBytes + starts.allocatedBytes + slots.allocatedBytes }
}
