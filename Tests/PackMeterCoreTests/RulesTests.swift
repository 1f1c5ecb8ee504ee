import Testing
@testable import PackMeterCore

@Suite("docs/rules.md §2: the catalog")
struct CatalogRuleTests {
    @Test func builtinCatalog_has46ActionsIn22Packs_each1000FreeCalls() {
        #expect(builtinCatalog.packs.count == 22)
        #expect(builtinCatalog.actions.count == 46)
        #expect(builtinCatalog.packs.allSatisfy { $0.freeCallsPerMonth == 1000 })
    }

    @Test func sharedPacks_listTheirActions() {
        func actions(_ pack: String) -> [String] {
            builtinCatalog.pack(builtinCatalog.pack(withID: pack)!).actions.map { builtinCatalog.action($0).name }
        }
        #expect(actions("vehicle-driver-license") == ["VehicleLicenseOCR", "DriverLicenseOCR"])
        #expect(actions("image-text-basic") == ["QrcodeOCR", "TextDetect"])
        #expect(actions("general-certificate").count == 9)
        #expect(actions("bill-small").count == 12)
        #expect(actions("industry-document") == ["EduPaperOCR", "FormulaOCR", "InsuranceBillOCR"])
    }

    @Test func vehicleRegCert_sharesTheGeneralCertificatePack() {
        let action = builtinCatalog.action(named: "VehicleRegCertOCR")!
        #expect(builtinCatalog.pack(builtinCatalog.action(action).pack).id == "general-certificate")
    }

    @Test func billableErrorCodes_areTheFourSince20200706() {
        #expect(Set(builtinCatalog.billableErrorCodes) == [
            "FailedOperation.EmptyImageError", "FailedOperation.ImageNoBusinessCard",
            "FailedOperation.InvoiceMismatch", "ResourceNotFound.NoInvoice",
        ])
    }
}

@Suite("docs/rules.md §3: what a call costs")
struct CallCostTests {
    @Test func succeededCall_isBillable_whetherCodeIsAbsentEmptyOrSuccess() {
        let ledger = Ledger()
        ledger.call("a", ts: "2026-11-03T10:00:00+08:00")
        ledger.call("b", ts: "2026-11-03T10:00:00+08:00", code: "")
        ledger.call("c", ts: "2026-11-03T10:00:00+08:00", code: "Success")
        #expect(ledger.use("general-basic", "2026-11")?.free == 3)
        #expect(ledger.counters.applied == 3)
    }

    @Test(arguments: ["FailedOperation.EmptyImageError", "FailedOperation.ImageNoBusinessCard",
                      "FailedOperation.InvoiceMismatch", "ResourceNotFound.NoInvoice"])
    func failedCall_withBillableCode_isBilled(code: String) {
        let ledger = Ledger()
        ledger.call("a", ts: "2026-11-03T10:00:00+08:00", count: 4, code: code)
        #expect(ledger.use("general-basic", "2026-11")?.free == 4)
        #expect(ledger.counters.nonBillable == 0)
    }

    @Test func failedCall_withOtherCode_costsNothingAndChangesNoBalance() {
        let ledger = Ledger()
        ledger.call("a", ts: "2026-11-03T10:00:00+08:00", count: 7, code: "FailedOperation.ImageBlur")
        #expect(ledger.counters.nonBillable == 1)
        #expect(ledger.counters.billableCalls == 0)
        #expect(ledger.use("general-basic", "2026-11") == nil)
        // It is remembered: a repeat is a duplicate, not a second non-billable call.
        ledger.call("a", ts: "2026-11-03T10:00:00+08:00", count: 7, code: "FailedOperation.ImageBlur")
        #expect(ledger.counters.duplicates == 1)
    }
}

