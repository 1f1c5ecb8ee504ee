import Testing
@testable import PackMeterCore

@Suite("Account directory: one number per account id, found from its slot")
struct AccountDirectoryTests {
    @Test func heads_areTheFirst16Bytes_zeroPadded_forEveryLength() {
        var generator = SplitMix64(seed: 11)
        var buffer = [UInt8](repeating: 0, count: 96)
        for n in 0...64 {
            for i in buffer.indices { buffer[i] = UInt8(truncatingIfNeeded: generator.next()) | 1 }
            let expected = (0..<2).map { word in
                (0..<8).reduce(UInt64(0)) { w, k in
                    let i = word * 8 + k
                    return i < n ? w | UInt64(buffer[16 + i]) << UInt64(8 * k) : w
                }
            }
            // The id sits inside other bytes, which must not leak into its words.
            let heads = buffer.withUnsafeBytes { AccountKey.heads(UnsafeRawBufferPointer(rebasing: $0[16..<(16 + n)])) }
            #expect(heads.0 == expected[0] && heads.1 == expected[1], "length \(n)")
        }
    }

    @Test func idsThatShareTheirFirstBytes_areDifferentAccounts() {
        let directory = AccountDirectory()
        let base = "1000000000001234"  // 16 bytes
        let ids = [base, base + "5", base + "6", base + "56", "100000000000123", base + base, base + base + "x"]
        let numbers = ids.map { id in withUTF8(id) { directory.intern(AccountKey($0)) } }
        #expect(Set(numbers).count == ids.count)
        for (id, number) in zip(ids, numbers) {
            #expect(directory.find(id) == number)
            #expect(directory.name(of: number) == id)
        }
        #expect(directory.find(base + "7") == nil)
        #expect(directory.find("") == nil)
    }

    @Test func manyAccounts_surviveGrowthAndACopiesRebuiltIndex() {
        let directory = AccountDirectory(expectedAccounts: 16)
        let ids = (0..<5000).map { "acct-\($0 * 7919 % 100_003)" + ($0 % 3 == 0 ? "-with-a-longer-suffix" : "") }
        for (n, id) in ids.enumerated() {
            #expect(withUTF8(id) { directory.intern(AccountKey($0)) } == AccountID(UInt32(n)))
        }
        let copy = AccountDirectory()
        copy.adopt(arena: directory.arena.copy(), starts: directory.starts.copy())
        for (n, id) in ids.enumerated() {
            #expect(directory.find(id) == AccountID(UInt32(n)) && copy.find(id) == AccountID(UInt32(n)))
        }
        #expect(withUTF8("a-new-one") { copy.intern(AccountKey($0)) } == AccountID(5000))
        #expect(copy.count == 5001 && directory.count == 5000)
    }

    @Test func savedIDsThatDoNotAddUp_areRefused() {
        let arena = FlatBuffer<UInt8>(repeating: 0x31, count: 10)
        let good = FlatBuffer<UInt32>(capacity: 3)
        for s: UInt32 in [0, 4, 10] { good.append(s) }
        #expect(AccountDirectory.isValid(arena: arena, starts: good, maxBytes: 64))
        for bad: [UInt32] in [[1, 4, 10], [0, 4, 9], [0, 6, 4, 10], [0, 10]] {
            let starts = FlatBuffer<UInt32>(capacity: bad.count)
            for s in bad { starts.append(s) }
            #expect(!AccountDirectory.isValid(arena: arena, starts: starts, maxBytes: bad == [0, 10] ? 8 : 64), "\(bad)")
        }
    }

    private func withUTF8<R>(_ s: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var s = s
        return s.withUTF8 { body(UnsafeRawBufferPointer($0)) }
    }
}

@Suite("Byte comparison of names: whole words, overlapping at the end")
struct BytesEqualTests {
    @Test func agreesWithBytewiseComparison_forEveryLengthAndEveryDifferingByte() {
        var generator = SplitMix64(seed: 5)
        for n in 0...40 {
            let a = (0..<n).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            a.withUnsafeBytes { x in
                var same = a
                same.withUnsafeBytes { y in
                    #expect(n == 0 || bytesEqual(x.baseAddress!, y.baseAddress!, n), "length \(n), equal")
                }
                for k in 0..<n {
                    same = a
                    same[k] ^= 0x40
                    same.withUnsafeBytes { y in
                        #expect(!bytesEqual(x.baseAddress!, y.baseAddress!, n), "length \(n), byte \(k) differs")
                    }
                }
            }
        }
    }
}
