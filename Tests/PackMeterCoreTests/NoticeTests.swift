import Testing
@testable import PackMeterCore
import PackMeterFiles

/// docs/contract.md, "Output: notices": when each kind is due, its id and fields, and the
/// order of one event's notices.
@Suite("docs/contract.md: notices")
struct NoticeTests {
    func ledger(_ thresholds: NoticeThresholds = .defaults) -> Ledger { Ledger(notices: thresholds) }

    func ids(_ outputs: [JSONValue]) -> [String] {
        outputs.filter { $0["kind"] != nil }.compactMap { $0["id"]?.stringValue }
    }

    @Test func freeGrantUsed_at80And100_once() {
        let l = ledger()
        #expect(ids(l.call("a", ts: "2026-11-03T10:00:00+08:00", count: 799)).isEmpty)
        let at80 = l.call("b", ts: "2026-11-03T10:00:01+08:00")
        #expect(ids(at80) == ["100012345678/free_grant_used/general-basic/2026-11/80"])
        #expect(at80.first?["used"]?.intValue == 800 && at80.first?["limit"]?.intValue == 1000 && at80.first?["threshold"]?.intValue == 80)
        #expect(ids(l.call("c", ts: "2026-11-03T10:00:02+08:00", count: 199)).isEmpty)
        #expect(ids(l.call("d", ts: "2026-11-03T10:00:03+08:00")) == ["100012345678/free_grant_used/general-basic/2026-11/100"])
        // Past 100%: overage, and no free grant notice again.
        #expect(ids(l.call("e", ts: "2026-11-03T10:00:04+08:00")) == ["100012345678/overage_started/general-basic/2026-11"])
        #expect(ids(l.call("f", ts: "2026-11-03T10:00:05+08:00")).isEmpty, "overage_started is once per month")
    }

