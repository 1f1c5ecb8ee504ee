/// Everything that decides how a log is billed, shared by every partition: a checkpoint is
/// only valid under the same configuration (catalog fingerprint, time zone, lateness).
public struct EngineConfiguration: Sendable {
    public var catalog: Catalog
    public var calendar: BillingCalendar
    public var allowedLatenessMs: Int64
    public var dedupeCapacity: Int
    public var maxFutureSkewMs: Int64
    /// When notices are due (docs/contract.md, notices); nil: no notices.
    public var notices: NoticeThresholds?

    public static let allowedLatenessDefaultMs: Int64 = 72 * 3_600_000
    public static let maxFutureSkewDefaultMs: Int64 = 10 * 60_000

    public init(catalog: Catalog, calendar: BillingCalendar,
                allowedLatenessMs: Int64 = EngineConfiguration.allowedLatenessDefaultMs,
                dedupeCapacity: Int = PartitionEngine.dedupeCapacityDefault,
                maxFutureSkewMs: Int64 = EngineConfiguration.maxFutureSkewDefaultMs,
                notices: NoticeThresholds? = nil) {
        self.catalog = catalog
        self.calendar = calendar
        self.allowedLatenessMs = allowedLatenessMs
        self.dedupeCapacity = dedupeCapacity
        self.maxFutureSkewMs = maxFutureSkewMs
        self.notices = notices
    }

    /// An empty engine billing under this configuration; `expectedAccounts` sizes its
    /// tables up front (they grow as needed either way).
    public func makeEngine(expectedAccounts: Int = 1024) -> PartitionEngine {
        PartitionEngine(catalog: catalog, calendar: calendar, allowedLatenessMs: allowedLatenessMs,
                        dedupeCapacity: dedupeCapacity, expectedAccounts: expectedAccounts, notices: notices)
    }

    /// The processor of one input partition: over `engine` (a restored one), or a new one.
    public func makeProcessor(topic: String, partition: Int32, engine: PartitionEngine? = nil) -> PartitionProcessor {
        PartitionProcessor(engine: engine ?? makeEngine(), topic: topic, partition: partition, maxFutureSkewMs: maxFutureSkewMs)
    }
}
