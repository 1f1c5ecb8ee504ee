import PackMeterCore

/// `packmeter rate`: the rules offline on JSON lines, as one partition (docs/contract.md).
/// Source of each record: topic = the input as named, partition 0, offset = 0-based line.
public struct RateJob {
    public var input: String
    public var overageOut: String?
    public var dlqOut: String?
    /// Where notices go (the configuration's thresholds say when they are due).
    public var noticesOut: String?
    public var balancesOut: String?
    public var configuration: EngineConfiguration
    /// Print a progress line on stderr every few seconds once the input takes longer than 3 s.
    public var progress: Bool
    /// What "now" is (epoch ms): a `ts` more than the configuration's future skew after it is
    /// `future_timestamp`, so that one far-future call cannot close every open month.
    public var nowMs: Int64?

    public init(input: String, overageOut: String?, dlqOut: String?, balancesOut: String?,
                configuration: EngineConfiguration, progress: Bool = true) {
        self.input = input
        self.overageOut = overageOut
        self.dlqOut = dlqOut
        self.balancesOut = balancesOut
        self.configuration = configuration
        self.progress = progress
    }

    public struct Result {
        public var counters: ProcessingCounters
        public var seconds: Double
        public var bytesRead: UInt64
        public var deadLettersWritten: Bool
        public var processor: PartitionProcessor
    }

    public func run() throws -> Result {
        let reader = try LineReader(path: input)
        if let nowMs { reader.recordTimestampMs = nowMs }
        let overage = try overageOut.map { path throws(IOError) in try FileOutput(path: path) }
        let dlq = try dlqOut.map { path throws(IOError) in try FileOutput(path: path) }
        let notices = try noticesOut.map { path throws(IOError) in try FileOutput(path: path) }
        let processor = configuration.makeProcessor(topic: input, partition: 0)
        processor.recordTimestampName = "the time of the run (--now)"
        let batch = OutputBatch()
        let started = monotonicSeconds()
        var lastReport = started
        var offset: Int64 = 0

        func drain() throws {
            for entry in batch.entries {
                switch entry.kind {
                case .overage: try overage?.writeLine(batch.value(of: entry))
                case .deadLetter: try dlq?.writeLine(batch.value(of: entry))
                case .notice: try notices?.writeLine(batch.value(of: entry))
                }
            }
            batch.removeAll()
        }

        try reader.forEachBatch { records in
            processor.process(records, into: batch)
            offset += Int64(records.count)
            try drain()
            if progress {
                let now = monotonicSeconds()
                if now - started >= 3 && now - lastReport >= 2 {
                    lastReport = now
                    let rate = Double(offset) / (now - started)
                    printError("packmeter rate: \(Summary.grouped(UInt64(offset))) records from \(reader.name), \(Summary.compact(rate)) records/s, \(Summary.grouped(processor.counters.overageRecords)) overage records so far")
                }
            }
        }
        try drain()
        try overage?.flush()
        try dlq?.flush()
        try notices?.flush()
        let seconds = monotonicSeconds() - started

        if let balancesOut {
            let out = try FileOutput(path: balancesOut)
            let engine = processor.engine
            let line = ByteWriter(capacity: 4096)
            for account in engine.accountsWithState() {
                line.removeAll()
                engine.balances(of: account).write(to: line, calendar: engine.calendar)
                try out.writeLine(line.bytes)
            }
            try out.flush()
        }
        return Result(counters: processor.counters, seconds: seconds, bytesRead: reader.bytesRead,
                      deadLettersWritten: dlq != nil, processor: processor)
    }
}

/// Human-readable numbers and the end-of-run summary.
public enum Summary {
    /// 1234567 → "1,234,567".
    public static func grouped(_ value: UInt64) -> String {
        let digits = String(value)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }

    /// 1234567 → "1.23M".
    public static func compact(_ value: Double) -> String {
        func fixed(_ v: Double, _ digits: Int) -> String {
            var s = String(Int((v * 100).rounded()))
            while s.count < 3 { s = "0" + s }
            s.insert(".", at: s.index(s.endIndex, offsetBy: -2))
            return digits == 2 ? s : String(s.dropLast(2 - digits))
        }
        switch value {
        case 1e9...: return fixed(value / 1e9, 2) + "G"
        case 1e6...: return fixed(value / 1e6, 2) + "M"
        case 1e3...: return fixed(value / 1e3, 2) + "k"
        default: return String(Int(value.rounded()))
        }
    }

    /// The lines printed at the end of `rate` (and by `demo`).
    public static func lines(_ c: ProcessingCounters, seconds: Double, title: String) -> [String] {
        let rate = seconds > 0 ? Double(c.recordsRead) / seconds : 0
        var lines = [
            "\(title): \(grouped(c.recordsRead)) records in \(format2(seconds)) s, \(compact(rate)) events/s",
            row("applied", c.applied),
            row("duplicates", c.duplicates),
            row("non-billable", c.nonBillable),
            row("rejected", c.rejectedTotal),
        ]
        for reason in RejectReason.allCases where c[reason] > 0 {
            lines.append(row("  " + reason.rawValue, c[reason]))
        }
        lines.append(row("billable calls", c.billableCalls))
        lines.append(row("  free grants", c.callsFree))
        lines.append(row("  prepaid packs", c.callsPrepaid))
        lines.append(row("  overage", c.callsOverage) + "  in \(grouped(c.overageRecords)) overage records")
        if c.noticesTotal > 0 {
            lines.append(row("notices", c.noticesTotal))
            for kind in Notice.Kind.allCases where c[notice: kind] > 0 { lines.append(row("  " + kind.name, c[notice: kind])) }
        }
        return lines
    }

    /// The dedupe window's line of a summary: ids dropped because the window was full.
    public static func evictionLine(all: UInt64, openMonth: UInt64) -> String {
        row("dedupe evictions", all) + (all == 0 ? "" : "  \(grouped(openMonth)) of open months: their repeats would be billed again (raise --dedupe-capacity)")
    }

    static func row(_ label: String, _ value: UInt64) -> String {
        let number = grouped(value)
        return "  " + label.padding(20) + String(repeating: " ", count: max(0, 14 - number.count)) + number
    }

    public static func format2(_ v: Double) -> String {
        let hundredths = Int((v * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
