import Foundation
import Testing
@testable import PackMeterCore
import PackMeterFiles

@Suite("packmeter rate: files in, overage records, dead letters and balances out")
struct RateJobTests {
    func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func lines(_ url: URL) -> [String] {
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    @Test func batchedFileRun_matchesRecordByRecord_byteForByte() throws {
        var generator = LogGenerator(seed: 77)
        let events = generator.generate(20_000)
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("usage.jsonl")
        try (events.map(\.line).joined(separator: "\n") + "\n").write(to: input, atomically: true, encoding: .utf8)

        let configuration = EngineConfiguration(catalog: builtinCatalog, calendar: shanghai)
        let job = RateJob(input: input.path, overageOut: directory.appendingPathComponent("overage").path,
                          dlqOut: directory.appendingPathComponent("dlq").path,
                          balancesOut: directory.appendingPathComponent("balances").path,
                          configuration: configuration, progress: false)
        let result = try job.run()

        let ledger = Ledger(topic: input.path)
        for event in events { ledger.feed(event.line) }
        #expect(lines(directory.appendingPathComponent("overage")) == ledger.overageLines)
        #expect(lines(directory.appendingPathComponent("dlq")) == ledger.deadLetterLines)
        let engine = ledger.engine
        #expect(lines(directory.appendingPathComponent("balances")) ==
                engine.accountsWithState().map { engine.balances(of: $0).json(calendar: shanghai) })
        #expect(result.counters == ledger.counters)
        #expect(result.counters.recordsRead == 20_000)
    }

    @Test func lineHandling_emptyLines_crlf_noFinalNewline_andAnOverlongLine() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("odd.jsonl")
        let call = #"{"id":"a","account":"A","action":"GeneralBasicOCR","ts":1793671200000}"#
        let overlong = #"{"id":"big","pad":""# + String(repeating: "y", count: 200_000) + #""}"#
        let text = call + "\r\n" + "\n" + overlong + "\n" + call.replacingOccurrences(of: "\"a\"", with: "\"b\"")
        try text.write(to: input, atomically: true, encoding: .utf8)
        let dlq = directory.appendingPathComponent("dlq")
        let result = try RateJob(input: input.path, overageOut: nil, dlqOut: dlq.path, balancesOut: nil,
                                 configuration: EngineConfiguration(catalog: builtinCatalog, calendar: shanghai), progress: false).run()
        #expect(result.counters.recordsRead == 4)
        #expect(result.counters.applied == 2)
        let letters = lines(dlq).map { try! JSONValue.parse($0) }
        #expect(letters.map { $0["reason"]?.stringValue } == ["malformed_json", "oversized"])
        #expect(letters[0]["detail"]?.stringValue == "the record is empty, not a JSON object")
        #expect(letters[0]["source"]?["offset"]?.intValue == 1)
        #expect(letters[1]["detail"]?.stringValue == "record is \(overlong.utf8.count) bytes; the limit is 65536")
        #expect(letters[1]["source"]?["offset"]?.intValue == 2)
        #expect(letters[1]["payload"]?.stringValue?.utf8.count == 65_536)
    }
}
