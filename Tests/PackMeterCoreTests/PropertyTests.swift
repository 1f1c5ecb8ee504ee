import Testing
@testable import PackMeterCore
import PackMeterFiles

@Suite("Properties over generated logs")
struct PropertyTests {
    /// Runs `events` through a fresh partition; returns its ledger.
    func run(_ events: [ModelEvent], latenessMs: Int64 = 72 * 3_600_000) -> Ledger {
        let ledger = Ledger(latenessMs: latenessMs)
        for event in events { ledger.feed(event.line) }
        return ledger
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func engineAgreesWithTheReferenceModel_recordByRecord(seed: UInt64) {
        var generator = LogGenerator(seed: seed)
        let events = generator.generate(6000)
        let model = ReferenceModel(catalog: builtinCatalog, calendar: shanghai, latenessMs: 72 * 3_600_000)
        let ledger = Ledger(notices: .defaults)
        var outcomes: [String: Int] = [:]
        for (offset, event) in events.enumerated() {
            let before = ledger.counters
            let all = ledger.feed(event.line)
            let after = ledger.counters
            let expected = model.apply(event)
            // Notices, in the contract's order, as the model finds them.
            let notices = all.filter { $0["kind"] != nil }
            let produced = all.filter { $0["kind"] == nil }
            #expect(notices.compactMap { $0["id"]?.stringValue } == model.notices, "record \(offset): \(event.line)")
            for notice in notices { outcomes[notice["kind"]?.stringValue ?? "?", default: 0] += 1 }
            switch expected {
            case let .applied(free, prepaid, overage):
                #expect(after.applied == before.applied + 1, "record \(offset): \(event.line)")
                #expect(after.callsFree - before.callsFree == UInt64(free), "record \(offset): \(event.line)")
                #expect(after.callsPrepaid - before.callsPrepaid == UInt64(prepaid), "record \(offset): \(event.line)")
                #expect(after.callsOverage - before.callsOverage == UInt64(overage), "record \(offset): \(event.line)")
                #expect(produced.count == (overage > 0 ? 1 : 0), "record \(offset)")
                if overage > 0 { #expect(produced.first?["count"]?.intValue == Int64(overage)) }
                outcomes["applied", default: 0] += 1
                if prepaid > 0 { outcomes["prepaid", default: 0] += 1 }
                if case .refund = event { outcomes["refund", default: 0] += 1 }
                if case .suspend = event { outcomes["suspend", default: 0] += 1 }
            case .nonBillable:
                #expect(after.nonBillable == before.nonBillable + 1, "record \(offset): \(event.line)")
                #expect(produced.isEmpty)
                outcomes["nonBillable", default: 0] += 1
            case .duplicate:
                #expect(after.duplicates == before.duplicates + 1, "record \(offset): \(event.line)")
                #expect(produced.isEmpty)
                outcomes["duplicate", default: 0] += 1
            case let .rejected(reason):
                #expect(produced.first?["reason"]?.stringValue == reason, "record \(offset): \(event.line)")
                outcomes[reason, default: 0] += 1
            }
        }
        // Every kind of outcome occurred, so the comparison covered every rule.
        for kind in ["applied", "prepaid", "refund", "suspend", "nonBillable", "duplicate", "too_late", "refund_rejected", "malformed_json", "unknown_action",
                     "free_grant_used", "prepaid_used", "overage_started", "prepaid_expiring"] {
            #expect(outcomes[kind, default: 0] > 0, "no \(kind) in seed \(seed)")
        }
        for account in model.accounts.sorted() {
            #expect(ledger.balances(account) == model.balances(account), "balances of \(account)")
        }
        #expect(ledger.engine.watermark == model.watermark)
    }

    @Test(arguments: [11, 12, 13] as [UInt64])
    func conservation_freePlusPrepaidPlusOverage_isEveryBillableCallApplied(seed: UInt64) {
        var generator = LogGenerator(seed: seed)
        let events = generator.generate(5000)
        let ledger = Ledger()
        var billable: UInt64 = 0
        for event in events {
            let before = ledger.counters
            ledger.feed(event.line)
            let after = ledger.counters
            let settled = (after.callsFree - before.callsFree) + (after.callsPrepaid - before.callsPrepaid) + (after.callsOverage - before.callsOverage)
            if after.applied > before.applied, case let .call(_, _, _, _, count, _) = event {
                // This call: its whole count, no more, no less.
                #expect(settled == UInt64(count))
                billable += UInt64(count)
            } else {
                #expect(settled == 0)
            }
        }
        let c = ledger.counters
        #expect(c.callsFree + c.callsPrepaid + c.callsOverage == billable)
        #expect(UInt64(ledger.overageCalls) == c.callsOverage)
        #expect(c.isBalanced)
        #expect(c.recordsRead == UInt64(events.count))
    }

    @Test(arguments: [21, 22] as [UInt64])
    func determinism_sameLogTwice_byteIdenticalOutputs(seed: UInt64) {
        var generator = LogGenerator(seed: seed)
        let events = generator.generate(4000)
        func outputs() -> [String] {
            let ledger = run(events)
            let engine = ledger.engine
            let balances = engine.accountsWithState().map { engine.balances(of: $0).json(calendar: engine.calendar) }
            return ledger.overageLines + ["--"] + ledger.deadLetterLines + ["--"] + balances
        }
        let first = outputs()
        let second = outputs()
        #expect(first == second)
        #expect(first.count > 100)
    }

    @Test(arguments: [31, 32, 33, 34] as [UInt64])
    func arbitraryBytes_neverCrashTheDecoder_andEachEndsAsExactlyOneOutcome(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var generator = LogGenerator(seed: seed)
        let valid = generator.generate(300).map { Array($0.line.utf8) }
        let ledger = Ledger()
        var records = 0
        for round in 0..<6000 {
            var bytes: [UInt8]
            if round % 3 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                // A valid record, mutated: flipped, inserted, deleted or truncated bytes.
                bytes = valid[Int.random(in: 0..<valid.count, using: &random)]
                for _ in 0..<Int.random(in: 1...4, using: &random) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &random)
                    switch Int.random(in: 0...3, using: &random) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &random)
                    case 1: bytes.insert(Array("{}[]\",:\\ \u{0}".utf8).randomElement(using: &random)!, at: at)
                    case 2: bytes.remove(at: at)
                    default: bytes = Array(bytes[..<at])
                    }
                }
            }
            let produced = ledger.feed(bytes: bytes, recordTimestamp: round % 2 == 0 ? ms("2026-11-15T00:00:00Z") : nil)
            records += 1
            #expect(produced.count <= 1)
            #expect(ledger.counters.isBalanced)
            if let reason = produced.first?["reason"]?.stringValue {
                #expect(RejectReason(rawValue: reason) != nil)
            }
        }
        #expect(ledger.counters.recordsRead == UInt64(records))
        #expect(ledger.counters.rejectedTotal > 0 && ledger.counters.applied > 0)
    }
}
