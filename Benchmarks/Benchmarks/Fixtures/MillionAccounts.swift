import PackMeterCore

/// Fills `engine` as after a month of traffic: 1,000,000 accounts × 3 packs, one call each
/// in one open month (so the dedupe window holds 3,000,000 ids). Applied 1,024 accounts at
/// a time, so that what memory measures is the engine's, not the input's.
public func applyMillionAccounts(to engine: PartitionEngine) {
    let start = Timestamp.parseRFC3339("2026-11-03T00:00:00+08:00")!
    var calls: [CallEvent] = []
    calls.reserveCapacity(3 * 1024)
    let results = UnsafeMutablePointer<Deduction>.allocate(capacity: 3 * 1024)
    defer { results.deallocate() }
    for a in 0..<1_000_000 {
        let account = engine.intern(account: "1000\(100_000_000 + a)")
        for pack in 0..<3 {
            calls.append(CallEvent(account: account, pack: PackIndex(pack * 7), ts: start + Int64(a), count: 1, billable: true,
                                   id: Fingerprint128(high: UInt64(a) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(pack), low: UInt64(a * 3 + pack) << 16)))
        }
        if calls.count == 3 * 1024 {
            calls.withUnsafeBufferPointer { engine.apply($0, into: results) }
            calls.removeAll(keepingCapacity: true)
        }
    }
    calls.withUnsafeBufferPointer { engine.apply($0, into: results) }
}
