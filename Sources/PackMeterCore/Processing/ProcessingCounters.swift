/// What happened to every record read: each ends in exactly one of `applied`,
/// `duplicates`, `nonBillable` or one `rejected` reason (docs/contract.md: never lost silently).
public struct ProcessingCounters: Sendable, Equatable {
    public var recordsRead: UInt64 = 0
    /// Billable calls settled and account events that took effect.
    public var applied: UInt64 = 0
    public var duplicates: UInt64 = 0
    /// Failed calls with a non-billable code.
    public var nonBillable: UInt64 = 0
    /// Dead letters, indexed by `RejectReason.index`.
    public var rejected = [UInt64](repeating: 0, count: RejectReason.allCases.count)
    /// Billable calls (sum of `count`) settled, by source (docs/rules.md §4).
    public var callsFree: UInt64 = 0
    public var callsPrepaid: UInt64 = 0
    public var callsOverage: UInt64 = 0
    public var overageRecords: UInt64 = 0
    /// Notices written, by kind (`Notice.Kind` order).
    public var notices = [UInt64](repeating: 0, count: Notice.Kind.allCases.count)

    public init() {}

    public var rejectedTotal: UInt64 { rejected.reduce(0, +) }
    public var billableCalls: UInt64 { callsFree + callsPrepaid + callsOverage }

    public subscript(reason: RejectReason) -> UInt64 {
        get { rejected[reason.index] }
        set { rejected[reason.index] = newValue }
    }

    /// Every record is accounted for exactly once.
    public var isBalanced: Bool { recordsRead == applied + duplicates + nonBillable + rejectedTotal }

    public mutating func add(_ other: ProcessingCounters) {
        recordsRead += other.recordsRead
        applied += other.applied
        duplicates += other.duplicates
        nonBillable += other.nonBillable
        for i in rejected.indices { rejected[i] += other.rejected[i] }
        callsFree += other.callsFree
        callsPrepaid += other.callsPrepaid
        callsOverage += other.callsOverage
        overageRecords += other.overageRecords
        for i in notices.indices { notices[i] += other.notices[i] }
    }

    /// Takes away counts that are part of these (`other` counted a subset of the same records).
    public mutating func subtract(_ other: ProcessingCounters) {
        recordsRead -= other.recordsRead
        applied -= other.applied
        duplicates -= other.duplicates
        nonBillable -= other.nonBillable
        for i in rejected.indices { rejected[i] -= other.rejected[i] }
        callsFree -= other.callsFree
        callsPrepaid -= other.callsPrepaid
        callsOverage -= other.callsOverage
        overageRecords -= other.overageRecords
        for i in notices.indices { notices[i] -= other.notices[i] }
    }

    public subscript(notice kind: Notice.Kind) -> UInt64 {
        get { notices[Int(kind.rawValue)] }
        set { notices[Int(kind.rawValue)] = newValue }
    }

    public var noticesTotal: UInt64 { notices.reduce(0, +) }
}
