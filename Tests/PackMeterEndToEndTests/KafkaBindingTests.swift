import Dispatch
import Foundation
import PackMeterKafka
import Testing

/// The pieces of the Kafka binding that billing threads use while the worker thread
/// polls: producing without serving delivery reports, and returning a batch's messages
/// range by range.
@Suite("Kafka binding: producing from billing threads, returning messages by range")
struct KafkaBindingTests {
    @Test func offer_refusesWhenTheQueueIsFull_andProduceWaitsForRoom() throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        try cluster.createTopic("t", partitions: 1)
        // Four messages fit; with a long linger none of them leaves before the fifth.
        let producer = try KafkaProducer(bootstrapServers: cluster.bootstrapServers,
                                         configuration: KafkaConfiguration([("queue.buffering.max.messages", "4"), ("linger.ms", "300")]),
                                         logger: testLogger)
        let topic = try producer.topic("t")
        let value: [UInt8] = Array("v".utf8)
        var offered = 0
        try value.withUnsafeBytes { bytes in
            while try producer.offer(topic, key: nil, value: bytes, tag: UInt64(offered + 1)) { offered += 1 }
            #expect(offered == 4)
            // produce serves delivery reports until the queue has room again.
            try producer.produce(topic, key: nil, value: bytes, tag: 5)
        }
        try producer.flush(timeoutMs: 10_000)
        #expect(producer.delivered == 5)
    }

    @Test func deliveryReports_reachTheHandlerOnceEach_withTheirTagsAndOffsets_beyondOneHandOversWorth() throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        try cluster.createTopic("t", partitions: 2)
        let producer = try KafkaProducer(bootstrapServers: cluster.bootstrapServers, logger: testLogger)
        let topic = try producer.topic("t")
        var reports: [DeliveryReport] = []
        var largestHandOver = 0
        producer.onDeliveries = {
            reports.append(contentsOf: $0)
            largestHandOver = max(largestHandOver, $0.count)
        }
        // Nothing polled until the flush, which serves all 10,000 reports: more than the
        // producer stores between hand-overs (4,096), so some reach the handler from inside
        // the flush and the rest when it returns.
        let count = 10_000
        for tag in 1...count {
            try Array("m".utf8).withUnsafeBytes { try producer.produce(topic, key: nil, value: $0, partition: Int32(tag % 2), tag: UInt64(tag)) }
        }
        try producer.flush(timeoutMs: 30_000)
        #expect(largestHandOver <= 4096)
        #expect(producer.delivered == UInt64(count))
        #expect(reports.map(\.tag).sorted() == (1...count).map(UInt64.init))
        #expect(reports.allSatisfy { $0.errorCode == 0 && Int64($0.tag % 2) == Int64($0.partition) })
        for p in Int32(0)...1 {
            #expect(reports.filter { $0.partition == p }.map(\.offset) == (0..<Int64(count / 2)).map { $0 }, "partition \(p): each offset once, in order")
        }
    }

    @Test func aBatch_returnedRangeByRangeFromSeveralThreads_thenWhole_returnsEachMessageOnce() throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        try cluster.createTopic("t", partitions: 1)
        let producer = try KafkaProducer(bootstrapServers: cluster.bootstrapServers, logger: testLogger)
        let topic = try producer.topic("t")
        for i in 0..<1000 {
            try Array("message \(i)".utf8).withUnsafeBytes { try producer.produce(topic, key: nil, value: $0) }
        }
        try producer.flush(timeoutMs: 10_000)

        let consumer = try KafkaConsumer(bootstrapServers: cluster.bootstrapServers, groupID: nil, logger: testLogger)
        try consumer.assign([(TopicPartition("t", 0), KafkaOffset.beginning)])
        let batch = MessageBatch(capacity: 1000)
        var offsets: [Int64] = []
        let deadline = Date().addingTimeInterval(30)
        while offsets.count < 1000 && Date() < deadline {
            let n = try consumer.poll(into: batch, timeoutMs: 200)
            for i in 0..<n {
                #expect(batch.partition(at: i) == 0 && !batch.isError(at: i))
                offsets.append(batch[i].offset)
            }
            // Two threads each return their own ranges; the rest is returned at the end.
            let ranges = [0..<n / 3, n / 3..<n / 2]
            DispatchQueue.concurrentPerform(iterations: ranges.count) { batch.release(ranges[$0]) }
            batch.release()
        }
        #expect(offsets == Array(0..<1000))
        consumer.close()
    }
}
