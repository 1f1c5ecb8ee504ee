import Foundation

/// The thread a single-threaded object belongs to, checked in debug builds.
///
/// The worker's state (shards, ledger, checkpointer, status) has one writer, the worker
/// thread, and takes no locks. `ThreadOwner` turns that rule into a check: the object
/// records the thread that first asks, and every later `check()` traps if it runs on
/// another. In release builds `check()` compiles to nothing.
struct ThreadOwner: @unchecked Sendable {
    // Sound: the recorded thread is written once, before the object is shared, and only
    // read afterwards (debug builds only).
    private final class Box: @unchecked Sendable {
        var thread: pthread_t?
    }

    private let box = Box()
    let what: StaticString

    init(_ what: StaticString) {
        self.what = what
    }

    /// Traps (debug builds) unless called on the owning thread; the first call claims it.
    @inline(__always)
    func check(file: StaticString = #fileID, line: UInt = #line) {
        assert(isOwnerOrClaim(), "\(what) used off its owning thread", file: file, line: line)
    }

    private func isOwnerOrClaim() -> Bool {
        let current = pthread_self()
        guard let owner = box.thread else {
            box.thread = current
            return true
        }
        return pthread_equal(owner, current) != 0
    }
}
