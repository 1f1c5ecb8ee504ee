#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PackMeterCore

/// A failed system call, with the path or stream it was about.
public struct IOError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let target: String
    public let errno: Int32

    public init(_ operation: String, _ target: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.target = target
        self.errno = errno
    }

    public var description: String { "cannot \(operation) \(target): \(String(cString: strerror(errno)))" }
}

/// Reads newline-separated records from a file descriptor in large blocks, without copying
/// records that fit in the block. A line longer than `lineBytesMax` is kept only up to that
/// many bytes; its true length is reported so the caller can reject it as oversized.
public final class LineReader {
    public let name: String
    private let fd: Int32
    private let ownsDescriptor: Bool
    private var buffer: UnsafeMutableRawPointer
    private let capacity: Int
    private var start = 0
    private var end = 0
    private var eof = false
    public let lineBytesMax: Int
    public private(set) var bytesRead: UInt64 = 0
    /// The timestamp every record gets, as a Kafka record has its own: future times are
    /// judged against it (`rate --now`).
    public var recordTimestampMs = InputRecord.noTimestamp

    /// Opens `path`, or standard input for `-`.
    public init(path: String, lineBytesMax: Int = EventDecoder.recordBytesMax + 1, blockBytes: Int = 4 << 20) throws(IOError) {
        if path == "-" {
            fd = 0
            ownsDescriptor = false
            name = "standard input"
        } else {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw IOError("open", "'\(path)'") }
            ownsDescriptor = true
            name = "'\(path)'"
        }
        self.lineBytesMax = lineBytesMax
        capacity = max(blockBytes, lineBytesMax * 2)
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        buffer.deallocate()
        if ownsDescriptor { close(fd) }
    }

    /// Calls `body` with the input's lines as records, in batches of up to `batchMax`:
    /// each record's value is a line without its newline, its offset the 0-based line
    /// number. A final line without a newline is a line; an empty input has none. The bytes
    /// are valid only during the call.
    public func forEachBatch(batchMax: Int = 4096, _ body: (UnsafeBufferPointer<InputRecord>) throws -> Void) throws {
        var batch: [InputRecord] = []
        batch.reserveCapacity(batchMax)
        var line: Int64 = 0
        var skipping = false  // inside an overlong line: only its head is kept
        var overlongLength = 0
        var overlongHead: [UInt8] = []

        func flush() throws {
            guard !batch.isEmpty else { return }
            try batch.withUnsafeBufferPointer { try body($0) }
            batch.removeAll(keepingCapacity: true)
        }
        func deliverOverlong() throws {
            try flush()
            try overlongHead.withUnsafeBytes { head in
                var record = InputRecord(value: head, offset: line, timestampMs: recordTimestampMs, fullLength: overlongLength)
                try withUnsafePointer(to: &record) { try body(UnsafeBufferPointer(start: $0, count: 1)) }
            }
            line += 1
            skipping = false
        }

        while true {
            while let newline = memchr(buffer + start, 0x0A, end - start) {
                let lineEnd = UnsafeRawPointer(newline) - UnsafeRawPointer(buffer)
                if skipping {
                    overlongLength += lineEnd - start
                    try deliverOverlong()
                } else {
                    batch.append(InputRecord(value: UnsafeRawBufferPointer(start: buffer + start, count: lineEnd - start), offset: line,
                                             timestampMs: recordTimestampMs))
                    line += 1
                    if batch.count == batchMax { try flush() }
                }
                start = lineEnd + 1
            }
            // The buffer is about to move: hand over what points into it.
            try flush()
            if skipping {
                overlongLength += end - start
                start = end
            } else if end - start >= lineBytesMax {
                overlongHead = Array(UnsafeRawBufferPointer(start: buffer + start, count: lineBytesMax))
                overlongLength = end - start
                skipping = true
                start = end
            }
            if eof {
                if skipping {
                    try deliverOverlong()
                } else if end > start {
                    batch.append(InputRecord(value: UnsafeRawBufferPointer(start: buffer + start, count: end - start), offset: line,
                                             timestampMs: recordTimestampMs))
                    line += 1
                    try flush()
                }
                return
            }
            if start > 0 {
                memmove(buffer, buffer + start, end - start)
                end -= start
                start = 0
            }
            let n = read(fd, buffer + end, capacity - end)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("read", name)
            }
            if n == 0 { eof = true }
            end += n
            bytesRead += UInt64(n)
        }
    }
}

/// Buffered output to a file or standard output/error; `flush()` writes everything.
public final class FileOutput {
    public let name: String
    private let fd: Int32
    private let ownsDescriptor: Bool
    public let buffer = ByteWriter(capacity: 1 << 20)
    private let flushThreshold = 1 << 20

    /// Creates (or truncates) `path`; `-` is standard output.
    public init(path: String) throws(IOError) {
        if path == "-" {
            fd = 1
            ownsDescriptor = false
            name = "standard output"
        } else {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw IOError("create", "'\(path)'") }
            ownsDescriptor = true
            name = "'\(path)'"
        }
    }

    deinit {
        if ownsDescriptor { close(fd) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(IOError) {
        buffer.append(bytes)
        if buffer.count >= flushThreshold { try flush() }
    }

    /// Writes `line` and a newline.
    public func writeLine(_ line: UnsafeRawBufferPointer) throws(IOError) {
        buffer.append(line)
        buffer.append(0x0A)
        if buffer.count >= flushThreshold { try flush() }
    }

    public func flush() throws(IOError) {
        let bytes = buffer.bytes
        var written = 0
        while written < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("write to", name)
            }
            written += n
        }
        buffer.removeAll()
    }
}

/// Writes a line to standard error at once (progress, summaries, errors).
public func printError(_ line: String) {
    writeError(line + "\n")
}

/// Writes `text` to standard error at once, as it is.
public func writeError(_ text: String) {
    var text = text
    text.withUTF8 { utf8 in
        var offset = 0
        while offset < utf8.count {
            let n = write(2, utf8.baseAddress! + offset, utf8.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}

/// Seconds on a monotonic clock.
public func monotonicSeconds() -> Double { seconds(on: CLOCK_MONOTONIC) }

/// CPU seconds this process has used so far, all threads, user and system.
public func processCPUSeconds() -> Double { seconds(on: CLOCK_PROCESS_CPUTIME_ID) }

/// Wall-clock time, epoch milliseconds.
public func wallClockMs() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

private func seconds(on clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
