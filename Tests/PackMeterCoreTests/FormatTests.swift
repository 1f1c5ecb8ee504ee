import Foundation
import Testing
@testable import PackMeterCore

@Suite("docs/contract.md: output records and balances, byte for byte")
struct FormatTests {
    @Test func overageRecord_matchesTheContract() {
        let ledger = Ledger(partition: 3)
        ledger.call("warm", ts: "2026-11-03T09:00:00+08:00", count: 998)
        ledger.call("5c6b", ts: "2026-11-03T10:00:00.123+08:00", count: 4)
        #expect(ledger.overageLines == [
            #"{"v":1,"id":"5c6b","account":"100012345678","pack":"general-basic","action":"GeneralBasicOCR","month":"2026-11","ts":"2026-11-03T10:00:00.123+08:00","count":2,"source":{"topic":"ocr.usage","partition":3,"offset":1}}"#,
        ])
    }

    @Test func deadLetter_matchesTheContract() {
        let ledger = Ledger()
        ledger.feed(#"{"id":"c","account":"A","action":"FooOCR","ts":1}"#)
        #expect(ledger.deadLetterLines == [
            #"{"v":1,"reason":"unknown_action","detail":"action 'FooOCR' is not in the catalog","source":{"topic":"ocr.usage","partition":0,"offset":0},"payload":"{\"id\":\"c\",\"account\":\"A\",\"action\":\"FooOCR\",\"ts\":1}"}"#,
        ])
    }

    @Test func balances_matchTheContractExample() {
        let ledger = Ledger()
        ledger.purchase("order-8812", quantity: 10000, ts: "2026-11-03T09:00:00+08:00",
                        effective: "2026-11-03T09:00:00+08:00", expires: "2027-11-03T09:00:00+08:00")
        ledger.call("a", ts: "2026-11-03T10:00:00+08:00", count: 1000)
        ledger.call("b", ts: "2026-11-04T10:00:00+08:00", count: 2000)
        ledger.suspend("s", ts: "2026-11-05T10:00:00+08:00")
        ledger.call("c", ts: "2026-11-06T10:00:00+08:00", count: 1)
        ledger.resume("r", ts: "2026-11-07T10:00:00+08:00")
        // Suspended or not, November's grant is used up: 4 more calls go to prepaid.
        ledger.call("d", ts: "2026-11-08T10:00:00+08:00", count: 4)
        #expect(ledger.balances()!.json(calendar: shanghai) ==
            #"{"account":"100012345678","suspended":false,"months":[{"month":"2026-11","packs":[{"pack":"general-basic","free":{"granted":1000,"used":1000,"remaining":0},"prepaid_used":2005,"overage":0}]}],"prepaid":[{"id":"order-8812","pack":"general-basic","quantity":10000,"remaining":7995,"effective":"2026-11-03T09:00:00.000+08:00","expires":"2027-11-03T09:00:00.000+08:00"}]}"#)
    }

    @Test func balances_packsInCatalogOrder_monthsOldestFirst_andMonthFilter() {
        let ledger = Ledger()
        ledger.call("t", action: "TableOCR", ts: "2026-11-03T10:00:00+08:00")
        ledger.call("g", action: "GeneralBasicOCR", ts: "2026-11-03T10:00:00+08:00")
        ledger.call("o", action: "GeneralBasicOCR", ts: "2026-10-31T10:00:00+08:00")
        let all = ledger.balances()!
        #expect(all.months.map(\.month.description) == ["2026-10", "2026-11"])
        #expect(all.months[1].packs.map(\.pack) == ["general-basic", "table"])
        let november = ledger.balances(month: "2026-11")!
        #expect(november.months.map(\.month.description) == ["2026-11"])
    }

    @Test func jsonStrings_escapeQuotesBackslashesAndControls_andReplaceBadUTF8() {
        let out = ByteWriter()
        out.append(jsonString: UnsafeRawBufferPointer(start: nil, count: 0))
        [UInt8](#"a"b\c"#.utf8 + [0x0A, 0x01, 0x7F, 0xFF] + Array("é中😀".utf8)).withUnsafeBytes { out.append(jsonString: $0) }
        #expect(out.string == "\"\"" + #""a\"b\\c\n\u0001"# + "\u{7F}\u{FFFD}é中😀\"")
    }

    @Test func timestampsInOtherZones_carryTheirOffset_includingDaylightSaving() {
        let newYork = calendar("America/New_York")
        #expect(newYork.formatTimestamp(ms("2026-07-01T12:00:00Z")) == "2026-07-01T08:00:00.000-04:00")
        #expect(newYork.formatTimestamp(ms("2026-12-01T12:00:00Z")) == "2026-12-01T07:00:00.000-05:00")
        #expect(calendar("UTC").formatTimestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(calendar("Asia/Kolkata").formatTimestamp(ms("2026-11-03T00:00:00Z")) == "2026-11-03T05:30:00.000+05:30")
    }
}

@Suite("Billing calendar")
struct BillingCalendarTests {
    @Test func shanghaiMonthsStartAtLocalMidnight() {
        #expect(shanghai.start(of: BillingMonth(year: 2026, month: 11)) == ms("2026-10-31T16:00:00Z"))
        #expect(shanghai.month(containing: ms("2026-10-31T15:59:59.999Z")) == BillingMonth(year: 2026, month: 10))
        #expect(shanghai.month(containing: ms("2026-10-31T16:00:00Z")) == BillingMonth(year: 2026, month: 11))
    }

