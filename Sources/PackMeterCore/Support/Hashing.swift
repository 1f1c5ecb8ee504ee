/// A 128-bit fingerprint of a byte string: MurmurHash3 x64/128 with a fixed seed.
///
/// Fingerprints are part of checkpointed state (the dedupe window remembers ids by
/// fingerprint), so the function and its seed are fixed forever: changing them is a
/// checkpoint format change. It is fast and well mixed, not cryptographic: ids come from the
/// API gateway, not from customers who could search for collisions.
@frozen
public struct Fingerprint128: Hashable, Sendable {
    public var high: UInt64
    public var low: UInt64

    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) {
        self = murmur3x64_128(bytes, seed: 0x9E37_79B9)
    }

    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { Fingerprint128($0) }
    }
}

@inlinable @inline(__always)
func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x &<< r) | (x &>> (64 &- r)) }

@inlinable @inline(__always)
func fmix64(_ k: UInt64) -> UInt64 {
    var k = k
    k ^= k >> 33
    k = k &* 0xFF51_AFD7_ED55_8CCD
    k ^= k >> 33
    k = k &* 0xC4CE_B9FE_1A85_EC53
    k ^= k >> 33
    return k
}

@inlinable
func murmur3x64_128(_ bytes: UnsafeRawBufferPointer, seed: UInt32) -> Fingerprint128 {
    let c1: UInt64 = 0x87C3_7B91_1142_53D5
    let c2: UInt64 = 0x4CF5_AD43_2745_937F
    let length = bytes.count
    var h1 = UInt64(seed)
    var h2 = UInt64(seed)
    if let base = bytes.baseAddress {
        let blocks = length / 16
        var offset = 0
        for _ in 0..<blocks {
            var k1 = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            var k2 = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
            offset += 16
            k1 = k1 &* c1; k1 = rotl(k1, 31); k1 = k1 &* c2; h1 ^= k1
            h1 = rotl(h1, 27); h1 = h1 &+ h2; h1 = h1 &* 5 &+ 0x52DC_E729
            k2 = k2 &* c2; k2 = rotl(k2, 33); k2 = k2 &* c1; h2 ^= k2
            h2 = rotl(h2, 31); h2 = h2 &+ h1; h2 = h2 &* 5 &+ 0x3849_5AB5
        }
        let tail = length & 15
        if tail > 8 {
            var k2: UInt64 = 0
            for i in stride(from: tail - 1, through: 8, by: -1) {
                k2 ^= UInt64(base.load(fromByteOffset: offset + i, as: UInt8.self)) &<< (UInt64(i - 8) * 8)
            }
            k2 = k2 &* c2; k2 = rotl(k2, 33); k2 = k2 &* c1; h2 ^= k2
        }
        if tail > 0 {
            var k1: UInt64 = 0
            for i in stride(from: min(tail, 8) - 1, through: 0, by: -1) {
                k1 ^= UInt64(base.load(fromByteOffset: offset + i, as: UInt8.self)) &<< (UInt64(i) * 8)
            }
            k1 = k1 &* c1; k1 = rotl(k1, 31); k1 = k1 &* c2; h1 ^= k1
        }
    }
    h1 ^= UInt64(length)
    h2 ^= UInt64(length)
    h1 = h1 &+ h2
    h2 = h2 &+ h1
    h1 = fmix64(h1)
    h2 = fmix64(h2)
    h1 = h1 &+ h2
    h2 = h2 &+ h1
    return Fingerprint128(high: h1, low: h2)
}