@Suite("docs/rules.md §4: deduction order")
struct DeductionOrderTests {
    @Test func thousandFreeCalls_thenOverage() {
        let ledger = Ledger()
        callMany(ledger, 1000, prefix: "c", ts: "2026-11-03T10:00:00+08:00")
        #expect(ledger.overage.isEmpty)
        ledger.call("c-1000", ts: "2026-11-03T10:00:01+08:00")
        #expect(ledger.overage.count == 1)
        #expect(ledger.overage[0]["count"]?.intValue == 1)
        #expect(ledger.overage[0]["id"]?.stringValue == "c-1000")
        let use = ledger.use("general-basic", "2026-11")!
        #expect(use.free == 1000 && use.prepaid == 0 && use.overage == 1)
    }

    @Test func countOf25_splits10Free_10Prepaid_5Overage() {
        let ledger = Ledger()
        ledger.call("warm-up", ts: "2026-11-02T10:00:00+08:00", count: 990)
        ledger.purchase("order-1", quantity: 10, ts: "2026-11-02T11:00:00+08:00")
        ledger.call("big", ts: "2026-11-03T10:00:00+08:00", count: 25)
        #expect(ledger.overage.count == 1)
        #expect(ledger.overage[0]["count"]?.intValue == 5)
        let use = ledger.use("general-basic", "2026-11")!
        #expect(use.free == 1000 && use.prepaid == 10 && use.overage == 5)
        #expect(ledger.balances()!.prepaid[0].remaining == 0)
        #expect(ledger.counters.callsFree == 1000 && ledger.counters.callsPrepaid == 10 && ledger.counters.callsOverage == 5)
    }
}

@Suite("docs/rules.md §5: the free grant")
struct FreeGrantTests {
    @Test func sharedPack_driverAndVehicleLicense_share1000() {
        let ledger = Ledger()
        ledger.call("v", action: "VehicleLicenseOCR", ts: "2026-11-03T10:00:00+08:00", count: 600)
        ledger.call("d", action: "DriverLicenseOCR", ts: "2026-11-03T10:00:01+08:00", count: 600)
        #expect(ledger.overageCalls == 200)
        #expect(ledger.overage[0]["pack"]?.stringValue == "vehicle-driver-license")
        #expect(ledger.overage[0]["action"]?.stringValue == "DriverLicenseOCR")
        #expect(ledger.use("vehicle-driver-license", "2026-11")?.free == 1000)
    }

    @Test func separatePacks_eachGet1000() {
        let ledger = Ledger()
        ledger.call("g", action: "GeneralBasicOCR", ts: "2026-11-03T10:00:00+08:00", count: 1000)
        ledger.call("i", action: "IDCardOCR", ts: "2026-11-03T10:00:01+08:00", count: 1000)
        #expect(ledger.overage.isEmpty)
        #expect(ledger.use("general-basic", "2026-11")?.free == 1000)
        #expect(ledger.use("id-card", "2026-11")?.free == 1000)
    }

    @Test func callAt20261031T1630Z_isNovemberInShanghai() {
        let ledger = Ledger()
        ledger.call("late-utc", ts: "2026-10-31T16:30:00Z", count: 1001)
        #expect(ledger.overage[0]["month"]?.stringValue == "2026-11")
        #expect(ledger.overage[0]["ts"]?.stringValue == "2026-11-01T00:30:00.000+08:00")
        #expect(ledger.use("general-basic", "2026-11")?.free == 1000)
        #expect(ledger.use("general-basic", "2026-10") == nil)
    }

    @Test func sameCall_isOctoberWhenBillingInUTC() {
        let ledger = Ledger(zone: "UTC")
        ledger.call("late-utc", ts: "2026-10-31T16:30:00Z")
        #expect(ledger.use("general-basic", "2026-10")?.free == 1)
    }

