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

    /// Calls `body` with each line (without its newline) and the line's full length, until
    /// the input ends. A final line without a newline is a line; an empty input has none.
    public func forEachLine(_ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws {
        var skipping = false  // inside an overlong line whose head was already delivered
        var overlongLength = 0
        var overlongHead: [UInt8] = []
        while true {
            // Deliver every complete line in the buffer.
            while let newline = memchr(buffer + start, 0x0A, end - start) {
                let lineEnd = UnsafeRawPointer(newline) - UnsafeRawPointer(buffer)
                if skipping {
                    overlongLength += lineEnd - start
                    try overlongHead.withUnsafeBytes { try body($0, overlongLength) }
                    skipping = false
                } else {
                    try body(UnsafeRawBufferPointer(start: buffer + start, count: lineEnd - start), lineEnd - start)
                }
                start = lineEnd + 1
            }
            // A partial line remains: keep only its head if it is already too long.
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
                    try overlongHead.withUnsafeBytes { try body($0, overlongLength) }
                } else if end > start {
                    try body(UnsafeRawBufferPointer(start: buffer + start, count: end - start), end - start)
                }
                return
            }
            // Move the partial line to the front and read more.
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
    var text = line + "\n"
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
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
