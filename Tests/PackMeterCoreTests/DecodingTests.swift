import Testing
@testable import PackMeterCore

/// docs/contract.md, input: every check in order and every dead-letter reason with its detail.
@Suite("docs/contract.md: how one record is judged")
struct DecodingTests {
    let call = #"{"type":"call","id":"c1","account":"A","action":"GeneralBasicOCR","ts":"2026-11-03T10:00:00+08:00"}"#

    func reject(_ record: String, recordTimestamp: Int64? = nil) -> (reason: String?, detail: String) {
        let ledger = Ledger()
        ledger.feed(record, recordTimestamp: recordTimestamp)
        #expect(ledger.counters.isBalanced)
        return (ledger.lastDeadLetterReason, ledger.lastDeadLetterDetail)
    }

    @Test func oversized_over64KiB() {
        let padding = String(repeating: "x", count: 65_536)
        let (reason, detail) = reject(#"{"pad":"\#(padding)"}"#)
        #expect(reason == "oversized")
        #expect(detail == "record is 65546 bytes; the limit is 65536")
    }

    @Test func exactly64KiB_isNotOversized() {
        let head = #"{"type":"call","id":"c1","account":"A","action":"GeneralBasicOCR","ts":"2026-11-03T10:00:00+08:00","pad":""#
        let record = head + String(repeating: "x", count: 65_536 - head.utf8.count - 2) + "\"}"
        #expect(record.utf8.count == 65_536)
        let ledger = Ledger()
        ledger.feed(record)
        #expect(ledger.counters.applied == 1)
    }

    @Test(arguments: [
        ("not json", "invalid JSON: unexpected 'n' at byte 0"),
        ("", "the record is empty, not a JSON object"),
        ("[1,2]", "the record is a JSON array, not a JSON object"),
        ("\"text\"", "the record is a JSON string, not a JSON object"),
        ("42", "the record is a JSON number, not a JSON object"),
        (#"{"id":"a""#, "invalid JSON: input ends too early (at byte 9)"),
        (#"{"id":"a"} x"#, "invalid JSON: data after the end of the object ('x' at byte 11)"),
        (#"{"id":"a\q"}"#, "invalid JSON: bad escape sequence in a string at byte 9"),
        (#"{"id":"\ud800"}"#, #"invalid JSON: \u escape is a lone UTF-16 surrogate at byte 7"#),
        (#"{"n":01}"#, "invalid JSON: unexpected '1' at byte 6"),
        (#"{"n":1.}"#, "invalid JSON: malformed number at byte 7"),
        (#"{"a":[1,}"#, "invalid JSON: unexpected '}' at byte 8"),
        (#"{"a":tru}"#, "invalid JSON: unexpected '}' at byte 8"),
        ("{\"id\":\"a\u{01}\"}", "invalid JSON: unexpected control character byte 0x01 in a string at byte 8"),
    ])
    func malformedJSON(record: String, detail: String) {
        let result = reject(record)
        #expect(result.reason == "malformed_json")
        #expect(result.detail == detail.replacingOccurrences(of: "unexpected control", with: "unescaped control"))
    }

    @Test func malformedJSON_invalidUTF8() {
        let ledger = Ledger()
        ledger.feed(bytes: Array(#"{"id":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))
        #expect(ledger.lastDeadLetterReason == "malformed_json")
        #expect(ledger.lastDeadLetterDetail == "invalid JSON: bytes that are not UTF-8 at byte 7")
        // The payload is still a JSON string, with U+FFFD for the bad byte.
        #expect(ledger.deadLetters[0]["payload"]?.stringValue == "{\"id\":\"\u{FFFD}(\"}")
    }

    @Test(arguments: [
        (#"{"account":"A","action":"GeneralBasicOCR","ts":1}"#, "required field 'id' is missing"),
        (#"{"id":null,"account":"A","action":"GeneralBasicOCR","ts":1}"#, "required field 'id' is null"),
        (#"{"id":"c","action":"GeneralBasicOCR","ts":1}"#, "required field 'account' is missing"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR"}"#, "required field 'ts' is missing"),
        (#"{"id":"c","account":"A","ts":"2026-11-03T10:00:00Z"}"#, "a call needs 'action', which is missing"),
        (#"{"type":"purchase","id":"p","account":"A","pack":"general-basic","ts":1}"#, "a purchase needs 'quantity', which is missing"),
        (#"{"type":"purchase","id":"p","account":"A","quantity":5,"ts":1}"#, "a purchase needs 'pack', which is missing"),
        (#"{"type":"refund","id":"r","account":"A","ts":1}"#, "a refund needs 'purchase', which is missing"),
        (#"{"type":"suspend","id":"s","account":"A","ts":1,"reason":null}"#, "a suspend needs 'reason', which is null"),
    ])
    func missingField(record: String, detail: String) {
        let result = reject(record)
        #expect(result.reason == "missing_field")
        #expect(result.detail == detail)
    }

    @Test(arguments: [
        (#"{"id":7,"account":"A","action":"GeneralBasicOCR","ts":1}"#, "'id' must be a string, not a number"),
        (#"{"id":"","account":"A","action":"GeneralBasicOCR","ts":1}"#, "'id' is empty"),
        (#"{"id":"c","account":["A"],"action":"GeneralBasicOCR","ts":1}"#, "'account' must be a string, not an array"),
        (#"{"id":"c","account":"\#(String(repeating: "a", count: 65))","action":"GeneralBasicOCR","ts":1}"#, "'account' is 65 bytes; at most 64 are allowed"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":"2026-13-01T00:00:00Z"}"#, "'ts' '2026-13-01T00:00:00Z' is not an RFC 3339 time with an offset (2026-11-03T10:00:00+08:00)"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":"2026-11-03T10:00:00"}"#, "'ts' '2026-11-03T10:00:00' is not an RFC 3339 time with an offset (2026-11-03T10:00:00+08:00)"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1.5}"#, "'ts' must be an RFC 3339 string or integer epoch milliseconds, not 1.5"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":true}"#, "'ts' must be an RFC 3339 string or integer epoch milliseconds, not a boolean"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":-86400000000}"#, "'ts' -86400000000 is outside the supported years 1970–2199"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1,"count":0}"#, "'count' must be an integer from 1 to 1000000, not 0"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1,"count":1000001}"#, "'count' must be an integer from 1 to 1000000, not 1000001"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1,"count":2.0}"#, "'count' must be an integer from 1 to 1000000, not 2.0"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1,"count":"2"}"#, "'count' must be an integer from 1 to 1000000, not a string"),
        (#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1,"code":404}"#, "'code' must be a string, not a number"),
        (#"{"id":"c","account":"A","action":7,"ts":1}"#, "'action' must be a string, not a number"),
        (#"{"type":5,"id":"c","account":"A","ts":1}"#, "'type' must be a string, not a number"),
        (#"{"type":"purchase","id":"p","account":"A","pack":"general-basic","quantity":0,"ts":1}"#, "'quantity' must be an integer from 1 to 1000000000, not 0"),
        (#"{"type":"purchase","id":"p","account":"A","pack":"general-basic","quantity":5,"ts":"2026-11-03T09:00:00+08:00","effective":"2026-12-01T00:00:00+08:00","expires":"2026-11-15T00:00:00+08:00"}"#,
         "'expires' '2026-11-15T00:00:00+08:00' is not after 'effective' 2026-12-01T00:00:00.000+08:00"),
        (#"{"type":"suspend","id":"s","account":"A","ts":1,"reason":"holiday"}"#, "'reason' must be 'arrears' or 'violation', not 'holiday'"),
        (#"{"type":"refund","id":"r","account":"A","ts":1,"purchase":""}"#, "'purchase' is empty"),
    ])
    func invalidField(record: String, detail: String) {
        let result = reject(record)
        #expect(result.reason == "invalid_field")
        #expect(result.detail == detail)
    }

    @Test func idOf128Bytes_isAccepted_129IsInvalid() {
        let ok = Ledger()
        ok.feed(#"{"id":"\#(String(repeating: "i", count: 128))","account":"A","action":"GeneralBasicOCR","ts":1800000000000}"#)
        #expect(ok.counters.applied == 1)
        let result = reject(#"{"id":"\#(String(repeating: "i", count: 129))","account":"A","action":"GeneralBasicOCR","ts":1800000000000}"#)
        #expect(result.detail == "'id' is 129 bytes; at most 128 are allowed")
    }

    @Test func unknownType() {
        let result = reject(#"{"type":"gift","id":"g","account":"A","ts":1}"#)
        #expect(result.reason == "unknown_type")
        #expect(result.detail == "type 'gift' is not one of call, purchase, refund, suspend, resume")
    }

    @Test func unknownAction_detailAsInTheContract() {
        let result = reject(#"{"id":"c","account":"A","action":"FooOCR","ts":"2026-11-03T10:00:00Z"}"#)
        #expect(result.reason == "unknown_action")
        #expect(result.detail == "action 'FooOCR' is not in the catalog")
    }

    @Test func unknownPack() {
        let result = reject(#"{"type":"purchase","id":"p","account":"A","pack":"gold","quantity":5,"ts":1800000000000}"#)
        #expect(result.reason == "unknown_pack")
        #expect(result.detail == "pack 'gold' is not in the catalog")
    }

    @Test func checksComeInTheContractsOrder() {
        // missing before invalid, invalid before unknown type, unknown type before unknown action.
        #expect(reject(#"{"type":"gift","id":"","ts":1}"#).reason == "missing_field")
        #expect(reject(#"{"type":"gift","id":"","account":"A","ts":1}"#).reason == "invalid_field")
        #expect(reject(#"{"type":"gift","id":"g","account":"A","ts":1,"action":"FooOCR"}"#).reason == "unknown_type")
        #expect(reject(#"{"id":"c","account":"A","action":"FooOCR","ts":1,"count":0}"#).reason == "invalid_field")
        // A valid record with a future ts and a closed month: future_timestamp (3) before too_late (4).
        let ledger = Ledger()
        ledger.call("dec", ts: "2026-12-10T00:00:00+08:00")
        ledger.feed(#"{"id":"n","account":"A","action":"GeneralBasicOCR","ts":"2026-11-30T00:00:00+08:00"}"#,
                    recordTimestamp: ms("2026-11-01T00:00:00+08:00"))
        #expect(ledger.lastDeadLetterReason == "future_timestamp")
    }

    @Test func futureTimestamp_judgedAgainstTheRecordTimestamp() {
        let recordTs = ms("2026-11-03T10:00:00+08:00")
        let result = reject(#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":"2026-11-03T10:10:00.001+08:00"}"#,
                            recordTimestamp: recordTs)
        #expect(result.reason == "future_timestamp")
        #expect(result.detail == "ts 2026-11-03T10:10:00.001+08:00 is 10m1ms after the record's timestamp 2026-11-03T10:00:00.000+08:00; at most 10m is allowed (--max-future-skew)")
        let ledger = Ledger()
        ledger.feed(#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":"2026-11-03T10:10:00+08:00"}"#, recordTimestamp: recordTs)
        #expect(ledger.counters.applied == 1)
    }

    @Test func tooLate_isADeadLetterWithTheMonthAndWatermark() {
        let ledger = Ledger()
        ledger.call("dec", ts: "2026-12-10T00:00:00+08:00")
        ledger.call("oct", ts: "2026-10-31T00:00:00+08:00")
        #expect(ledger.lastDeadLetterReason == "too_late")
        #expect(ledger.lastDeadLetterDetail == "the call is for 2026-10, which closed at 2026-11-04T00:00:00.000+08:00 (month end + allowed lateness 3d); the partition's watermark is 2026-12-10T00:00:00.000+08:00")
    }

    @Test(arguments: [
        "2026-11-03T10:00:00+08:00", "2026-11-03T02:00:00Z", "2026-11-03T02:00:00z", "2026-11-03t02:00:00Z",
        "2026-11-02T21:00:00-05:00", "2026-11-03T02:00:00.000Z", "2026-11-03T02:00:00.0001Z",
    ])
    func timestampForms_allMeanTheSameInstant(ts: String) {
        #expect(Timestamp.parseRFC3339(ts) == 1_793_671_200_000)
    }

    @Test func timestamp_fractionKeptToTheMillisecond_andEpochMillisecondsAccepted() {
        #expect(Timestamp.parseRFC3339("2026-11-03T02:00:00.1Z") == 1_793_671_200_100)
        #expect(Timestamp.parseRFC3339("2026-11-03T02:00:00.12Z") == 1_793_671_200_120)
        #expect(Timestamp.parseRFC3339("2026-11-03T02:00:00.1239Z") == 1_793_671_200_123)
        #expect(Timestamp.parseRFC3339("2024-02-29T00:00:00Z") != nil)
        #expect(Timestamp.parseRFC3339("2026-02-29T00:00:00Z") == nil)
        #expect(Timestamp.parseRFC3339("2026-11-03T24:00:00Z") == nil)
        #expect(Timestamp.parseRFC3339("2026-11-03T10:00:00+24:00") == nil)
        #expect(Timestamp.parseRFC3339("2026-11-03T10:00:00.Z") == nil)
        let ledger = Ledger()
        ledger.feed(#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1793671200123,"count":1001}"#)
        #expect(ledger.overage[0]["ts"]?.stringValue == "2026-11-03T10:00:00.123+08:00")
    }

    @Test func typeDefaultsToCall_countToOne_nullsAreAbsent() {
        let ledger = Ledger()
        ledger.feed(#"{"id":"c","account":"A","action":"GeneralBasicOCR","ts":1793671200000,"type":null,"count":null,"code":null}"#)
        #expect(ledger.counters.applied == 1)
        #expect(ledger.counters.callsFree == 1)
    }

    @Test func unknownFields_areIgnored_evenNested() {
        let ledger = Ledger()
        ledger.feed(#"{"trace":{"span":[1,{"deep":[true,false,null,-1.5e3]}],"x":"\u00e9"},"id":"c","account":"A","action":"GeneralBasicOCR","ts":1793671200000,"region":"ap-shanghai"}"#)
        #expect(ledger.counters.applied == 1)
    }

    @Test func fieldsOfOtherTypes_areIgnored() {
        let ledger = Ledger()
        ledger.feed(#"{"type":"resume","id":"r","account":"A","ts":1793671200000,"count":"nonsense","pack":7}"#)
        #expect(ledger.counters.applied == 1)
    }

    @Test func escapedStrings_areDecoded_andWrittenBackAsJSON() {
        let ledger = Ledger()
        ledger.feed(#"{"id":"q\"\\\u00e9\n","account":"\u0041\u0042","action":"General\u0042asicOCR","ts":1793671200000,"count":1001}"#)
        #expect(ledger.overage[0]["id"]?.stringValue == "q\"\\é\n")
        #expect(ledger.overage[0]["account"]?.stringValue == "AB")
        #expect(ledger.overageLines[0].contains(#""id":"q\"\\é\n""#))
        // The account is the decoded one: "AB" and "\u0041\u0042" are the same account.
        ledger.feed(#"{"id":"d","account":"AB","action":"GeneralBasicOCR","ts":1793671200000}"#)
        #expect(ledger.engine.accountCount == 1)
    }

    @Test func escapedKeys_areRecognised() {
        let ledger = Ledger()
        ledger.feed(#"{"\u0069d":"c","account":"A","action":"GeneralBasicOCR","ts":1793671200000}"#)
        #expect(ledger.counters.applied == 1)
    }

    @Test func surrogatePairs_decodeToOneScalar() {
        let ledger = Ledger()
        ledger.feed(#"{"id":"\ud83d\ude00","account":"A","action":"GeneralBasicOCR","ts":1793671200000,"count":1001}"#)
        #expect(ledger.overage[0]["id"]?.stringValue == "😀")
    }

    @Test func deadLetter_keepsTheInputKey_andPayloadIsCutAt64KiB() {
        let ledger = Ledger()
        let record = "[" + String(repeating: "1,", count: 40_000) + "1]"
        ledger.feed(record, key: "acct-7")
        #expect(ledger.lastDeadLetterReason == "oversized")
        #expect(ledger.deadLetters[0]["payload"]?.stringValue?.utf8.count == 65_536)
    }
}

@Suite("RFC 3339: the word-at-a-time parser against an independent reference")
struct TimestampParserTests {
    /// An independent reading of the same grammar, written for clarity: cut the text into
    /// its parts, then check each part whole.
    static func reference(_ text: [UInt8]) -> Int64? {
        func number(_ part: ArraySlice<UInt8>) -> Int? {
            guard !part.isEmpty, part.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
            return part.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        guard text.count >= 20, text[4] == UInt8(ascii: "-"), text[7] == UInt8(ascii: "-"),
              [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(text[10]),
              text[13] == UInt8(ascii: ":"), text[16] == UInt8(ascii: ":"),
              let year = number(text[0..<4]), let month = number(text[5..<7]), let day = number(text[8..<10]),
              let hour = number(text[11..<13]), let minute = number(text[14..<16]), let second = number(text[17..<19]),
              (1...12).contains(month), (1...Civil.daysInMonth(year: year, month: month)).contains(day),
              hour < 24, minute < 60, second < 60
        else { return nil }
        var rest = text[19...]
        var millis = 0
        if rest.first == UInt8(ascii: ".") {
            let digits = rest.dropFirst().prefix { (0x30...0x39).contains($0) }
            guard !digits.isEmpty else { return nil }
            let kept = Array(digits.prefix(3)) + Array(repeating: UInt8(ascii: "0"), count: max(0, 3 - digits.count))
            millis = number(kept[...])!
            rest = rest.dropFirst(1 + digits.count)
        }
        let offset: Int
        if rest.count == 1, rest.first == UInt8(ascii: "Z") || rest.first == UInt8(ascii: "z") {
            offset = 0
        } else if rest.count == 6, rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: "-"),
                  rest[rest.startIndex + 3] == UInt8(ascii: ":"),
                  let oh = number(rest.dropFirst().prefix(2)), let om = number(rest.suffix(2)), oh < 24, om < 60 {
            offset = (oh * 60 + om) * (rest.first == UInt8(ascii: "-") ? -1 : 1)
        } else {
            return nil
        }
        let seconds = Int64(Civil.days(year: year, month: month, day: day)) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
        return (seconds - Int64(offset * 60)) * 1000 + Int64(millis)
    }

    @Test func agreesWithTheReference_onValidTimesAndEveryOneByteCorruption() {
        var generator = SplitMix64(seed: 3339)
        // Bytes that break digit tests at their edges, separators, and a byte whose high
        // nibble is 3 but is no digit.
        let replacements: [UInt8] = [0x2F, 0x30, 0x39, 0x3A, 0x3F, 0x2D, 0x54, 0x20, 0x00, 0xFF, 0xF9, 0x06, 0x5A, 0x2E]
        var checked = 0
        for _ in 0..<400 {
            let year = 1970 + Int(generator.next() % 230)
            let month = 1 + Int(generator.next() % 12)
            let day = 1 + Int(generator.next() % 31)
            let time = (Int(generator.next() % 25), Int(generator.next() % 61), Int(generator.next() % 61))
            let fraction = ["", ".5", ".25", ".123", ".1234", "."][Int(generator.next() % 6)]
            let offset = ["Z", "z", "+08:00", "-05:30", "+24:00", "+08:60"][Int(generator.next() % 6)]
            func pad(_ v: Int, _ w: Int) -> String { String(repeating: "0", count: max(0, w - String(v).count)) + String(v) }
            let text = Array("\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(time.0, 2)):\(pad(time.1, 2)):\(pad(time.2, 2))\(fraction)\(offset)".utf8)
            var variants = [text]
            for k in 0..<min(text.count, 22) {
                for r in replacements where text[k] != r {
                    var v = text
                    v[k] = r
                    variants.append(v)
                }
            }
            // The parse that remembers the hour of the last valid time, after the valid
            // text: a variant of the same first 13 bytes takes the remembered hour.
            var afterText = RFC3339HourCache()
            _ = text.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &afterText) }
            for v in variants {
                let parsed = v.withUnsafeBytes { Timestamp.parseRFC3339($0) }
                #expect(parsed == Self.reference(v), "\(String(decoding: v, as: UTF8.self))")
                var cache = afterText
                #expect(v.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &cache) } == parsed,
                        "with the hour of \(String(decoding: text, as: UTF8.self)): \(String(decoding: v, as: UTF8.self))")
                checked += 1
            }
        }
        #expect(checked > 100_000)
    }

    /// The remembered hour is only ever one a valid time had: a fresh cache holds none.
    @Test func rememberedHour_comesOnlyFromAValidTime() {
        var cache = RFC3339HourCache()
        let zeros = [UInt8](repeating: 0, count: 13) + Array(":00:00Z".utf8)
        #expect(zeros.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &cache) } == nil)
        let bad = Array("2026-02-30T10:00:00Z".utf8)
        #expect(bad.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &cache) } == nil)
        #expect(bad.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &cache) } == nil, "an invalid date is not remembered")
        // Across an hour, a day and an offset change, each as parsed alone.
        for text in ["2026-10-31T23:59:59.999+08:00", "2026-10-31T23:00:00Z", "2026-11-01T00:00:00+08:00",
                     "2026-11-01T00:30:00.5-05:30", "2026-11-01T00:30:00.5z", "2026-11-01T01:00:00+08:00"] {
            let bytes = Array(text.utf8)
            let alone = bytes.withUnsafeBytes { Timestamp.parseRFC3339($0) }
            #expect(alone != nil)
            #expect(bytes.withUnsafeBytes { Timestamp.parseRFC3339($0, cache: &cache) } == alone, "\(text)")
        }
    }
}