    @Test func oneCallPassing80And100_givesBoth_inThresholdOrder_thenOverageStarted() {
        let l = ledger()
        let outputs = l.call("big", ts: "2026-11-03T10:00:00+08:00", count: 1005)
        #expect(outputs.first?["count"]?.intValue == 5, "the overage record comes first")
        #expect(ids(outputs) == ["100012345678/free_grant_used/general-basic/2026-11/80",
                                 "100012345678/free_grant_used/general-basic/2026-11/100",
                                 "100012345678/overage_started/general-basic/2026-11"])
        #expect(outputs.last?["used"]?.intValue == 5, "overage_started's used is that call's overage")
    }

    /// A call split across grant, prepaid packs and overage is checked against each part.
    @Test func aSplitCall_isCheckedAgainstEachPart() {
        let l = ledger()
        l.call("warm", ts: "2026-11-03T09:00:00+08:00", count: 995)
        l.purchase("order-b", quantity: 10, ts: "2026-11-03T09:10:00+08:00")
        l.purchase("order-a", quantity: 10, ts: "2026-11-03T09:20:00+08:00")
        let outputs = l.call("split", ts: "2026-11-03T10:00:00+08:00", count: 30)
        #expect(ids(outputs) == ["100012345678/free_grant_used/general-basic/2026-11/100",
                                 "100012345678/prepaid_used/order-a/90", "100012345678/prepaid_used/order-a/100",
                                 "100012345678/prepaid_used/order-b/90", "100012345678/prepaid_used/order-b/100",
                                 "100012345678/overage_started/general-basic/2026-11"],
                "purchase ids bytewise, thresholds ascending")
        let prepaid = outputs.first { $0["kind"]?.stringValue == "prepaid_used" }
        #expect(prepaid?["purchase"]?.stringValue == "order-a" && prepaid?["limit"]?.intValue == 10 && prepaid?["used"]?.intValue == 10)
    }

    @Test func suspended_usesNoGrant_soNoGrantNotice_butOverageStarts() {
        let l = ledger()
        l.suspend("s", ts: "2026-11-03T09:00:00+08:00")
        #expect(ids(l.call("c", ts: "2026-11-03T10:00:00+08:00", count: 900)) == ["100012345678/overage_started/general-basic/2026-11"])
        l.resume("r", ts: "2026-11-03T11:00:00+08:00")
        #expect(ids(l.call("d", ts: "2026-11-03T12:00:00+08:00", count: 900)) == ["100012345678/free_grant_used/general-basic/2026-11/80"])
    }

    @Test func prepaidExpiring_whenTheWatermarkReaches7DaysBefore_andNotForARefundedPack() {
        let l = ledger()
        l.purchase("keep", quantity: 100, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-20T00:00:00+08:00")
        l.purchase("gone", account: "100000000002", quantity: 100, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-20T00:00:00+08:00")
        l.refund("rf", account: "100000000002", purchase: "gone", ts: "2026-11-02T00:00:00+08:00")
        #expect(ids(l.call("early", account: "100000000009", ts: "2026-11-12T23:59:59+08:00")).filter { $0.contains("expiring") }.isEmpty)
        // Another account's call moves the watermark to 13 November: "keep" is 7 days from expiry.
        let outputs = l.call("due", account: "100000000009", ts: "2026-11-13T00:00:00+08:00")
        #expect(ids(outputs) == ["100012345678/prepaid_expiring/keep"])
        let notice = outputs.first { $0["kind"] != nil }
        #expect(notice?["remaining"]?.intValue == 100 && notice?["limit"]?.intValue == 100)
        #expect(notice?["expires"]?.stringValue == "2026-11-20T00:00:00.000+08:00")
        #expect(ids(l.call("later", account: "100000000009", ts: "2026-11-14T00:00:00+08:00")).isEmpty, "once per purchase")
    }

    @Test func aPackBoughtWithin7DaysOfExpiry_isNotifiedByItsPurchase() {
        let l = ledger()
        l.call("w", ts: "2026-11-10T00:00:00+08:00")
        let outputs = l.purchase("short", quantity: 50, ts: "2026-11-09T00:00:00+08:00", expires: "2026-11-12T00:00:00+08:00")
        #expect(ids(outputs) == ["100012345678/prepaid_expiring/short"])
    }

    /// Even when the same event takes the watermark past `expires` (the pack is then dropped).
    @Test func aWatermarkJumpPastExpires_stillNotifiesFirst() {
        let l = ledger()
        l.purchase("p", quantity: 50, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-15T00:00:00+08:00")
        let outputs = l.call("jump", account: "100000000009", ts: "2026-11-30T00:00:00+08:00")
        #expect(ids(outputs) == ["100012345678/prepaid_expiring/p"])
        #expect(l.balances()?.prepaid.isEmpty == true, "and the pack expired")
    }

    @Test func aPackWithNoCallsLeft_isNotNotifiedExpiring() {
        let l = ledger()
        l.call("used-up", ts: "2026-11-01T00:00:00+08:00", count: 1000)
        l.purchase("p", quantity: 5, ts: "2026-11-01T01:00:00+08:00", expires: "2026-11-15T00:00:00+08:00")
        l.call("drain", ts: "2026-11-01T02:00:00+08:00", count: 5)
        #expect(ids(l.call("late", ts: "2026-11-10T00:00:00+08:00")).filter { $0.contains("expiring") }.isEmpty)
    }

    @Test func aDuplicateOrRejectedEvent_causesNoNotice_norMovesTheWatermark() {
        let l = ledger()
        l.purchase("p", quantity: 50, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-20T00:00:00+08:00")
        l.call("a", ts: "2026-11-03T10:00:00+08:00", count: 800)
        #expect(ids(l.call("a", ts: "2026-11-03T10:00:00+08:00", count: 800)).isEmpty, "duplicate")
        #expect(ids(l.feed("{\"id\":\"x\",\"account\":\"100012345678\",\"action\":\"NoSuchOCR\",\"ts\":\"2026-11-19T00:00:00+08:00\"}")) == [],
                "a rejected event does not move the watermark to the notice")
        #expect(l.engine.watermark == ms("2026-11-03T10:00:00+08:00"))
    }

    @Test func aNonBillableCall_movesTheWatermark_andCanCausePrepaidExpiring() {
        let l = ledger()
        l.purchase("p", quantity: 50, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-20T00:00:00+08:00")
        let outputs = l.call("failed", ts: "2026-11-14T00:00:00+08:00", code: "FailedOperation.ImageDecodeFailed")
        #expect(ids(outputs) == ["100012345678/prepaid_expiring/p"])
    }

    @Test func emptyThresholdLists_turnThoseKindsOff() {
        var problem = ""
        let l = ledger(NoticeThresholds(freeGrant: [], prepaid: [], problem: &problem)!)
        l.purchase("p", quantity: 10, ts: "2026-11-01T00:00:00+08:00")
        #expect(ids(l.call("c", ts: "2026-11-03T10:00:00+08:00", count: 1015)) == ["100012345678/overage_started/general-basic/2026-11"])
    }

    /// The example record of docs/contract.md, byte for byte.
    @Test func theRecord_isTheContractsExample() {
        let l = Ledger(partition: 3, notices: .defaults)
        l.skip(1200)
        let line = String(l.call("5c6b", ts: "2026-11-03T10:00:00.123+08:00", count: 800).isEmpty ? "" : l.noticeLines[0])
        #expect(line == #"{"v":1,"id":"100012345678/free_grant_used/general-basic/2026-11/80","kind":"free_grant_used","account":"100012345678","pack":"general-basic","month":"2026-11","threshold":80,"used":800,"limit":1000,"ts":"2026-11-03T10:00:00.123+08:00","source":{"topic":"ocr.usage","partition":3,"offset":1200}}"#)
    }

    /// Notices come from the balances alone: an engine restored from a checkpoint notifies
    /// exactly as the one that never stopped.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func restoredMidLog_givesTheSameNotices(seed: UInt64) throws {
        var generator = LogGenerator(seed: seed)
        let events = generator.generate(4000)
        let whole = ledger()
        for event in events { whole.feed(event.line) }
        let first = ledger()
        for event in events.prefix(2000) { first.feed(event.line) }
        var bytes: [UInt8] = []
        let writer = StateWriter { bytes.append(contentsOf: $0) }
        first.engine.copy().encodeState(to: writer)
        let restored = EngineConfiguration(catalog: builtinCatalog, calendar: shanghai, notices: .defaults).makeEngine()
        try bytes.withUnsafeBytes { raw in
            var reader = StateReader(raw)
            try restored.decodeState(from: &reader)
        }
        let second = Ledger(engine: restored)
        second.skip(2000)
        for event in events.dropFirst(2000) { second.feed(event.line) }
        #expect(first.noticeLines + second.noticeLines == whole.noticeLines)
        #expect(!whole.noticeLines.isEmpty)
    }
}
