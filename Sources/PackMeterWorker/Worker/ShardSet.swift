import Dispatch
import Logging
import PackMeterCore
import PackMeterKafka

/// The shards of the input partitions this worker owns, and the billing of one polled
/// batch across them.
///
/// A batch holds several partitions' fetched message sets. The worker thread only splits it
/// into each partition's runs; the partitions are then billed and produced on every core,
/// one thread per shard, since shards share nothing while they bill.
final class ShardSet {
    let inputTopic: String
    let logger: Logger
    private var shards: [Int32: Shard] = [:]
    /// What the shards given up or taken away counted, so that the process's totals never
    /// go backwards.
    private var retired = ProcessTotals()
    /// Per partition, the offset up to which this process has billed and counted records:
    /// a partition given back is not counted twice for the records it bills again.
    private var countedThrough: [Int32: Int64] = [:]
    private var lastGeneration: UInt64 = 0
    private let owner = ThreadOwner("ShardSet")

    init(inputTopic: String, logger: Logger) {
        self.inputTopic = inputTopic
        self.logger = logger
    }

    subscript(partition: Int32) -> Shard? {
        owner.check()
        return shards[partition]
    }

    var all: Dictionary<Int32, Shard>.Values { shards.values }
    var partitions: [Int32] { shards.keys.sorted() }
    var isEmpty: Bool { shards.isEmpty }

    /// A generation no shard of this worker has had.
    func nextGeneration() -> ShardGeneration {
        lastGeneration += 1
        return ShardGeneration(rawValue: lastGeneration)
    }

    /// Adds an opened shard. `billedBefore`: the offset below which some worker (maybe
    /// another) is known to have billed the partition already, from the outputs it wrote.
    func insert(_ shard: Shard, billedBefore: Int64 = -1) {
        owner.check()
        shard.recountBelow = max(countedThrough[shard.partition] ?? -1, billedBefore)
        shard.evictionsAtOpen = shard.processor.engine.dedupeEvictions
        shards[shard.partition] = shard
    }

    /// Gives a partition up after its work was checkpointed, keeping its counts.
    func retire(_ partition: Int32) {
        owner.check()
        guard let shard = shards.removeValue(forKey: partition) else { return }
        keepCounts(of: shard)
    }

    /// Forgets a partition taken away without a rebalance: its work since the last
    /// checkpoint belongs to whoever bills it next. What it counted stays counted.
    func drop(_ partition: Int32) {
        owner.check()
        guard let shard = shards.removeValue(forKey: partition) else { return }
        keepCounts(of: shard)
    }

    private func keepCounts(of shard: Shard) {
        retired.add(shard)
        countedThrough[shard.partition] = max(countedThrough[shard.partition] ?? -1, shard.nextOffset)
    }

    /// Whether `pending` is a checkpoint of the opening of its partition this worker holds.
    func holds(_ pending: PendingCheckpoint) -> Bool {
        shards[pending.partition]?.generation == pending.generation
    }

    /// What billing one batch left for the status.
    struct BatchResult {
        var outputsSuppressed: UInt64 = 0
        var recordsLostToRetention: UInt64 = 0
        /// Whether some shard's outputs did not all fit in the producer's queue.
        var producerQueueWasFull = false
    }

    /// Bills the first `count` messages of `batch` and produces their outputs to `sink`.
    func bill(_ batch: MessageBatch, count: Int, sink: OutputSink) throws -> BatchResult {
        owner.check()
        let touched = try splitIntoRuns(batch, count: count)
        if touched.count > 1 {
            // Largest first, so that no thread is left with a big one at the end.
            let work = BillingWork(touched.sorted { $0.runsLength > $1.runsLength }, batch: batch, sink: sink)
            DispatchQueue.concurrentPerform(iterations: work.shards.count) { work.shards[$0].take(work.batch, producingTo: work.sink) }
        } else {
            touched.first?.take(batch, producingTo: sink)
        }
        var result = BatchResult()
        for shard in touched {
            if let failure = shard.failure {
                shard.failure = nil
                throw failure
            }
            // What a full producer queue left over: here the queue's deliveries can be served.
            if shard.hasOutputsLeft {
                result.producerQueueWasFull = true
                try shard.produceRest(to: sink)
            }
            result.outputsSuppressed += shard.suppressed
            result.recordsLostToRetention += shard.lostToRetention
            shard.suppressed = 0
            shard.lostToRetention = 0
            if let stop = shard.stopOffset, shard.nextOffset >= stop { shard.done = true }
        }
        return result
    }

