import Foundation
import Testing
@testable import PackMeterCore
import PackMeterFiles
import PackMeterKafka

/// docs/contract.md, `replay --from TIME --to TIME`: on a broker with a time index
/// (noida-db; librdkafka's mock has none, and replay refuses times there), the range is
/// the records whose Kafka timestamps fall in it.
@Suite("Replay by time, on a broker that maps times to offsets", .serialized)
struct ReplayByTimeTests {
    @Test func replayFromAndToATime_billsTheRecordsOfThatSpan() throws {
        let dir = temporaryDirectory("replay-time")
        let broker = try TestBrokerKind.noida.start(topics: e2eTopics + ["early.overage:8", "early.dlq:8", "early.notices:8",
                                                                          "late.overage:8", "late.dlq:8", "late.notices:8"],
                                                     directory: dir)
        defer { broker.stop() }
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 10_000, seed: 91)
        let firstSpan = try readTopic(brokers: broker.bootstrap, topic: "ocr.usage")
        Thread.sleep(forTimeInterval: 1.5)
        let boundary = Date()
        Thread.sleep(forTimeInterval: 1.5)
        try produceWorkload(brokers: broker.bootstrap, topic: "ocr.usage", events: 6_000, seed: 92)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let time = formatter.string(from: boundary)

        func replay(_ name: String, _ range: [String]) throws -> (records: UInt64, sources: [Int32: [Int64]]) {
            let arguments = ["replay", "--brokers", broker.bootstrap, "--checkpoint-dir", "\(dir)/\(name)",
                             "--output", "\(name).overage", "--dlq", "\(name).dlq", "--notices", "\(name).notices"] + range
            let child = try ChildProcess(name, arguments: arguments, logDirectory: dir)
            try child.start()
            #expect(child.wait(timeout: 120) == 0, "\(child.log.suffix(2000))")
            var records: UInt64 = 0
            let store = CheckpointDirectory(directory: "\(dir)/\(name)", logger: testLogger)
            for p in store.partitions(topic: "ocr.usage") {
                let found = try store.newestHeader(topic: "ocr.usage", partition: p) { _ in }
                records += found?.header.counters.recordsRead ?? 0
            }
            var sources: [Int32: [Int64]] = [:]
            for topic in ["\(name).overage", "\(name).dlq", "\(name).notices"] {
                for (_, messages) in try readTopic(brokers: broker.bootstrap, topic: topic) {
                    for message in messages {
                        let source = try #require(message.value.withUnsafeBytes { OutputSource.parse($0) })
                        sources[source.partition, default: []].append(source.offset)
                    }
                }
            }
            return (records, sources)
        }

        // Up to the boundary: the first span only; from it: the second only.
        let early = try replay("early", ["--to", time])
        #expect(early.records == 10_000)
        let late = try replay("late", ["--from", time])
        #expect(late.records == 6_000)
        for (p, offsets) in early.sources {
            let end = Int64(firstSpan[p]?.count ?? 0)
            #expect(offsets.allSatisfy { $0 < end }, "partition \(p): an output of the second span in the first replay")
        }
        for (p, offsets) in late.sources {
            let start = Int64(firstSpan[p]?.count ?? 0)
            #expect(offsets.allSatisfy { $0 >= start }, "partition \(p): an output of the first span in the second replay")
        }
        #expect(!early.sources.isEmpty && !late.sources.isEmpty)
    }
}
