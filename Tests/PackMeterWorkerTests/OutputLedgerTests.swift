import Dispatch
import PackMeterCore
import Synchronization
@testable import PackMeterKafka
import Testing
@testable import PackMeterWorker

/// The bookkeeping that lets a checkpoint wait for its outputs without a flush, and the
/// read-back start a restart derives from the end offsets checkpoints recorded.
@Suite("Output ledger and read-back starts")
struct OutputLedgerTests {
    let topics = OutputTopics(overage: "ocr.overage", deadLetters: "ocr.usage.dlq")

    func pending(_ partition: Int32) -> PendingCheckpoint {
        let catalog = try! Catalog.builtin()
        let calendar = try! BillingCalendar(timeZoneIdentifier: "Asia/Shanghai")
        let engine = EngineConfiguration(catalog: catalog, calendar: calendar).makeEngine()
        return PendingCheckpoint(partition: partition, nextOffset: 10, copy: EngineCopy(engine: engine),
                                 counters: ProcessingCounters(), alreadyWritten: [], createdMs: 0,
                                 generation: ShardGeneration(rawValue: 1))
    }

    /// Numbers one output as a shard does: a sequence number, tagged with its topic.
    func nextTag(_ ledger: OutputLedger, _ topic: OutputTopic) -> UInt64 {
        OutputTag(sequence: ledger.reserve(1), topic: topic).rawValue
    }

    func ack(_ ledger: OutputLedger, _ tag: UInt64, partition: Int32, offset: Int64, error: Int32 = 0) {
        let report = DeliveryReport(tag: tag, partition: partition, offset: offset, errorCode: error)
        withUnsafePointer(to: report) { ledger.delivered(UnsafeBufferPointer(start: $0, count: 1)) }
    }

    @Test func aBarrierCompletes_onlyWhenEveryEarlierOutputIsAcknowledged_inAnyOrder() {
        let ledger = OutputLedger(topics: topics)
        let a = nextTag(ledger, .overage)
        let b = nextTag(ledger, .deadLetters)
        let c = nextTag(ledger, .overage)
        ledger.raiseBarrier(for: [pending(3)])
        let later = nextTag(ledger, .overage)
        ack(ledger, later, partition: 0, offset: 40)
        ack(ledger, c, partition: 2, offset: 7)
        ack(ledger, a, partition: 0, offset: 12)
        #expect(ledger.takeCompleted().isEmpty, "one output before the barrier is still unacknowledged")
        ack(ledger, b, partition: 1, offset: 3)
        let done = ledger.takeCompleted()
        #expect(done.count == 1)
        #expect(done.first?.checkpoints.map(\.partition) == [3])
        #expect(ledger.takeCompleted().isEmpty, "a completed barrier is handed out once")
    }

    @Test func aBarriersEndOffsets_coverItsOutputs_andNotTheOnesProducedAfterIt() {
        let ledger = OutputLedger(topics: topics)
        ledger.raise(to: ["ocr.overage": [0: 5, 1: 9, 2: 0], "ocr.usage.dlq": [0: 2, 1: 0]])
        let before = nextTag(ledger, .overage)
        ledger.raiseBarrier(for: [pending(0)])
        let after = nextTag(ledger, .overage)
        let dlqAfter = nextTag(ledger, .deadLetters)
        ack(ledger, after, partition: 0, offset: 30)
        ack(ledger, dlqAfter, partition: 1, offset: 4)
        ack(ledger, before, partition: 0, offset: 20)
        let done = ledger.takeCompleted()
        #expect(done.count == 1)
        // Partition 0: its own output at 20 (the later one at 30 lands past the end); the
        // others keep the ends read back at start, partitions with nothing yet included.
        #expect(done.first?.endOffsets == ["ocr.overage": [0: 21, 1: 9, 2: 0], "ocr.usage.dlq": [0: 2, 1: 0]])
    }

    @Test func aBarrierWithNothingInFlight_isCompleteAtOnce_withTheEndsSoFar() {
        let ledger = OutputLedger(topics: topics)
        ledger.raise(to: ["ocr.overage": [0: 0], "ocr.usage.dlq": [0: 0]])
        let tag = nextTag(ledger, .deadLetters)
        ack(ledger, tag, partition: 0, offset: 6)
        ledger.raiseBarrier(for: [pending(1), pending(2)])
        let done = ledger.takeCompleted()
        #expect(done.first?.checkpoints.count == 2)
        #expect(done.first?.endOffsets == ["ocr.overage": [0: 0], "ocr.usage.dlq": [0: 7]])
    }

