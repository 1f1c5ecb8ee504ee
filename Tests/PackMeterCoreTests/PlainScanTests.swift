import Testing
@testable import PackMeterCore
import PackMeterFiles
import PackMeterWorkload

/// `EventDecoder.scanPlain` is a shortcut of the full scanner for plain records. Whatever
/// bytes it is given, the decoder must come to the same outcome with it as without: the
/// same event, or the same dead-letter reason and detail.
@Suite("The plain-record shortcut decides as the full scanner")
struct PlainScanTests {
    let shortcut = EventDecoder(catalog: builtinCatalog, calendar: calendar("Asia/Shanghai"))
    let full: EventDecoder = {
        let decoder = EventDecoder(catalog: builtinCatalog, calendar: calendar("Asia/Shanghai"))
        decoder.plainScanEnabled = false
        return decoder
    }()

    /// Every field of the event, or the rejection.
    static func outcome(_ decoder: EventDecoder, _ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { record in
            var event = DecodedEvent()
            do throws(Rejection) {
                try decoder.decode(record, into: &event)
                func text(_ b: UnsafeRawBufferPointer) -> String { "\(b.count):" + String(decoding: b, as: UTF8.self) }
                return "\(event.type) \(text(event.id)) \(text(event.account)) \(event.ts) \(event.action) \(event.pack) "
                    + "\(event.count) \(event.billable) \(event.quantity) \(event.effective) \(event.expires) "
                    + "\(text(event.purchase)) \(event.reason)"
            } catch {
                return "rejected \(error)"
            }
        }
    }

    /// Records as producers write them: the model's log (every event type) and the
    /// workload generator's (call records as `packmeter generate` writes them).
    static func plainRecords() -> [[UInt8]] {
        var log = LogGenerator(seed: 77)
        var records = log.generate(300).map { Array($0.line.utf8) }
        var options = WorkloadGenerator.Options()
        options.accounts = 50
        options.brokenPerMille = 0
        options.accountEventsPerMille = 100
        var generator = WorkloadGenerator(options: options, catalog: builtinCatalog, calendar: calendar("Asia/Shanghai"))
        let out = ByteWriter(capacity: 1 << 16)
        for _ in 0..<200 {
            out.removeAll()
            let (_, value) = generator.next(into: out)
            records.append(Array(out.array[value]))
        }
        return records
    }

    /// The shortcut is taken for every record the full scanner accepts that has no
    /// whitespace, escapes or bytes beyond ASCII (all the generators write).
    @Test func producersRecords_takeTheShortcut() {
        var taken = 0
        for record in Self.plainRecords() where !Self.outcome(full, record).hasPrefix("rejected") {
            #expect(record.withUnsafeBytes { shortcut.scanPlain($0) }, "\(String(decoding: record, as: UTF8.self))")
            taken += 1
        }
        #expect(taken > 400)
    }

    /// Each byte of a record replaced by, and each position given, a byte that matters to
    /// JSON or to the shortcut; and every truncation.
    @Test func everyOneByteChange_decidesAsTheFullScanner() {
        let bytes: [UInt8] = Array(#""\:,{}[] 019.eE-+an"#.utf8) + [0x00, 0x09, 0x0A, 0x1F, 0x7F, 0x80, 0xC3, 0xE4, 0xFF]
        var checked = 0
        var records = Self.plainRecords()
        records = stride(from: 0, to: records.count, by: 20).map { records[$0] }
        for record in records {
            var variants = [record]
            for at in 0..<record.count {
                variants.append(Array(record[..<at]))
                for b in bytes {
                    var replaced = record
                    if replaced[at] != b {
                        replaced[at] = b
                        variants.append(replaced)
                    }
                    var inserted = record
                    inserted.insert(b, at: at)
                    variants.append(inserted)
                }
            }
            for v in variants {
                let expected = Self.outcome(full, v)
                let got = Self.outcome(shortcut, v)
                #expect(got == expected, "\(String(decoding: v, as: UTF8.self))")
                checked += 1
            }
        }
        #expect(checked > 100_000)
    }
}
