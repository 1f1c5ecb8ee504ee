/// A fatal condition of the worker, with the reason an operator needs.
public struct WorkerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
