import Foundation
import Logging
import ServiceLifecycle

/// The worker as a swift-service-lifecycle `Service`: SIGTERM or SIGINT (through the
/// `ServiceGroup`) asks it to finish the batch in hand, checkpoint, commit and leave the
/// group; `run` returns once it has. The blocking loop runs on a thread of its own.
public struct WorkerService: Service {
    public let worker: StreamingWorker

    public init(worker: StreamingWorker) {
        self.worker = worker
    }

    public func run() async throws {
        let worker = self.worker
        try await withGracefulShutdownHandler {
            // A stop signal that came before the service group listened.
            if EarlyStop.wasRequested { worker.requestStop() }
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                let thread = Thread {
                    do {
                        try worker.run()
                        continuation.resume()
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
                thread.name = "packmeter-worker"
                thread.stackSize = 16 << 20
                thread.start()
            }
        } onGracefulShutdown: {
            worker.requestStop()
        }
    }
}
