/// Judges the records of one input partition in log order (CONTRACT.md, "How one record is
/// judged"): decode (checks 1–2), future timestamp (3), then the engine (4–6). Writes the
/// overage records and dead letters each record produces into an `OutputBatch` and counts
/// every outcome. Used as is by `packmeter rate` and by each shard of the streaming worker,
/// so both produce the same bytes for the same log.
public final class PartitionProcessor {
    public let engine: PartitionEngine
    public let decoder: EventDecoder
    public let topic: String
    public let partition: Int32
    /// Check 3: `ts` may be at most this far after the Kafka record's timestamp.
    public let maxFutureSkewMs: Int64
    public private(set) var counters = ProcessingCounters()

    private let sourcePrefix: [UInt8]
    private var event = DecodedEvent()

    public static let payloadBytesMax = 65_536

    public init(engine: PartitionEngine, topic: String, partition: Int32, maxFutureSkewMs: Int64 = 600_000) {
        self.engine = engine
        decoder = EventDecoder(catalog: engine.catalog, calendar: engine.calendar)
        self.topic = topic
        self.partition = partition
        self.maxFutureSkewMs = maxFutureSkewMs
        let prefix = ByteWriter(capacity: 128)
        prefix.append(raw: ",\"source\":{\"topic\":")
        prefix.append(jsonString: topic)
        prefix.append(raw: ",\"partition\":")
        prefix.append(decimal: Int(partition))
        prefix.append(raw: ",\"offset\":")
        sourcePrefix = prefix.array
    }

    /// Processes one record. `recordTimestampMs` is the Kafka record's timestamp, or nil
    /// where there is none (`rate`): then check 3 is skipped. `fullLength` is the record's
    /// true size when only its head is passed (an overlong input line).
    public func process(_ record: UnsafeRawBufferPointer, fullLength: Int? = nil, key: UnsafeRawBufferPointer?, offset: Int64,
                        recordTimestampMs: Int64?, into out: OutputBatch) {
        counters.recordsRead += 1
        do {
            try decoder.decode(record, fullLength: fullLength, into: &event)
        } catch {
            deadLetter(error, record: record, key: key, offset: offset, into: out)
            return
        }
        if let recordTimestampMs, event.ts > recordTimestampMs &+ maxFutureSkewMs {
            let calendar = engine.calendar
            let detail = "ts \(calendar.formatTimestamp(event.ts)) is \(DurationText.format(milliseconds: event.ts - recordTimestampMs)) after the record's timestamp \(calendar.formatTimestamp(recordTimestampMs)); at most \(DurationText.format(milliseconds: maxFutureSkewMs)) is allowed (--max-future-skew)"
            deadLetter(Rejection(.futureTimestamp, detail), record: record, key: key, offset: offset, into: out)
            return
        }
        let account = engine.intern(account: event.account)
        let fingerprint = Fingerprint128(event.id)
        switch event.type {
        case .call:
            let d = engine.apply(CallEvent(account: account, pack: event.pack, ts: event.ts, count: event.count,
                                           billable: event.billable, id: fingerprint))
            switch d.status {
            case .applied:
                counters.applied += 1
                counters.callsFree += UInt64(d.free)
                counters.callsPrepaid += UInt64(d.prepaid)
                counters.callsOverage += UInt64(d.overage)
                if d.overage > 0 { writeOverage(d, offset: offset, into: out) }
            case .nonBillable:
                counters.nonBillable += 1
            case .duplicate:
                counters.duplicates += 1
            case .tooLate:
                deadLetter(tooLate(d.month), record: record, key: key, offset: offset, into: out)
            }
        case .purchase:
            count(engine.applyPurchase(account: account, id: event.id, fingerprint: fingerprint, pack: event.pack,
                                       quantity: event.quantity, ts: event.ts, effective: event.effective, expires: event.expires),
                  record: record, key: key, offset: offset, into: out)
        case .refund:
            count(engine.applyRefund(account: account, fingerprint: fingerprint, purchase: event.purchase, ts: event.ts),
                  record: record, key: key, offset: offset, into: out)
        case .suspend, .resume:
            count(engine.applySuspension(account: account, fingerprint: fingerprint, ts: event.ts, suspended: event.type == .suspend),
                  record: record, key: key, offset: offset, into: out)
        }
    }

    private func count(_ outcome: AccountEventOutcome, record: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer?,
                       offset: Int64, into out: OutputBatch) {
        switch outcome {
        case .applied: counters.applied += 1
        case .duplicate: counters.duplicates += 1
        case let .refundRejected(detail):
            deadLetter(Rejection(.refundRejected, detail), record: record, key: key, offset: offset, into: out)
        }
    }

    private func tooLate(_ month: BillingMonth) -> Rejection {
        let calendar = engine.calendar
        return Rejection(.tooLate, "the call is for \(month), which closed at \(calendar.formatTimestamp(engine.closingInstant(of: month))) (month end + allowed lateness \(DurationText.format(milliseconds: engine.allowedLatenessMs))); the partition's watermark is \(calendar.formatTimestamp(engine.watermark))")
    }

    /// `{"v":1,"id":…,"account":…,"pack":…,"action":…,"month":…,"ts":…,"count":…,"source":{…}}`
    private func writeOverage(_ d: Deduction, offset: Int64, into out: OutputBatch) {
        let catalog = engine.catalog
        let key = out.begin(key: event.account)
        let w = out.bytes
        w.append(raw: "{\"v\":1,\"id\":")
        w.append(jsonString: event.id)
        w.append(raw: ",\"account\":")
        w.append(jsonString: event.account)
        w.append(raw: ",\"pack\":")
        w.append(catalog.packJSON[Int(event.pack.rawValue)])
        w.append(raw: ",\"action\":")
        w.append(catalog.actionJSON[Int(event.action.rawValue)])
        w.append(raw: ",\"month\":\"")
        d.month.write(to: w)
        w.append(raw: "\",\"ts\":\"")
        engine.calendar.writeTimestamp(event.ts, to: w)
        w.append(raw: "\",\"count\":")
        w.append(decimal: UInt64(d.overage))
        w.append(sourcePrefix)
        w.append(decimal: offset)
        w.append(raw: "}}")
        out.finish(kind: .overage, sourceOffset: offset, key: key)
        counters.overageRecords += 1
    }

    /// `{"v":1,"reason":…,"detail":…,"source":{…},"payload":…}`; the payload is the original
    /// bytes as a JSON string, cut at 64 KiB, invalid UTF-8 replaced by U+FFFD.
    private func deadLetter(_ rejection: Rejection, record: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer?,
                            offset: Int64, into out: OutputBatch) {
        counters[rejection.reason] += 1
        let k = out.begin(key: key)
        let w = out.bytes
        w.append(raw: "{\"v\":1,\"reason\":\"")
        w.append(raw: rejection.reason.rawValue)
        w.append(raw: "\",\"detail\":")
        w.append(jsonString: rejection.detail)
        w.append(sourcePrefix)
        w.append(decimal: offset)
        w.append(raw: "},\"payload\":")
        w.append(jsonString: UnsafeRawBufferPointer(rebasing: record[0..<min(record.count, Self.payloadBytesMax)]))
        w.append(UInt8(ascii: "}"))
        out.finish(kind: .deadLetter, sourceOffset: offset, key: k)
    }
}
