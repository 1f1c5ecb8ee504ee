import Testing
@testable import PackMeterCore

@Suite("Catalog files: loaded and validated")
struct CatalogFileTests {
    func load(_ text: String) throws(CatalogError) -> Catalog { try Catalog(json: Array(text.utf8)) }

    func refusal(_ text: String) -> CatalogError? {
        do {
            _ = try load(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func aSmallValidCatalog_loads() throws {
        let catalog = try load(#"{"format":1,"name":"speech","billable_error_codes":[],"packs":[{"id":"asr","free_calls_per_month":0,"actions":["Recognize","Stream"]}]}"#)
        #expect(catalog.packs.map(\.id) == ["asr"])
        #expect(catalog.pack(catalog.pack(withID: "asr")!).freeCallsPerMonth == 0)
        #expect(catalog.action(named: "Stream") != nil)
    }

    @Test func duplicateAction_isRefused_namingBothPacks() {
        let error = refusal(#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1,"actions":["X"]},{"id":"b","free_calls_per_month":1,"actions":["X"]}]}"#)
        #expect(error?.code == .duplicateAction)
        #expect(error?.message == "action 'X' appears in packs 'a' and 'b'")
    }

    @Test func unknownField_isRefused() {
        let error = refusal(#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1,"actions":["X"],"grant":5}]}"#)
        #expect(error?.code == .unknownField)
        #expect(error?.message == "packs[0] has an unknown field 'grant' (known: actions, free_calls_per_month, id, name)")
    }

    @Test func grantBelowZero_isRefused() {
        let error = refusal(#"{"format":1,"packs":[{"id":"a","free_calls_per_month":-1,"actions":["X"]}]}"#)
        #expect(error?.code == .negativeGrant)
        #expect(error?.message == "pack 'a' has a free grant of -1, below 0")
    }

    @Test(arguments: [
        (#"{"format":2,"packs":[]}"#, CatalogError.Code.unsupportedFormat),
        (#"{"packs":[]}"#, .missingField),
        (#"{"format":1,"packs":[]}"#, .noPacks),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1,"actions":[]}]}"#, .emptyPack),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1.5,"actions":["X"]}]}"#, .wrongType),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":"1","actions":["X"]}]}"#, .wrongType),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1,"actions":["X"]},{"id":"a","free_calls_per_month":1,"actions":["Y"]}]}"#, .duplicatePack),
        (#"{"format":1,"billable_error_codes":["E","E"],"packs":[{"id":"a","free_calls_per_month":1,"actions":["X"]}]}"#, .duplicateCode),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":5000000000,"actions":["X"]}]}"#, .grantTooLarge),
        (#"{"format":1,"packs":[{"id":"a","free_calls_per_month":1,"actions":["X"]}],}"#, .invalidJSON),
        ("[]", .wrongType),
    ])
    func invalidCatalogs_areRefused(text: String, code: CatalogError.Code) {
        #expect(refusal(text)?.code == code)
    }

    @Test func fingerprint_changesWithTheRules_notWithNames() throws {
        let a = try load(#"{"format":1,"name":"a","packs":[{"id":"p","name":"P","free_calls_per_month":1000,"actions":["X"]}]}"#)
        let renamed = try load(#"{"format":1,"name":"b","packs":[{"id":"p","name":"Q","free_calls_per_month":1000,"actions":["X"]}]}"#)
        let regranted = try load(#"{"format":1,"name":"a","packs":[{"id":"p","name":"P","free_calls_per_month":999,"actions":["X"]}]}"#)
        #expect(a.fingerprint == renamed.fingerprint)
        #expect(a.fingerprint != regranted.fingerprint)
    }

    @Test func anotherCatalog_billsByItsOwnGrants() throws {
        let catalog = try load(#"{"format":1,"billable_error_codes":["Busy"],"packs":[{"id":"asr","free_calls_per_month":10,"actions":["Recognize"]}]}"#)
        let ledger = Ledger(catalog: catalog)
        ledger.call("a", action: "Recognize", ts: "2026-11-03T10:00:00+08:00", count: 12, code: "Busy")
        #expect(ledger.overageCalls == 2)
        ledger.call("b", action: "GeneralBasicOCR", ts: "2026-11-03T10:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "unknown_action")
    }
}