    @Test func newMonth_startsNewGrant_octoberUnusedCallsDoNotCarryOver() {
        let ledger = Ledger()
        ledger.call("oct", ts: "2026-10-15T10:00:00+08:00", count: 100)
        ledger.call("nov", ts: "2026-11-02T10:00:00+08:00", count: 1500)
        // November's grant is 1000, not 1000 + October's unused 900.
        #expect(ledger.overageCalls == 500)
        #expect(ledger.use("general-basic", "2026-10")!.free == 100)
        #expect(ledger.use("general-basic", "2026-11")!.free == 1000)
    }

    @Test func monthIsTheCallsOwnTs_notTheOrderOfProcessing() {
        // November calls arriving after December ones still draw on November's grant.
        let ledger = Ledger()
        ledger.call("dec", ts: "2026-12-01T10:00:00+08:00", count: 1000)
        ledger.call("nov", ts: "2026-11-30T23:59:59.999+08:00", count: 1000)
        #expect(ledger.overage.isEmpty)
        #expect(ledger.use("general-basic", "2026-11")!.free == 1000)
        #expect(ledger.use("general-basic", "2026-12")!.free == 1000)
    }

    @Test func grantIsPerAccount() {
        let ledger = Ledger()
        ledger.call("a", account: "A", ts: "2026-11-03T10:00:00+08:00", count: 1000)
        ledger.call("b", account: "B", ts: "2026-11-03T10:00:00+08:00", count: 1000)
        #expect(ledger.overage.isEmpty)
    }
}

