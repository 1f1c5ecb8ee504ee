import PackMeterCore
import PackMeterKafka

extension KafkaProducer {
    /// Produces the next `count` events of `generator` to `topic` (key: the account the
    /// event is about), serving delivery reports as it goes. Does not flush. Used by
    /// `generate`, `demo`, the tests and the benchmarks to load a topic.
    public func produce(_ count: Int, from generator: inout WorkloadGenerator, to topic: ProducerTopic) throws(KafkaError) {
        let scratch = ByteWriter(capacity: 4096)
        for n in 0..<count {
            scratch.removeAll()
            let (key, value) = generator.next(into: scratch)
            try produce(topic, key: scratch.slice(key), value: scratch.slice(value))
            if n % 1024 == 1023 { poll() }
        }
    }
}