    @Test func everyMonthOf230Years_roundTrips() {
        let zone = calendar("America/New_York")
        for raw in BillingMonth(year: 1970, month: 1).rawValue...BillingMonth(year: 2199, month: 12).rawValue {
            let month = BillingMonth(rawValue: raw)
            let start = zone.start(of: month)
            #expect(zone.month(containing: start) == month)
            #expect(zone.month(containing: start - 1) == (raw == BillingMonth(year: 1970, month: 1).rawValue ? nil : BillingMonth(rawValue: raw - 1)))
            #expect(zone.formatTimestamp(start).hasSuffix("-01T00:00:00.000" + zone.formatTimestamp(start).suffix(6)))
        }
    }

    @Test func shanghaiDaylightSaving1986to1991_isKnown() {
        #expect(shanghai.offsetSeconds(at: ms("1988-07-01T00:00:00Z")) == 9 * 3600)
        #expect(shanghai.offsetSeconds(at: ms("1988-12-01T00:00:00Z")) == 8 * 3600)
    }

    @Test func unknownZone_isAnError() {
        #expect(throws: BillingCalendar.UnknownTimeZone.self) { try BillingCalendar(timeZoneIdentifier: "Mars/Olympus") }
    }

    @Test(arguments: [("72h", 259_200_000 as Int64?), ("10m", 600_000), ("5s", 5000), ("250ms", 250), ("3d", 259_200_000),
                      ("1h30m", 5_400_000), ("", nil), ("h", nil), ("10", nil), ("-5s", nil), ("5x", nil)])
    func durations(text: String, expected: Int64?) {
        #expect(DurationText.milliseconds(text) == expected)
    }
}

@Suite("Hashing and scanning primitives")
struct PrimitiveTests {
    @Test func fingerprint_isMurmur3x64_128_withSeed0x9E3779B9() {
        // Vectors from Python's mmh3.hash128(data, seed=0x9E3779B9, x64arch=True).
        #expect(Fingerprint128(Array("hello".utf8)) == Fingerprint128(high: 0x26F3_735C_A11F_E227, low: 0xC124_45E6_028F_0E47))
        #expect(Fingerprint128([UInt8]()) == Fingerprint128(high: 0x5255_9D26_97D5_2D8E, low: 0xEC75_43C8_E367_16AF))
        #expect(Fingerprint128(Array("5c6b0a1e-0000-4000-8000-000000000001".utf8)) == Fingerprint128(high: 0xECFA_1FAD_691C_AAEA, low: 0x45F1_430B_ADDF_E5F2))
        #expect(Fingerprint128(Array(repeating: UInt8(ascii: "a"), count: 17)) == Fingerprint128(high: 0xA510_D605_53B5_BAD0, low: 0x65CA_087B_CE00_55FA))
    }

    @Test func specialByteDetector_findsExactlyTheFirstSpecialByte() {
        var generator = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            var bytes = [UInt8](repeating: 0, count: 8)
            for i in 0..<8 {
                let r = generator.next()
                bytes[i] = r % 4 == 0 ? [0x22, 0x5C, 0x1F, 0x20, 0x7F, 0x80, 0x21, 0x00][Int(r >> 8) % 8] : UInt8(truncatingIfNeeded: r >> 16)
            }
            let word = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            let first = bytes.firstIndex { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 || $0 >= 0x80 }
            let special = JSONScanner.specialBytes(word)
            // The scanner jumps to the lowest flagged byte: it must be exactly the first special one.
            #expect((special == 0 ? nil : special.trailingZeroBitCount / 8) == first, "\(bytes)")
        }
    }
}

/// A small deterministic generator for tests and generated logs.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The output writers' fast paths (eight plain bytes at a time in JSON strings, timestamps
/// stored straight into the buffer) against independent references.
@Suite("Output writers against references")
struct OutputWriterReferenceTests {
    /// JSON string escaping, one Unicode scalar at a time.
    static func referenceJSON(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20: out += "\\u00" + String(format: "%02x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    @Test func jsonStrings_ofEveryLength_withASpecialCharacterAtEveryPosition() {
        let specials: [String] = ["\"", "\\", "\n", "\u{01}", "\u{1F}", "\u{7F}", " ", "~", "é", "中", "😀"]
        for length in 0...40 {
            for position in 0..<max(length, 1) {
                for special in specials {
                    var text = String((0..<length).map { Character(UnicodeScalar(UInt8(0x41 + $0 % 26))) })
                    if length > 0 {
                        let index = text.index(text.startIndex, offsetBy: position)
                        text.replaceSubrange(index...index, with: special)
                    }
                    let out = ByteWriter()
                    out.append(jsonString: text)
                    #expect(out.string == Self.referenceJSON(text), "length \(length), \(special.debugDescription) at \(position)")
                }
            }
        }
    }

    @Test func timestamps_inEveryOffset_matchFoundationsISO8601() {
        var rng = SplitMix64(seed: 17)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let first = ms("1970-01-01T00:00:00Z"), last = ms("2199-12-31T23:59:59.999Z")
        for _ in 0..<20_000 {
            let instant = first + Int64(rng.next() % UInt64(last - first))
            // Whole-minute offsets from -12:00 to +14:00, and often none.
            let offsetMinutes = rng.next() % 4 == 0 ? 0 : Int(rng.next() % (26 * 60 + 1)) - 12 * 60
            formatter.timeZone = TimeZone(secondsFromGMT: offsetMinutes * 60)!
            let expected = formatter.string(from: Date(timeIntervalSince1970: Double(instant) / 1000))
            #expect(Timestamp.format(instant, offsetMinutes: offsetMinutes) == expected)
        }
    }
}
