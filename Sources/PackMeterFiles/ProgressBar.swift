#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A progress line on standard error (`demo`, `replay`). On a terminal it is redrawn in
/// place, at most every `terminalInterval` seconds; anywhere else (a log file, a CI job)
/// each update is a whole line, at most every `lineInterval` seconds, so that a log keeps
/// readable lines rather than one endless line of carriage returns.
public struct ProgressBar {
    public let toTerminal: Bool
    public static let terminalInterval = 0.2
    public static let lineInterval = 5.0
    private let write: (String) -> Void
    private var lastDraw = -Double.infinity
    private var lineOpen = false

    public init(toTerminal: Bool = isatty(STDERR_FILENO) != 0,
                write: @escaping (String) -> Void = writeError) {
        self.toTerminal = toTerminal
        self.write = write
    }

    /// `[#########.....................]` for `done` of `total`.
    public static func bar(done: Int64, total: Int64, width: Int = 30) -> String {
        let filled = total <= 0 ? width : Int(min(Int64(width), max(0, Int64(width) * done / total)))
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
    }

    /// Shows the line `text` makes unless the previous update is too recent; `force` shows
    /// it anyway (the last update of a run). `text` is only called when the line is shown,
    /// so callers may ask as often as they like.
    public mutating func draw(now: Double = monotonicSeconds(), force: Bool = false, _ text: () -> String) {
        guard force || now - lastDraw >= (toTerminal ? Self.terminalInterval : Self.lineInterval) else { return }
        lastDraw = now
        if toTerminal {
            write("\r" + text() + " ")
            lineOpen = true
        } else {
            write(text() + "\n")
        }
    }

    /// Ends the line drawn in place, if any, so that what follows starts on a line of its own.
    public mutating func finish() {
        if lineOpen { write("\n") }
        lineOpen = false
    }
}
