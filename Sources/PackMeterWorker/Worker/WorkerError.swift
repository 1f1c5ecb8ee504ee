/// A condition that stops the worker, with the reason an operator needs.
public struct WorkerError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// Found at run time, but the fix is in the command line (exit status 2).
        case configuration
        /// A fatal failure (exit status 1).
        case runtime
    }

    public let message: String
    public let kind: Kind

    public init(_ message: String, kind: Kind = .runtime) {
        self.message = message
        self.kind = kind
    }

    public var description: String { message }
}
