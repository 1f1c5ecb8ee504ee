import Foundation
import NIOHTTP1
import PackMeterCore
import Logging
import PackMeterFiles
import ServiceLifecycle

/// The worker's HTTP API (docs/contract.md, HTTP): an account's balances, Prometheus metrics,
/// liveness and readiness. Health and metrics read the worker's published status and never
/// wait for the worker thread; balances are answered by it between batches.
struct WorkerAPI: HTTPRoutes {
    let worker: StreamingWorker

    static let paths = "/v1/accounts/{account}/balances, /metrics, /healthz, /readyz"

    func respond(to request: HTTPRequest, answer: @escaping @Sendable (HTTPResponse) -> Void) {
        switch request.path {
        case "/healthz":
            answer(health())
        case "/readyz":
            answer(readiness())
        case "/metrics":
            answer(HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                body: Metrics.text(worker.currentStatus, nowMs: wallClockMs())))
        default:
            balances(request, answer: answer)
        }
    }

    /// 200 while the worker's loop turns (or it stopped cleanly); 503 when it has not turned
    /// for `WorkerStatus.stuckAfterSeconds`.
    private func health() -> HTTPResponse {
        let status = worker.currentStatus
        let now = monotonicSeconds()
        let silent = now - status.updatedAt
        guard status.isAlive(now: now) else {
            return .error(.serviceUnavailable, code: "stuck", "the worker's loop has not turned for \(Int(silent)) s (phase \(status.phase.rawValue))")
        }
        return .json("{\"status\":\"alive\",\"phase\":\"\(status.phase.rawValue)\"}")
    }

    /// 200 only while the worker bills partitions of its own, restored and committed, with
    /// the brokers answering.
    private func readiness() -> HTTPResponse {
        let status = worker.currentStatus
        if let reason = status.notReadyBecause {
            return .error(.serviceUnavailable, code: "not_ready", reason, headers: [("Retry-After", "1")])
        }
        return .json("{\"status\":\"ready\",\"partitions\":\(status.assignedPartitions.count)}")
    }

    private func balances(_ request: HTTPRequest, answer: @escaping @Sendable (HTTPResponse) -> Void) {
        let pieces = request.path.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count == 5, pieces[0].isEmpty, pieces[1] == "v1", pieces[2] == "accounts", pieces[4] == "balances",
              let account = String(pieces[3]).removingPercentEncoding, !account.isEmpty
        else {
            answer(.error(.notFound, code: "not_found", "no such path; try \(Self.paths)"))
            return
        }
        var month: BillingMonth?
        if let text = request.query["month"] {
            guard let parsed = BillingMonth(text) else {
                answer(.error(.badRequest, code: "invalid_month", "month '\(text)' is not YYYY-MM"))
                return
            }
            month = parsed
        }
        guard worker.currentStatus.phase == .running else {
            answer(.error(.serviceUnavailable, code: "not_ready", "the worker is \(worker.currentStatus.phase.rawValue)",
                          headers: [("Retry-After", "1")]))
            return
        }
        let calendar = worker.options.engine.calendar
        worker.balances(account: account, month: month) { balances in
            guard let balances else {
                answer(.error(.notFound, code: "account_not_found", "account '\(account)' has no state on this worker's partitions"))
                return
            }
            answer(.json(balances.json(calendar: calendar)))
        }
    }
}

/// Starting the worker's HTTP server from `--http HOST:PORT`.
public enum WorkerHTTP {
    /// Binds the address and returns the server as a `Service`; throws `WorkerHTTPError`
    /// for an address that is not HOST:PORT or cannot be bound.
    public static func start(address: String, worker: StreamingWorker, logger: Logger) async throws -> any Service {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65_535).contains(port)
        else { throw WorkerHTTPError(message: "--http '\(address)' is not HOST:PORT") }
        let host = String(address[..<colon])
        let server: HTTPServer
        do {
            server = try await HTTPServer.bind(host: host, port: port, routes: WorkerAPI(worker: worker), logger: logger)
        } catch {
            throw WorkerHTTPError(message: "--http: cannot listen on \(address): \(error)")
        }
        logger.info("HTTP on http://\(server.address) (\(WorkerAPI.paths))")
        return server
    }
}

/// Why `--http` could not be served: a configuration error.
public struct WorkerHTTPError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