    @Test func sequenceNumbers_reservedFromManyThreads_areEachHandedOutOnce_andABarrierWaitsForAll() {
        let ledger = OutputLedger(topics: topics)
        let threads = 8
        let firsts = Mutex<[UInt64]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var mine: [UInt64] = []
            for _ in 0..<100 { mine.append(ledger.reserve(10)) }
            firsts.withLock { $0 += mine }
        }
        // 800 ranges of 10: they tile 1...8000 exactly.
        let sorted = firsts.withLock { $0 }.sorted()
        #expect(sorted == Array(stride(from: UInt64(1), through: 7991, by: 10)))
        #expect(ledger.produced == 8000)
        ledger.raiseBarrier(for: [pending(0)])
        for sequence in UInt64(1)...7999 { ack(ledger, OutputTag(sequence: sequence, topic: sequence % 2 == 0 ? .overage : .deadLetters).rawValue, partition: 0, offset: Int64(sequence)) }
        #expect(ledger.takeCompleted().isEmpty, "output 8000 is not acknowledged")
        ack(ledger, OutputTag(sequence: 8000, topic: .overage).rawValue, partition: 3, offset: 41)
        let done = ledger.takeCompleted()
        // Even sequences went to overage (the last at offset 7998), odd ones to dead letters.
        #expect(done.first?.endOffsets == ["ocr.overage": [0: 7999, 3: 42], "ocr.usage.dlq": [0: 8000]])
    }

    @Test func reportsHandedOverTogether_countAsOneByOne_andAFailedOneIsNotCounted() {
        let ledger = OutputLedger(topics: topics)
        let tags = (0..<5).map { nextTag(ledger, $0 == 3 ? .deadLetters : .overage) }
        ledger.raiseBarrier(for: [pending(1)])
        let later = nextTag(ledger, .overage)
        var reports = [DeliveryReport(tag: later, partition: 0, offset: 50, errorCode: 0)]
        reports += tags.enumerated().map { n, tag in
            DeliveryReport(tag: tag, partition: Int32(n % 2), offset: Int64(10 + n), errorCode: n == 4 ? -192 : 0)
        }
        reports.withUnsafeBufferPointer { ledger.delivered($0) }
        #expect(ledger.acknowledged == 5, "the failed delivery is not acknowledged")
        #expect(ledger.takeCompleted().isEmpty, "the failed output keeps the barrier open")
        ack(ledger, tags[4], partition: 0, offset: 14)
        let done = ledger.takeCompleted()
        #expect(done.count == 1)
        // Overage partition 0: outputs at 10, 12, 14 (50 came after the barrier); 1: at 11.
        // Dead letters partition 1: the output at 13.
        #expect(done.first?.endOffsets == ["ocr.overage": [0: 15, 1: 12], "ocr.usage.dlq": [1: 14]])
    }

    @Test func aFailedDelivery_neverCompletesTheBarrier() {
        let ledger = OutputLedger(topics: topics)
        let tag = nextTag(ledger, .overage)
        ledger.raiseBarrier(for: [pending(0)])
        ack(ledger, tag, partition: 0, offset: -1, error: -192)
        #expect(ledger.takeCompleted().isEmpty)
        #expect(ledger.hasPendingBarriers)
    }

    @Test func readBackStarts_takeTheSmallestEnd_andAPartitionAnyCheckpointMissesFromItsStart() {
        let a: [String: [Int32: Int64]] = ["ocr.overage": [0: 100, 1: 50], "ocr.usage.dlq": [0: 8]]
        let b: [String: [Int32: Int64]] = ["ocr.overage": [0: 70], "ocr.usage.dlq": [0: 9, 1: 4]]
        let starts = OutputReadBack.scanStarts([a, b], outputTopics: topics)
        // overage 1 is not in b: from its start; dlq 1 is not in a: from its start.
        #expect(starts == ["ocr.overage": [0: 70], "ocr.usage.dlq": [0: 8]])
    }

    @Test func readBackStarts_aPartitionWithoutCheckpoint_readsEverythingFromTheStart() {
        let a: [String: [Int32: Int64]] = ["ocr.overage": [0: 100], "ocr.usage.dlq": [0: 8]]
        #expect(OutputReadBack.scanStarts([a, nil], outputTopics: topics).isEmpty)
        #expect(OutputReadBack.scanStarts([a, [:]], outputTopics: topics).isEmpty)
        #expect(OutputReadBack.scanStarts([a], outputTopics: topics) == a)
    }

    @Test func anOutputTag_keepsItsSequenceAndTopic() {
        for sequence: UInt64 in [1, 2, 1 << 40, (1 << 62) - 1] {
            for topic in OutputTopic.allCases {
                let tag = OutputTag(rawValue: OutputTag(sequence: sequence, topic: topic).rawValue)
                #expect(tag.sequence == sequence && tag.topic == topic, "\(sequence) \(topic)")
            }
        }
        #expect(topics.names == ["ocr.overage", "ocr.usage.dlq"], "without a notices topic, notices are off")
        #expect(topics[.deadLetters] == "ocr.usage.dlq")
        let all = OutputTopics(overage: "o", deadLetters: "d", notices: "n")
        #expect(all.names == ["o", "d", "n"] && all[.notices] == "n")
    }
}
