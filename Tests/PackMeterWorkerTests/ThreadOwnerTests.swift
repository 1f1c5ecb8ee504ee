import Foundation
import PackMeterCore
import Testing
@testable import PackMeterWorker

/// Single-threaded state says so with a check, not only a comment.
@Suite("Thread ownership is checked in debug builds")
struct ThreadOwnerTests {
    @Test func theOwningThread_passesTheCheck_everyTime() {
        let owner = ThreadOwner("test object")
        for _ in 0..<3 { owner.check() }
    }

    #if DEBUG
    /// The trap is an assertion failure: SIGILL, where an ordinary failure would exit 1.
    @Test func anotherThread_trapsOnTheCheck() async {
        await #expect(processExitsWith: .signal(SIGILL)) {
            let ledger = OutputLedger(topics: OutputTopics(overage: "o", deadLetters: "d"))
            ledger.raise(to: [:])
            let other = Thread { ledger.raise(to: [:]) }
            other.start()
            usleep(10_000_000)
        }
    }
    #endif
}
