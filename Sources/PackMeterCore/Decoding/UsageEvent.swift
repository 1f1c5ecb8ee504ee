/// The five kinds of input event (docs/contract.md, input).
public enum EventType: UInt8, Sendable, CaseIterable {
    case call, purchase, refund, suspend, resume

    public var name: String {
        switch self {
        case .call: "call"
        case .purchase: "purchase"
        case .refund: "refund"
        case .suspend: "suspend"
        case .resume: "resume"
        }
    }
}

/// Why an account was suspended (docs/rules.md §7: 欠费停服 / 违禁原因停服).
public enum SuspendReason: UInt8, Sendable {
    case arrears, violation
}

/// Why a record became a dead letter (docs/contract.md: rejected records). The set is closed:
/// adding a reason is a contract change.
public enum RejectReason: String, Sendable, CaseIterable {
    case oversized
    case malformedJSON = "malformed_json"
    case missingField = "missing_field"
    case invalidField = "invalid_field"
    case unknownType = "unknown_type"
    case unknownAction = "unknown_action"
    case unknownPack = "unknown_pack"
    case futureTimestamp = "future_timestamp"
    case tooLate = "too_late"
    case refundRejected = "refund_rejected"

    /// A dense index, for counters kept in fixed arrays.
    public var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// A record that cannot be applied: the dead-letter reason and a detail an operator can act on.
public struct Rejection: Error, Sendable, CustomStringConvertible {
    public let reason: RejectReason
    public let detail: String

    public init(_ reason: RejectReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// A decoded usage event. Its byte fields point into the record being decoded or into the
/// decoder's scratch space: valid only until the next `decode`.
public struct DecodedEvent {
    public var type: EventType = .call
    public var id = UnsafeRawBufferPointer(start: nil, count: 0)
    public var account = UnsafeRawBufferPointer(start: nil, count: 0)
    /// Epoch milliseconds.
    public var ts: Int64 = 0
    // call
    public var action = ActionIndex(0)
    public var pack = PackIndex(0)
    public var count: UInt32 = 1
    /// Succeeded, or failed with a billable error code (docs/rules.md §3).
    public var billable = true
    // purchase
    public var quantity: UInt32 = 0
    public var effective: Int64 = 0
    public var expires: Int64 = 0
    // refund
    public var purchase = UnsafeRawBufferPointer(start: nil, count: 0)
    // suspend
    public var reason = SuspendReason.arrears

    public init() {}
}