    /// Hands each shard its runs of `batch` (a run: consecutive messages of one partition);
    /// returns the shards that got any.
    private func splitIntoRuns(_ batch: MessageBatch, count: Int) throws -> [Shard] {
        var touched: [Shard] = []
        var run: (shard: Shard, start: Int)?
        for i in 0..<count {
            let partition = batch.partition(at: i)
            let failed = batch.isError(at: i)
            if let open = run, open.shard.partition == partition, !failed { continue }
            if let open = run { open.shard.runs.append(open.start..<i) }
            run = nil
            if failed {
                try judgeConsumeError(batch[i].error!)
                continue
            }
            guard let shard = shards[partition], !shard.done else { continue }
            if shard.runs.isEmpty { touched.append(shard) }
            run = (shard, i)
        }
        if let open = run { open.shard.runs.append(open.start..<count) }
        return touched
    }

    /// A partition's end is no error; a vanished input topic is fatal; anything else is
    /// logged and librdkafka retries it.
    private func judgeConsumeError(_ error: KafkaError) throws {
        if error.code == KafkaError.partitionEOF { return }
        if error.code == KafkaError.unknownTopicOrPartition || error.code == KafkaError.unknownTopic {
            throw WorkerError("input topic '\(inputTopic)' went away: \(error)")
        }
        logger.error("consume error: \(error)")
    }

    /// This process's totals: what every shard it held counted, each record once, so they
    /// never go backwards whatever partitions come and go.
    var totals: ProcessTotals {
        var totals = retired
        for shard in shards.values { totals.add(shard) }
        return totals
    }

    /// `totals.counters.recordsRead`, without building the totals.
    var recordsRead: UInt64 {
        shards.values.reduce(retired.counters.recordsRead) { $0 + $1.processor.counters.recordsRead - $1.rebilled.recordsRead }
    }

    /// An account's balances, from whichever shard knows it.
    func balances(ofAccountNamed account: String, month: BillingMonth?) -> AccountBalances? {
        owner.check()
        for shard in shards.values {
            if let balances = shard.processor.engine.balances(ofAccountNamed: account, month: month) { return balances }
        }
        return nil
    }

    /// The accounts with the most billable calls across these shards.
    func busiestAccounts(limit: Int) -> [AccountReport] {
        owner.check()
        var reports: [AccountReport] = []
        for shard in shards.values.sorted(by: { $0.partition < $1.partition }) {
            let engine = shard.processor.engine
            for (account, calls) in engine.busiestAccounts(limit: limit) {
                reports.append(AccountReport(account: engine.name(of: account), partition: shard.partition,
                                             billableCalls: calls, balances: engine.balances(of: account)))
            }
        }
        return Array(reports.sorted { $0.billableCalls > $1.billableCalls }.prefix(limit))
    }
}

/// Counts of this process, monotonic for its life.
struct ProcessTotals {
    var counters = ProcessingCounters()
    /// Records billed again after a partition came back (their counts are not in `counters`).
    var recordsRebilled: UInt64 = 0
    var dedupeEvictions: (all: UInt64, openMonth: UInt64) = (0, 0)

    mutating func add(_ shard: Shard) {
        counters.add(shard.countedCounters)
        recordsRebilled += shard.rebilled.recordsRead
        let evictions = shard.evictionsSinceOpen
        dedupeEvictions.all += evictions.all
        dedupeEvictions.openMonth += evictions.openMonth
    }
}