@Suite("docs/rules.md §6: prepaid packs")
struct PrepaidPackTests {
    @Test func prepaidPacks_usedOldestEffectiveFirst() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-10T10:00:00+08:00", count: 1000)
        // Bought later but effective earlier: B is used first.
        ledger.purchase("A", quantity: 100, ts: "2026-11-05T00:00:00+08:00", effective: "2026-11-05T00:00:00+08:00")
        ledger.purchase("B", quantity: 100, ts: "2026-11-06T00:00:00+08:00", effective: "2026-11-01T00:00:00+08:00")
        ledger.call("c", ts: "2026-11-10T11:00:00+08:00", count: 150)
        let prepaid = ledger.balances()!.prepaid
        #expect(prepaid.map(\.id) == ["B", "A"])
        #expect(prepaid.map(\.remaining) == [0, 50])
    }

    @Test func packsEffectiveAtTheSameInstant_areUsedInOrderReceived() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-10T10:00:00+08:00", count: 1000)
        ledger.purchase("first", quantity: 10, ts: "2026-11-05T00:00:00+08:00")
        ledger.purchase("second", quantity: 10, ts: "2026-11-05T00:00:00+08:00")
        ledger.call("c", ts: "2026-11-10T11:00:00+08:00", count: 12)
        #expect(ledger.balances()!.prepaid.map(\.remaining) == [0, 8])
    }

    @Test func packNotYetEffective_isNotUsed() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-10T10:00:00+08:00", count: 1000)
        ledger.purchase("future", quantity: 100, ts: "2026-11-10T09:00:00+08:00", effective: "2026-11-20T00:00:00+08:00")
        ledger.call("c", ts: "2026-11-10T11:00:00+08:00", count: 5)
        #expect(ledger.overageCalls == 5)
        ledger.call("d", ts: "2026-11-20T00:00:00+08:00", count: 5)  // effective <= ts: in force
        #expect(ledger.overageCalls == 5)
        #expect(ledger.balances()!.prepaid[0].remaining == 95)
    }

    @Test func expiredPack_isNotUsed_andExpiresIsExclusive() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-01T10:00:00+08:00", count: 1000)
        ledger.purchase("short", quantity: 100, ts: "2026-11-01T00:00:00+08:00", expires: "2026-11-10T00:00:00+08:00")
        ledger.call("before", ts: "2026-11-09T23:59:59.999+08:00", count: 1)
        #expect(ledger.overageCalls == 0)
        ledger.call("at", ts: "2026-11-10T00:00:00+08:00", count: 1)  // ts < expires fails
        #expect(ledger.overageCalls == 1)
        // Past the watermark, the expired pack is gone from the balances.
        #expect(ledger.balances()!.prepaid.isEmpty)
    }

    @Test func defaultEffectiveIsTs_andDefaultExpiresIsOneYearLater() {
        let ledger = Ledger()
        ledger.purchase("order-8812", quantity: 10000, ts: "2026-11-03T09:00:00+08:00")
        let pack = ledger.balances()!.prepaid[0]
        #expect(pack.effective == ms("2026-11-03T09:00:00+08:00"))
        #expect(pack.expires == ms("2027-11-03T09:00:00+08:00"))
        #expect(shanghai.oneYearAfter(ms("2028-02-29T12:00:00+08:00")) == ms("2029-02-28T12:00:00+08:00"))
    }

    @Test func prepaidPacksSpanMonths_remainingIsNotReset() {
        let ledger = Ledger()
        ledger.purchase("p", quantity: 500, ts: "2026-10-01T00:00:00+08:00")
        ledger.call("oct", ts: "2026-10-20T00:00:00+08:00", count: 1200)
        ledger.call("nov", ts: "2026-11-02T00:00:00+08:00", count: 1200)
        #expect(ledger.use("general-basic", "2026-10")!.prepaid == 200)
        #expect(ledger.use("general-basic", "2026-11")!.prepaid == 200)
        #expect(ledger.balances()!.prepaid[0].remaining == 100)
    }

    @Test func prepaidPack_onlyCoversItsOwnPack() {
        let ledger = Ledger()
        ledger.purchase("p", pack: "id-card", quantity: 500, ts: "2026-11-01T00:00:00+08:00")
        ledger.call("c", ts: "2026-11-02T00:00:00+08:00", count: 1010)
        #expect(ledger.overageCalls == 10)
    }

    @Test func duplicatePurchase_doesNotAddCallsTwice() {
        let ledger = Ledger()
        ledger.purchase("order", quantity: 100, ts: "2026-11-01T00:00:00+08:00")
        ledger.purchase("order", quantity: 100, ts: "2026-11-01T00:00:00+08:00")
        #expect(ledger.balances()!.prepaid.count == 1)
        #expect(ledger.counters.duplicates == 1)
    }

    @Test func refundOfUnusedPack_onDay7_removesIt() {
        let ledger = Ledger()
        ledger.purchase("order", quantity: 100, ts: "2026-11-03T09:00:00+08:00")
        ledger.refund("rf", purchase: "order", ts: "2026-11-10T09:00:00+08:00")
        #expect(ledger.deadLetters.isEmpty)
        #expect(ledger.balances()!.prepaid.isEmpty)
        #expect(ledger.counters.applied == 2)
    }

    @Test func refundOnDay8_isRejected_andThePackStays() {
        let ledger = Ledger()
        ledger.purchase("order", quantity: 100, ts: "2026-11-03T09:00:00+08:00")
        ledger.refund("rf", purchase: "order", ts: "2026-11-11T09:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "refund_rejected")
        #expect(ledger.lastDeadLetterDetail.contains("8d after purchase 'order'"))
        #expect(ledger.balances()!.prepaid.count == 1)
    }

    @Test func refundOneMillisecondAfter7Days_isRejected() {
        let ledger = Ledger()
        ledger.purchase("order", quantity: 100, ts: "2026-11-03T09:00:00+08:00")
        ledger.refund("rf", purchase: "order", ts: "2026-11-10T09:00:00.001+08:00")
        #expect(ledger.lastDeadLetterReason == "refund_rejected")
    }

    @Test func refundOfUsedPack_isRejected() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-03T08:00:00+08:00", count: 1000)
        ledger.purchase("order", quantity: 100, ts: "2026-11-03T09:00:00+08:00")
        ledger.call("one", ts: "2026-11-03T10:00:00+08:00")
        ledger.refund("rf", purchase: "order", ts: "2026-11-04T09:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "refund_rejected")
        #expect(ledger.lastDeadLetterDetail.contains("has been used (1 of 100 calls)"))
        #expect(ledger.balances()!.prepaid[0].remaining == 99)
    }

    @Test func refundOfUnknownPurchase_isRejected_andNotRemembered() {
        let ledger = Ledger()
        ledger.refund("rf", purchase: "nope", ts: "2026-11-04T09:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "refund_rejected")
        // A rejected event's id is not remembered: the corrected re-send is applied.
        ledger.purchase("nope", quantity: 5, ts: "2026-11-04T09:00:00+08:00")
        ledger.refund("rf", purchase: "nope", ts: "2026-11-04T10:00:00+08:00")
        #expect(ledger.deadLetters.count == 1)
        #expect(ledger.balances()!.prepaid.isEmpty)
    }

    @Test func refundedPack_isNotUsedAfterwards() {
        let ledger = Ledger()
        ledger.call("free", ts: "2026-11-03T08:00:00+08:00", count: 1000)
        ledger.purchase("order", quantity: 100, ts: "2026-11-03T09:00:00+08:00")
        ledger.refund("rf", purchase: "order", ts: "2026-11-03T10:00:00+08:00")
        ledger.call("c", ts: "2026-11-03T11:00:00+08:00", count: 3)
        #expect(ledger.overageCalls == 3)
    }
}

@Suite("docs/rules.md §7: suspension")
struct SuspensionTests {
    @Test func suspended_drawsPrepaidThenOverage_resume_restoresTheMonthsRemainingFreeCalls() {
        let ledger = Ledger()
        ledger.call("before", ts: "2026-11-02T10:00:00+08:00", count: 300)
        ledger.purchase("order", quantity: 50, ts: "2026-11-02T11:00:00+08:00")
        ledger.suspend("s", ts: "2026-11-10T00:00:00+08:00")
        ledger.call("during", ts: "2026-11-11T00:00:00+08:00", count: 80)
        #expect(ledger.balances()!.suspended)
        var use = ledger.use("general-basic", "2026-11")!
        #expect(use.free == 300 && use.prepaid == 50 && use.overage == 30)
        ledger.resume("r", ts: "2026-11-12T08:00:00+08:00")
        ledger.call("after", ts: "2026-11-12T09:00:00+08:00", count: 800)
        use = ledger.use("general-basic", "2026-11")!
        // 700 free calls were left; nothing used during suspension is given back.
        #expect(use.free == 1000 && use.prepaid == 50 && use.overage == 130)
        #expect(!ledger.balances()!.suspended)
    }

    @Test(arguments: ["arrears", "violation"])
    func bothReasons_suspend(reason: String) {
        let ledger = Ledger()
        ledger.suspend("s", reason: reason, ts: "2026-11-10T00:00:00+08:00")
        ledger.call("c", ts: "2026-11-11T00:00:00+08:00", count: 2)
        #expect(ledger.overageCalls == 2)
    }
}

@Suite("docs/rules.md §8: order, time and duplicates")
struct OrderTimeDuplicateTests {
    @Test func accountEvents_takeEffectAtTheirPositionInTheLog_notTheirTs() {
        let ledger = Ledger()
        // Processed before the suspend, although its ts is later: not affected.
        ledger.call("early-in-log", ts: "2026-11-12T00:00:00+08:00", count: 10)
        ledger.suspend("s", ts: "2026-11-10T00:00:00+08:00")
        // Processed after it, although its ts is earlier: affected.
        ledger.call("late-in-log", ts: "2026-11-09T00:00:00+08:00", count: 10)
        let use = ledger.use("general-basic", "2026-11")!
        #expect(use.free == 10 && use.overage == 10)
    }

    @Test func tooLate_exactlyAtTheBoundary() {
        // November closes at 2026-12-01T00:00+08:00 + 72h = 2026-12-04T00:00+08:00.
        let open = Ledger()
        open.call("dec", ts: "2026-12-03T23:59:59.999+08:00")
        open.call("nov", ts: "2026-11-30T12:00:00+08:00")
        #expect(open.deadLetters.isEmpty)

        let closed = Ledger()
        closed.call("dec", ts: "2026-12-04T00:00:00+08:00")
        closed.call("nov", ts: "2026-11-30T12:00:00+08:00")
        #expect(closed.lastDeadLetterReason == "too_late")
        #expect(closed.lastDeadLetterDetail.contains("the call is for 2026-11, which closed at 2026-12-04T00:00:00.000+08:00"))
        // December is still open.
        closed.call("dec-2", ts: "2026-12-01T00:00:00+08:00")
        #expect(closed.deadLetters.count == 1)
    }

    @Test func allowedLateness_isAFlag() {
        let ledger = Ledger(latenessMs: 3_600_000)
        ledger.call("dec", ts: "2026-12-01T01:00:00+08:00")
        ledger.call("nov", ts: "2026-11-30T12:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "too_late")
    }

    @Test func closedMonth_balancesAreDropped() {
        let ledger = Ledger()
        ledger.call("nov", ts: "2026-11-30T12:00:00+08:00", count: 5)
        ledger.call("dec", ts: "2026-12-05T00:00:00+08:00", count: 5)
        #expect(ledger.balances()!.months.map(\.month.description) == ["2026-12"])
        #expect(ledger.engine.liveBalanceCount == 1)
    }

    @Test func duplicateCall_costsNothingAndProducesNothing() {
        let ledger = Ledger()
        ledger.call("once", ts: "2026-11-03T10:00:00+08:00", count: 1001)
        ledger.call("once", ts: "2026-11-03T10:00:00+08:00", count: 1001)
        ledger.call("once", ts: "2026-11-04T10:00:00+08:00", count: 3)  // same id, other content
        #expect(ledger.overage.count == 1)
        #expect(ledger.counters.duplicates == 2)
        #expect(ledger.use("general-basic", "2026-11")!.free == 1000)
    }

    @Test func rejectedCall_isNotRemembered_correctedResendIsApplied() {
        let ledger = Ledger()
        ledger.call("fix-me", action: "GeneralBasicOCRR", ts: "2026-11-03T10:00:00+08:00")
        ledger.call("fix-me", action: "GeneralBasicOCR", ts: "2026-11-03T10:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "unknown_action")
        #expect(ledger.counters.applied == 1)
    }

    @Test func duplicateWindow_coversTheAllowedLateness() {
        let ledger = Ledger()
        ledger.call("x", ts: "2026-11-28T00:00:00+08:00")
        ledger.call("later", ts: "2026-12-03T23:00:00+08:00")
        ledger.call("x", ts: "2026-11-28T00:00:00+08:00")
        #expect(ledger.counters.duplicates == 1)
    }

    @Test func watermarkIsPerPartition() {
        let p0 = Ledger(partition: 0)
        let p1 = Ledger(partition: 1)
        p0.call("dec", ts: "2026-12-10T00:00:00+08:00")
        p1.call("nov", ts: "2026-11-30T00:00:00+08:00")
        #expect(p1.deadLetters.isEmpty)
        p0.call("nov", ts: "2026-11-30T00:00:00+08:00")
        #expect(p0.lastDeadLetterReason == "too_late")
    }

    @Test func dedupeBound_isCountedWhenReached() {
        let ledger = Ledger(dedupeCapacity: 100)
        for i in 0..<2000 { ledger.call("id-\(i)", ts: "2026-11-03T10:00:00+08:00") }
        // The newest ids are still remembered.
        ledger.call("id-1999", ts: "2026-11-03T10:00:00+08:00")
        #expect(ledger.counters.duplicates == 1)
        let evictions = ledger.engine.dedupeEvictions
        #expect(evictions.all > 0)
        #expect(evictions.openMonth == evictions.all)
        #expect(ledger.engine.rememberedIDs <= 200)
    }
}
