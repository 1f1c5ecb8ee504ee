import Glibc
import Synchronization

/// SIGTERM or SIGINT that arrives before the worker's service group listens for them
/// (while the process starts) would otherwise end the process at once, with nothing
/// checkpointed and exit status -15. `install()` at the start of `main` notes such a
/// signal instead, and the worker stops at its first chance (`WorkerService`).
public enum EarlyStop {
    private static let received = Atomic<Bool>(false)

    /// Catches the stop signals until the service group replaces this handler with its own.
    public static func install() {
        for signal in [SIGTERM, SIGINT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in EarlyStop.received.store(true, ordering: .relaxed) }
            sigemptyset(&action.sa_mask)
            sigaction(signal, &action, nil)
        }
    }

    /// Gives the stop signals their default action back (commands that are not workers); one
    /// that arrived meanwhile takes effect now.
    public static func uninstall() {
        signal(SIGTERM, SIG_DFL)
        signal(SIGINT, SIG_DFL)
        if wasRequested { raise(SIGTERM) }
    }

    /// Whether a stop signal arrived before the service group took over.
    public static var wasRequested: Bool { received.load(ordering: .relaxed) }
}
