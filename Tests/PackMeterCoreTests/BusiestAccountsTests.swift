import Testing
@testable import PackMeterCore

@Suite("The busiest accounts (the demo's closing table)")
struct BusiestAccountsTests {
    @Test func mostBilledCallsFirst_overPacksAndOpenMonths_cutAtTheLimit() {
        let ledger = Ledger()
        // 30 in October and 20 of another pack in November; October is still open (72 h lateness).
        ledger.call("a1", account: "100000000001", ts: "2026-10-20T10:00:00+08:00", count: 30)
        ledger.call("a2", account: "100000000001", action: "VehicleLicenseOCR", ts: "2026-11-02T10:00:00+08:00", count: 20)
        ledger.call("b1", account: "100000000002", ts: "2026-11-02T11:00:00+08:00", count: 40)
        ledger.call("c1", account: "100000000003", ts: "2026-11-02T12:00:00+08:00", count: 5)
        ledger.call("c1", account: "100000000003", ts: "2026-11-02T12:00:00+08:00", count: 5)  // a duplicate: not billed
        ledger.purchase("d-order", account: "100000000004", quantity: 100, ts: "2026-11-02T13:00:00+08:00")
        let engine = ledger.engine

        let top2 = engine.busiestAccounts(limit: 2)
        #expect(top2.map { engine.name(of: $0.account) } == ["100000000001", "100000000002"])
        #expect(top2.map(\.calls) == [50, 40])

        // An account that only bought a pack has billed nothing and is not listed.
        let all = engine.busiestAccounts(limit: 10)
        #expect(all.map { engine.name(of: $0.account) } == ["100000000001", "100000000002", "100000000003"])
        #expect(all.map(\.calls) == [50, 40, 5])
        #expect(engine.busiestAccounts(limit: 0).isEmpty)
    }
}
