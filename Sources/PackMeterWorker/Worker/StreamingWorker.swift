import CPackMeterSupport
import Dispatch
import Foundation
import Logging
import PackMeterCore
import PackMeterKafka
import PackMeterFiles
import Synchronization

/// The streaming worker (`packmeter run` and `packmeter replay`): consumes the input topic,
/// bills each input partition with its own engine, produces overage records and dead
/// letters, and checkpoints, exactly once across crashes (`ExactlyOnce.swift`).
///
/// Where things happen, following one record:
/// - `RunningWorker` runs the loop: poll a batch, bill it, then whatever else is due;
/// - `ShardSet.bill` splits the batch by partition and bills the partitions on every core;
/// - `Shard` gathers one partition's records, bills them with its `PartitionProcessor` and
///   produces the outputs, each tagged for the `OutputLedger`;
/// - `Checkpointer` copies engines between batches, writes them once their outputs are
///   acknowledged, and commits the offsets they cover;
/// - `PartitionOpener` restores partitions as they are assigned and reads back what was
///   already written; `LiveMode` and `ReplayMode` say where partitions come from;
/// - `StatusPublisher` hands readers a copy of the status.
///
/// **Threads.** `run()` blocks its thread (the worker thread), which owns all state.
/// librdkafka fetches and sends on its own threads; checkpoints are written on a background
/// queue. Readers never lock an engine: they read the published status, or queue a balance
/// query that the worker thread answers between batches.
// Sound as `@unchecked Sendable`: the stored properties readers touch are a lock, an atomic
// and immutable values; `finalReport` and `batchProbe` are written before or after `run()`.
public final class StreamingWorker: @unchecked Sendable {
    public let options: WorkerOptions
    public let logger: Logger

    private let stopRequested = Atomic<Bool>(false)
    private let published = Mutex(WorkerStatus())
    private let queries = Mutex<[BalanceQuery]>([])
    /// Ends the worker thread's wait for records (set while the worker runs).
    let wakeUp = Mutex<(@Sendable () -> Void)?>(nil)
    /// The group's directory of members (live, with `--http-advertise`), while running.
    let members = Mutex<MemberDirectory?>(nil)

    /// The busiest accounts when the worker stopped, for the demo's summary.
    public internal(set) var finalReport: [AccountReport] = []

    /// Called on the worker thread before and after each batch is billed. A probe for
    /// benchmarks, nil otherwise; set it before `run()`.
    public var batchProbe: ((BatchProbe) -> Void)?

    public init(options: WorkerOptions, logger: Logger) {
        // Notices need both thresholds and a topic: without one, neither.
        var options = options
        if options.noticesTopic == nil || options.engine.notices == nil {
            options.noticesTopic = nil
            options.engine.notices = nil
        }
        self.options = options
        self.logger = logger
    }

    /// The checkpoint store the options name: the topic, or else the directory.
    func makeStore() throws -> any CheckpointStore {
        guard let topic = options.checkpointTopic else {
            return CheckpointDirectory(directory: options.checkpointDirectory, keep: options.keepCheckpoints, logger: logger)
        }
        do {
            return try TopicCheckpointStore(topic: topic, brokers: options.brokers, keep: options.keepCheckpoints,
                                            kafkaProperties: options.kafkaProperties.filter { !WorkerOptions.isConsumerProperty($0.0) },
                                            logger: logger)
        } catch {
            throw WorkerError("cannot open the checkpoint topic '\(topic)': \(error.message)", kind: .configuration)
        }
    }

    /// Asks the worker to finish the batch in hand, checkpoint, commit and return from `run`.
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    public var isStopRequested: Bool { stopRequested.load(ordering: .relaxed) }

    public var currentStatus: WorkerStatus { published.withLock { $0 } }

    /// Runs until stopped (live) or until the replay range is done. Throws a fatal error;
    /// the Kafka handles are closed when it returns either way.
    public func run() throws {
        let status = StatusPublisher(options: options, logger: logger) { [self] snapshot in
            published.withLock { $0 = snapshot }
        }
        // Fetch, decompression and checkpoint buffers are freed and allocated again all
        // the time; glibc's default would hand them back to the kernel each time.
        pm_retain_freed_memory()
        do {
            let store = try makeStore()
            do {
                try store.claim(for: options.mode == .live ? .run : .replay)
            } catch {
                throw WorkerError(error.message, kind: .configuration)
            }
            let probe = ClusterProbe(options: options, logger: logger, stopRequested: { self.isStopRequested },
                                     heartbeat: { status.publish() })
            guard let partitionCount = try probe.waitForTopics() else {
                logger.info("stopped before the cluster was reached")
                status.status.phase = .stopped
                status.publish()
                return
            }
            if let topicStore = store as? TopicCheckpointStore { try topicStore.prepare(inputPartitions: partitionCount) }
            let directory = try openMemberDirectory()
            defer {
                members.withLock { $0 = nil }
                directory?.stop()
            }
            status.status.inputPartitions = partitionCount
            let running = try RunningWorker(worker: self, store: store, inputPartitionCount: partitionCount, status: status,
                                            members: directory)
            try running.run()
        } catch {
            status.status.phase = WorkerStatus.Phase.stopped
            status.publish()
            throw error
        }
    }

    /// Starts announcing this worker to the group and reading the others' announcements,
    /// where it advertises an HTTP endpoint.
    private func openMemberDirectory() throws -> MemberDirectory? {
        guard options.mode == .live, let url = options.httpAdvertise else { return nil }
        let topic = options.membersTopic ?? "\(options.group).members"
        let directory: MemberDirectory
        do {
            directory = try MemberDirectory(brokers: options.brokers, topic: topic, group: options.group, url: url,
                                            kafkaProperties: options.kafkaProperties, logger: logger)
        } catch {
            throw WorkerError("cannot open the members topic '\(topic)': \(error)")
        }
        directory.start()
        members.withLock { $0 = directory }
        logger.info("advertising \(url) to the group on '\(topic)'")
        return directory
    }

    // MARK: - Balance queries

    /// Asks for an account's balances. The worker thread answers between batches, calling
    /// `answer` on its thread with the balances, or nil when no partition it owns knows the
    /// account. A worker that is not running never answers: the caller keeps a deadline.
    public func balances(account: String, month: BillingMonth?,
                         answer: @escaping @Sendable (AccountBalances?) -> Void) {
        queries.withLock { $0.append(BalanceQuery(account: account, month: month, answer: answer)) }
        // The worker thread may be waiting in a poll with nothing to bill: answer now.
        wakeUp.withLock { $0?() }
    }

    /// Answers the queued balance queries; on the worker thread.
    func answerQueries(from shards: ShardSet) {
        let pending = queries.withLock { list -> [BalanceQuery] in
            defer { list.removeAll() }
            return list
        }
        for query in pending {
            query.answer(shards.balances(ofAccountNamed: query.account, month: query.month))
        }
    }

    /// One reader's question and where its answer goes.
    struct BalanceQuery: Sendable {
        let account: String
        let month: BillingMonth?
        let answer: @Sendable (AccountBalances?) -> Void
    }
}
