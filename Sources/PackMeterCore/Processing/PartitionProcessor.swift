/// One input record: its value, Kafka key, offset and timestamp. The bytes must stay valid
/// while `PartitionProcessor.process` runs.
public struct InputRecord {
    public var value: UnsafeRawBufferPointer
    public var key: UnsafeRawBufferPointer?
    public var offset: Int64
    /// The Kafka record's timestamp (epoch ms), or `InputRecord.noTimestamp`.
    public var timestampMs: Int64
    /// The record's true size when `value` holds only its head (an overlong input line).
    public var fullLength: Int

    public static let noTimestamp = Int64.min

    public init(value: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer? = nil, offset: Int64,
                timestampMs: Int64 = InputRecord.noTimestamp, fullLength: Int? = nil) {
        self.value = value
        self.key = key
        self.offset = offset
        self.timestampMs = timestampMs
        self.fullLength = fullLength ?? value.count
    }
}

/// Judges the records of one input partition in log order (docs/contract.md, "How one record is
/// judged"): decode (checks 1–2), future timestamp (3), then the engine (4–6). Writes the
/// overage records and dead letters each record produces into an `OutputBatch` and counts
/// every outcome. Used as is by `packmeter rate` and by each shard of the streaming worker,
/// so both produce the same bytes for the same log.
///
/// Records are handled in chunks: first every record of the chunk is decoded (its
/// account's directory slot requested), then the accounts are interned and the ids
/// fingerprinted, then the events are applied in log order with the engine's memory for
/// the calls a few places ahead already requested.
public final class PartitionProcessor {
    public let engine: PartitionEngine
    public let decoder: EventDecoder
    public let topic: String
    public let partition: Int32
    /// Check 3: `ts` may be at most this far after the Kafka record's timestamp.
    public let maxFutureSkewMs: Int64
    /// What a record's timestamp is, for the `future_timestamp` detail.
    public var recordTimestampName = "the record's timestamp"
    public private(set) var counters = ProcessingCounters()

    private let sourcePrefix: [UInt8]
    /// Scratch for a notice's id.
    private let noticeID = ByteWriter(capacity: 256)

    /// A decoded record waiting to be applied.
    struct Pending {
        var event: DecodedEvent
        var account: AccountKey
        var call: CallEvent
        /// Index into `rejections`, or -1 when the record decoded.
        var rejection: Int32
        var record: Int32
    }

