@testable import PackMeterCore
import PackMeterFiles

/// The built-in catalog, loaded once for all tests.
let builtinCatalog: Catalog = {
    do { return try Catalog.builtin() } catch { fatalError("built-in catalog: \(error)") }
}()

let shanghai: BillingCalendar = {
    do { return try BillingCalendar(timeZoneIdentifier: "Asia/Shanghai") } catch { fatalError("\(error)") }
}()

func calendar(_ zone: String) -> BillingCalendar {
    do { return try BillingCalendar(timeZoneIdentifier: zone) } catch { fatalError("\(error)") }
}

/// Epoch milliseconds of an RFC 3339 text, for writing tests with real dates.
func ms(_ text: String) -> Int64 {
    guard let value = Timestamp.parseRFC3339(text) else { fatalError("bad test timestamp \(text)") }
    return value
}

/// One partition fed with JSON lines, the way `rate` and the worker feed it; keeps every
/// output for inspection.
final class Ledger {
    let processor: PartitionProcessor
    var overage: [JSONValue] = []
    var overageLines: [String] = []
    var deadLetters: [JSONValue] = []
    var deadLetterLines: [String] = []
    var notices: [JSONValue] = []
    var noticeLines: [String] = []
    private var offset: Int64 = 0
    private let batch = OutputBatch()

    init(zone: String = "Asia/Shanghai", latenessMs: Int64 = 72 * 3_600_000, catalog: Catalog = builtinCatalog,
         dedupeCapacity: Int = PartitionEngine.dedupeCapacityDefault, topic: String = "ocr.usage", partition: Int32 = 0,
         engine: PartitionEngine? = nil, notices: NoticeThresholds? = nil) {
        let configuration = EngineConfiguration(catalog: catalog, calendar: calendar(zone), allowedLatenessMs: latenessMs,
                                                dedupeCapacity: dedupeCapacity, notices: notices)
        if let engine {
            processor = PartitionProcessor(engine: engine, topic: topic, partition: partition)
        } else {
            processor = configuration.makeProcessor(topic: topic, partition: partition)
        }
    }

    /// Moves the next record's offset on by `records` (as a restored partition resumes).
    func skip(_ records: Int) { offset += Int64(records) }

    var engine: PartitionEngine { processor.engine }
    var counters: ProcessingCounters { processor.counters }

    /// Feeds one record; returns the outputs it produced.
    @discardableResult
    func feed(_ line: String, recordTimestamp: Int64? = nil, key: String? = nil) -> [JSONValue] {
        feed(bytes: Array(line.utf8), recordTimestamp: recordTimestamp, key: key)
    }

    @discardableResult
    func feed(bytes: [UInt8], recordTimestamp: Int64? = nil, key: String? = nil) -> [JSONValue] {
        batch.removeAll()
        bytes.withUnsafeBytes { record in
            if let key {
                var key = key
                key.withUTF8 { processor.process(record, key: UnsafeRawBufferPointer($0), offset: offset,
                                                 recordTimestampMs: recordTimestamp, into: batch) }
            } else {
                processor.process(record, key: nil, offset: offset, recordTimestampMs: recordTimestamp, into: batch)
            }
        }
        offset += 1
        var produced: [JSONValue] = []
        for entry in batch.entries {
            let text = String(decoding: batch.value(of: entry), as: UTF8.self)
            let value = try! JSONValue.parse(text)
            produced.append(value)
            switch entry.kind {
            case .overage:
                overage.append(value)
                overageLines.append(text)
            case .deadLetter:
                deadLetters.append(value)
                deadLetterLines.append(text)
            case .notice:
                notices.append(value)
                noticeLines.append(text)
            }
        }
        return produced
    }

    // Builders for the five event types, with the contract's field names.

    @discardableResult
    func call(_ id: String, account: String = "100012345678", action: String = "GeneralBasicOCR", ts: String,
              count: Int? = nil, code: String? = nil) -> [JSONValue] {
        var fields = "\"type\":\"call\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"action\":\"\(action)\",\"ts\":\"\(ts)\""
        if let count { fields += ",\"count\":\(count)" }
        if let code { fields += ",\"code\":\"\(code)\"" }
        return feed("{\(fields)}")
    }

    @discardableResult
    func purchase(_ id: String, account: String = "100012345678", pack: String = "general-basic", quantity: Int,
                  ts: String, effective: String? = nil, expires: String? = nil) -> [JSONValue] {
        var fields = "\"type\":\"purchase\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"pack\":\"\(pack)\",\"quantity\":\(quantity),\"ts\":\"\(ts)\""
        if let effective { fields += ",\"effective\":\"\(effective)\"" }
        if let expires { fields += ",\"expires\":\"\(expires)\"" }
        return feed("{\(fields)}")
    }

    @discardableResult
    func refund(_ id: String, account: String = "100012345678", purchase: String, ts: String) -> [JSONValue] {
        feed("{\"type\":\"refund\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"purchase\":\"\(purchase)\",\"ts\":\"\(ts)\"}")
    }

    @discardableResult
    func suspend(_ id: String, account: String = "100012345678", reason: String = "arrears", ts: String) -> [JSONValue] {
        feed("{\"type\":\"suspend\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"reason\":\"\(reason)\",\"ts\":\"\(ts)\"}")
    }

    @discardableResult
    func resume(_ id: String, account: String = "100012345678", ts: String) -> [JSONValue] {
        feed("{\"type\":\"resume\",\"id\":\"\(id)\",\"account\":\"\(account)\",\"ts\":\"\(ts)\"}")
    }

    /// Total overage calls emitted so far.
    var overageCalls: Int64 { overage.reduce(0) { $0 + ($1["count"]?.intValue ?? 0) } }

    func balances(_ account: String = "100012345678", month: String? = nil) -> AccountBalances? {
        engine.balances(ofAccountNamed: account, month: month.flatMap(BillingMonth.init))
    }

    /// The (free used, prepaid used, overage) of a pack in a month.
    func use(_ pack: String, _ month: String, account: String = "100012345678") -> (free: UInt64, prepaid: UInt64, overage: UInt64)? {
        guard let b = balances(account)?.pack(pack, in: BillingMonth(month)!) else { return nil }
        return (b.freeUsed, b.prepaidUsed, b.overage)
    }

    var lastDeadLetterReason: String? { deadLetters.last?["reason"]?.stringValue }
    var lastDeadLetterDetail: String { deadLetters.last?["detail"]?.stringValue ?? "" }
}

/// Feeds `count` single calls with ids `prefix-0`, `prefix-1`, …
func callMany(_ ledger: Ledger, _ count: Int, prefix: String, account: String = "100012345678",
              action: String = "GeneralBasicOCR", ts: String) {
    for i in 0..<count { ledger.call("\(prefix)-\(i)", account: account, action: action, ts: ts) }
}
