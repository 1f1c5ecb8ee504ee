import Testing
@testable import PackMeterCore

@Suite("Engine state: saved and restored, it decides exactly as before")
struct EngineStateTests {
    func encode(_ engine: PartitionEngine) -> [UInt8] {
        var bytes: [UInt8] = []
        let writer = StateWriter { bytes.append(contentsOf: $0) }
        engine.encodeState(to: writer)
        return bytes
    }

    func restored(_ bytes: [UInt8], dedupeCapacity: Int) throws -> PartitionEngine {
        let engine = PartitionEngine(catalog: builtinCatalog, calendar: shanghai, dedupeCapacity: dedupeCapacity)
        try bytes.withUnsafeBytes { raw in
            var reader = StateReader(raw)
            try engine.decodeState(from: &reader)
        }
        return engine
    }

    @Test(arguments: [(91 as UInt64, 500_000), (92, 700)])
    func restoreMidLog_thenContinue_givesTheSameOutputsAsNeverStopping(seed: UInt64, dedupeCapacity: Int) throws {
        var generator = LogGenerator(seed: seed)
        let events = generator.generate(8000)
        let half = events.count / 2

        let straight = Ledger(dedupeCapacity: dedupeCapacity)
        for event in events { straight.feed(event.line) }

        let first = Ledger(dedupeCapacity: dedupeCapacity)
        for event in events[..<half] { first.feed(event.line) }
        // A copy taken between batches, encoded while the original goes on.
        let snapshot = first.engine.copy()
        for event in events[half...] { first.feed(event.line) }
        let bytes = encode(snapshot)

        let engine = try restored(bytes, dedupeCapacity: dedupeCapacity)
        let second = Ledger(dedupeCapacity: dedupeCapacity, engine: engine)
        second.skip(half)
        for event in events[half...] { second.feed(event.line) }

        #expect(first.overageLines == straight.overageLines)
        #expect(second.overageLines == Array(straight.overageLines.drop { line in
            (try? JSONValue.parse(line))?["source"]?["offset"]?.intValue ?? 0 < Int64(half)
        }))
        #expect(second.deadLetterLines.count == straight.deadLetterLines.filter { line in
            (try? JSONValue.parse(line))?["source"]?["offset"]?.intValue ?? 0 >= Int64(half)
        }.count)
        let a = straight.engine
        let b = second.engine
        #expect(a.accountsWithState().map { a.balances(of: $0) } == b.accountsWithState().map { b.balances(of: $0) })
        #expect(a.watermark == b.watermark && a.rememberedIDs == b.rememberedIDs)
        // Saving the restored engine gives the same bytes as saving the original.
        let (ea, eb) = (encode(a), encode(b))
        let firstDifference = zip(ea, eb).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(ea.count == eb.count && firstDifference == nil, "sizes \(ea.count) \(eb.count), first difference at \(firstDifference ?? -1)")
        if dedupeCapacity < 1000 { #expect(a.dedupeEvictions.all > 0) }
    }

    @Test func truncatedOrAlteredState_isRefused_neverTakenAsEmpty() throws {
        var generator = LogGenerator(seed: 5)
        let ledger = Ledger()
        for event in generator.generate(2000) { ledger.feed(event.line) }
        let bytes = encode(ledger.engine)
        #expect(throws: StateDecodingError.self) { try restored(Array(bytes.dropLast(9)), dedupeCapacity: PartitionEngine.dedupeCapacityDefault) }
        #expect(throws: StateDecodingError.self) { try restored(Array(bytes.prefix(40)), dedupeCapacity: PartitionEngine.dedupeCapacityDefault) }
        #expect(throws: StateDecodingError.self) { try restored(bytes, dedupeCapacity: 1234) }
        var wrongMagic = bytes
        wrongMagic[0] ^= 0xFF
        #expect(throws: StateDecodingError.self) { try restored(wrongMagic, dedupeCapacity: PartitionEngine.dedupeCapacityDefault) }
    }
}