    static let chunkMax = 128
    private let pending: UnsafeMutablePointer<Pending>
    private var rejections: [Rejection] = []

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
        pending = .allocate(capacity: Self.chunkMax)
        let blank = Pending(event: DecodedEvent(), account: AccountKey(UnsafeRawBufferPointer(start: nil, count: 0)),
                            call: CallEvent(account: AccountID(0), pack: PackIndex(0), ts: 0, count: 0, billable: false,
                                            id: Fingerprint128(high: 0, low: 0)),
                            rejection: -1, record: 0)
        pending.initialize(repeating: blank, count: Self.chunkMax)
    }

    deinit {
        pending.deinitialize(count: Self.chunkMax)
        pending.deallocate()
    }

    /// Processes one record (a batch of one).
    public func process(_ record: UnsafeRawBufferPointer, fullLength: Int? = nil, key: UnsafeRawBufferPointer?, offset: Int64,
                        recordTimestampMs: Int64?, into out: OutputBatch) {
        var input = InputRecord(value: record, key: key, offset: offset,
                                timestampMs: recordTimestampMs ?? InputRecord.noTimestamp, fullLength: fullLength)
        withUnsafePointer(to: &input) { process(UnsafeBufferPointer(start: $0, count: 1), into: out) }
    }

    /// Processes `records` in order; their outputs are appended to `out` in the same order.
    public func process(_ records: UnsafeBufferPointer<InputRecord>, into out: OutputBatch) {
        var start = 0
        while start < records.count {
            start = processChunk(records, from: start, into: out)
        }
    }

    /// Decodes a chunk starting at `start`, applies it, and returns where the next begins.
    private func processChunk(_ records: UnsafeBufferPointer<InputRecord>, from start: Int, into out: OutputBatch) -> Int {
        decoder.beginBatch()
        rejections.removeAll(keepingCapacity: true)
        var n = 0
        var index = start
        while index < records.count && n < Self.chunkMax && decoder.hasRoomForAnotherRecord {
            decode(records[index], index: index, into: pending + n)
            n += 1
            index += 1
        }
        counters.recordsRead += UInt64(n)
        // Accounts are interned once every record of the chunk is decoded, so that the
        // directory slots requested while decoding have arrived.
        for k in 0..<n where pending[k].rejection < 0 {
            let event = pending[k].event
            pending[k].call = CallEvent(account: engine.intern(account: pending[k].account), pack: event.pack, ts: event.ts,
                                        count: event.count, billable: event.billable, id: Fingerprint128(event.id))
        }
        var chunk = Chunk(processor: self, pending: pending, count: n, records: records, out: out)
        engine.applyLoop(&chunk)
        return index
    }

    /// Checks 1–3: decode, then the record timestamp; requests the account's directory slot.
    @inline(__always)
    private func decode(_ record: InputRecord, index: Int, into slot: UnsafeMutablePointer<Pending>) {
        slot.pointee.record = Int32(index)
        slot.pointee.rejection = -1
        do {
            try decoder.decode(record.value, fullLength: record.fullLength == record.value.count ? nil : record.fullLength,
                               into: &slot.pointee.event)
        } catch {
            slot.pointee.rejection = Int32(rejections.count)
            rejections.append(error)
            return
        }
        let event = slot.pointee.event
        if record.timestampMs != InputRecord.noTimestamp, event.ts > record.timestampMs &+ maxFutureSkewMs {
            let calendar = engine.calendar
            let detail = "ts \(calendar.formatTimestamp(event.ts)) is \(DurationText.format(milliseconds: event.ts - record.timestampMs)) after \(recordTimestampName) \(calendar.formatTimestamp(record.timestampMs)); at most \(DurationText.format(milliseconds: maxFutureSkewMs)) is allowed (--max-future-skew)"
            slot.pointee.rejection = Int32(rejections.count)
            rejections.append(Rejection(.futureTimestamp, detail))
            return
        }
        slot.pointee.account = AccountKey(event.account)
        engine.prefetch(account: slot.pointee.account)
    }

    /// Checks 4–6 and the outputs.
    @inline(__always)
    fileprivate func apply(_ p: UnsafeMutablePointer<Pending>, record: InputRecord, into out: OutputBatch) {
        if p.pointee.rejection >= 0 {
            deadLetter(rejections[Int(p.pointee.rejection)], record: record, into: out)
            return
        }
        let call = p.pointee.call
        switch p.pointee.event.type {
        case .call:
            let d = engine.settle(call)
            switch d.status {
            case .applied:
                counters.applied += 1
                counters.callsFree += UInt64(d.free)
                counters.callsPrepaid += UInt64(d.prepaid)
                counters.callsOverage += UInt64(d.overage)
                if d.overage > 0 { writeOverage(d, event: p.pointee.event, offset: record.offset, into: out) }
            case .nonBillable:
                counters.nonBillable += 1
            case .duplicate:
                counters.duplicates += 1
            case .tooLate:
                deadLetter(tooLate(d.month), record: record, into: out)
            }
        case .purchase:
            let event = p.pointee.event
            count(engine.applyPurchase(account: call.account, id: event.id, fingerprint: call.id, pack: event.pack,
                                       quantity: event.quantity, ts: event.ts, effective: event.effective, expires: event.expires),
                  record: record, into: out)
        case .refund:
            count(engine.applyRefund(account: call.account, fingerprint: call.id, purchase: p.pointee.event.purchase, ts: call.ts),
                  record: record, into: out)
        case .suspend, .resume:
            count(engine.applySuspension(account: call.account, fingerprint: call.id, ts: call.ts,
                                         suspended: p.pointee.event.type == .suspend),
                  record: record, into: out)
        }
        if engine.hasNotices, let notices = engine.notices {
            writeNotices(notices, ts: p.pointee.event.ts, offset: record.offset, into: out)
        }
    }

    private func count(_ outcome: AccountEventOutcome, record: InputRecord, into out: OutputBatch) {
        switch outcome {
        case .applied: counters.applied += 1
        case .duplicate: counters.duplicates += 1
        case let .refundRejected(detail): deadLetter(Rejection(.refundRejected, detail), record: record, into: out)
        }
    }

    private func tooLate(_ month: BillingMonth) -> Rejection {
        let calendar = engine.calendar
        return Rejection(.tooLate, "the call is for \(month), which closed at \(calendar.formatTimestamp(engine.closingInstant(of: month))) (month end + allowed lateness \(DurationText.format(milliseconds: engine.allowedLatenessMs))); the partition's watermark is \(calendar.formatTimestamp(engine.watermark))")
    }

    /// `{"v":1,"id":…,"account":…,"pack":…,"action":…,"month":…,"ts":…,"count":…,"source":{…}}`
    private func writeOverage(_ d: Deduction, event: DecodedEvent, offset: Int64, into out: OutputBatch) {
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
        // `writeTimestamp`, with the calendar's part done first: called with the calendar in
        // hand, the compiler retained its four references around the write.
        Timestamp.write(event.ts, offsetMinutes: engine.calendar.offsetSeconds(at: event.ts) / 60, to: w)
        w.append(raw: "\",\"count\":")
        w.append(decimal: UInt64(d.overage))
        w.append(sourcePrefix)
        w.append(decimal: offset)
        w.append(raw: "}}")
        out.finish(kind: .overage, sourceOffset: offset, key: key)
        counters.overageRecords += 1
    }

    /// The notices applying the record caused (docs/contract.md, notices), in the contract's
    /// order, each with the event's `ts` and the record as its source.
    private func writeNotices(_ notices: NoticeCollector, ts: Int64, offset: Int64, into out: OutputBatch) {
        let engine = self.engine
        notices.sort(accountBytes: { engine.accountBytes($0) }, packID: { Array(engine.catalog.packs[Int($0.rawValue)].id.utf8) })
        for notice in notices.notices { writeNotice(notice, purchase: notices.purchase(of: notice), ts: ts, offset: offset, into: out) }
        engine.clearNotices()
    }

    /// `{"v":1,"id":…,"kind":…,"account":…,"pack":…,…,"ts":…,"source":{…}}`: the fields of
    /// its kind, in the contract's order.
    private func writeNotice(_ n: Notice, purchase: ArraySlice<UInt8>, ts: Int64, offset: Int64, into out: OutputBatch) {
        let account = engine.accountBytes(n.account)
        let packID = engine.catalog.packs[Int(n.pack.rawValue)].id
        let monthly = n.kind == .freeGrantUsed || n.kind == .overageStarted
        let id = noticeID
        id.removeAll()
        id.append(account)
        id.append(UInt8(ascii: "/"))
        id.append(utf8: n.kind.name)
        id.append(UInt8(ascii: "/"))
        if monthly { id.append(utf8: packID) } else { purchase.withUnsafeBytes { id.append($0) } }
        if monthly {
            id.append(UInt8(ascii: "/"))
            n.month.write(to: id)
        }
        if n.threshold > 0 {
            id.append(UInt8(ascii: "/"))
            id.append(decimal: UInt64(n.threshold))
        }
        let key = out.begin(key: account)
        let w = out.bytes
        w.append(raw: "{\"v\":1,\"id\":")
        w.append(jsonString: id.bytes)
        w.append(raw: ",\"kind\":\"")
        w.append(utf8: n.kind.name)
        w.append(raw: "\",\"account\":")
        w.append(jsonString: account)
        w.append(raw: ",\"pack\":")
        w.append(engine.catalog.packJSON[Int(n.pack.rawValue)])
        if !monthly {
            w.append(raw: ",\"purchase\":")
            purchase.withUnsafeBytes { w.append(jsonString: $0) }
        } else {
            w.append(raw: ",\"month\":\"")
            n.month.write(to: w)
            w.append(UInt8(ascii: "\""))
        }
        if n.threshold > 0 {
            w.append(raw: ",\"threshold\":")
            w.append(decimal: UInt64(n.threshold))
        }
        switch n.kind {
        case .freeGrantUsed, .prepaidUsed:
            w.append(raw: ",\"used\":")
            w.append(decimal: n.used)
            w.append(raw: ",\"limit\":")
            w.append(decimal: n.limit)
        case .overageStarted:
            w.append(raw: ",\"used\":")
            w.append(decimal: n.used)
        case .prepaidExpiring:
            w.append(raw: ",\"remaining\":")
            w.append(decimal: n.used)
            w.append(raw: ",\"limit\":")
            w.append(decimal: n.limit)
            w.append(raw: ",\"expires\":\"")
            Timestamp.write(n.expires, offsetMinutes: engine.calendar.offsetSeconds(at: n.expires) / 60, to: w)
            w.append(UInt8(ascii: "\""))
        }
        w.append(raw: ",\"ts\":\"")
        Timestamp.write(ts, offsetMinutes: engine.calendar.offsetSeconds(at: ts) / 60, to: w)
        w.append(UInt8(ascii: "\""))
        w.append(sourcePrefix)
        w.append(decimal: offset)
        w.append(raw: "}}")
        out.finish(kind: .notice, sourceOffset: offset, key: key)
        counters[notice: n.kind] += 1
    }

    /// `{"v":1,"reason":…,"detail":…,"source":{…},"payload":…}`; the payload is the original
    /// bytes as a JSON string, cut at 64 KiB, invalid UTF-8 replaced by U+FFFD.
    private func deadLetter(_ rejection: Rejection, record: InputRecord, into out: OutputBatch) {
        counters[rejection.reason] += 1
        let k = out.begin(key: record.key)
        let w = out.bytes
        w.append(raw: "{\"v\":1,\"reason\":\"")
        w.append(utf8: rejection.reason.rawValue)
        w.append(raw: "\",\"detail\":")
        w.append(jsonString: rejection.detail)
        w.append(sourcePrefix)
        w.append(decimal: record.offset)
        w.append(raw: "},\"payload\":")
        w.append(jsonString: UnsafeRawBufferPointer(rebasing: record.value[0..<min(record.value.count, Self.payloadBytesMax)]))
        w.append(UInt8(ascii: "}"))
        out.finish(kind: .deadLetter, sourceOffset: record.offset, key: k)
    }
}

/// A decoded chunk, as the engine's apply loop walks it: calls are prefetched ahead, and
/// every record (call, account event or rejection) is judged in order.
private struct Chunk: ApplyLoopBatch {
    unowned(unsafe) let processor: PartitionProcessor
    let pending: UnsafeMutablePointer<PartitionProcessor.Pending>
    let count: Int
    let records: UnsafeBufferPointer<InputRecord>
    let out: OutputBatch

    @inline(__always)
    func prefetch(_ i: Int, in engine: PartitionEngine) {
        if pending[i].rejection < 0 && pending[i].event.type == .call { engine.prefetch(pending[i].call) }
    }

    @inline(__always)
    func apply(_ i: Int, in engine: PartitionEngine) {
        processor.apply(pending + i, record: records[Int(pending[i].record)], into: out)
    }
}
