import AsyncHTTPClient
import Foundation
import NIOCore
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

    /// Marks a balance query one worker passes to another: answered from the receiver's own
    /// partitions, never passed on again.
    static let forwardedHeader = "X-Packmeter-Forwarded"
    /// How long a worker waits for the others' answers to a query it passed on.
    static let forwardTimeout = TimeAmount.seconds(2)

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
        let (worker, path) = (self.worker, request.path + (request.query["month"].map { "?month=\($0)" } ?? ""))
        let forwarded = request.isForwarded
        worker.balances(account: account, month: month) { balances in
            if let balances {
                answer(.json(balances.json(calendar: calendar)))
            } else if !forwarded, let members = worker.members.withLock({ $0 }) {
                Task { answer(await Self.askTheGroup(path: path, account: account, worker: worker, members: members)) }
            } else {
                answer(.error(.notFound, code: "account_not_found", "account '\(account)' has no state on this worker's partitions"))
            }
        }
    }

    /// Passes a balance query this worker's partitions cannot answer to the other workers of
    /// the group, all at once, and relays the first that knows the account. When none does:
    /// 404 if every input partition has an owner that answered, else 503 with
    /// `Retry-After` (a rebalance is under way, or an owner did not answer).
    static func askTheGroup(path: String, account: String, worker: StreamingWorker, members: MemberDirectory) async -> HTTPResponse {
        let status = worker.currentStatus
        let peers = members.peers(nowMs: wallClockMs())
        var covered = Set(status.assignedPartitions)
        let found = await withTaskGroup(of: (MemberDirectory.Member, HTTPResponse?).self) { group -> HTTPResponse? in
            for peer in peers where !peer.partitions.isEmpty {
                group.addTask { (peer, await ask(peer, path: path)) }
            }
            for await (peer, response) in group {
                guard let response else { continue }
                if response.status == .ok {
                    group.cancelAll()
                    return response
                }
                if response.status == .notFound { covered.formUnion(peer.partitions) }
            }
            return nil
        }
        if let found { return found }
        let unowned = (0..<Int32(status.inputPartitions)).filter { !covered.contains($0) }
        guard unowned.isEmpty else {
            return .error(.serviceUnavailable, code: "partition_unowned",
                          "account '\(account)' is not on this worker's partitions, and partitions \(unowned) have no owner that answers (a rebalance in progress?); try again",
                          headers: [("Retry-After", "1")])
        }
        return .error(.notFound, code: "account_not_found", "account '\(account)' has no state on any partition of the group")
    }

    /// One worker's answer to a passed-on query: 200 with the balances, 404, or nil when it
    /// did not answer in time or answered something else.
    private static func ask(_ peer: MemberDirectory.Member, path: String) async -> HTTPResponse? {
        var request = HTTPClientRequest(url: peer.url + path)
        request.headers.add(name: forwardedHeader, value: "1")
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: forwardTimeout)
            let body = try await response.body.collect(upTo: 1 << 20)
            switch response.status {
            case .ok: return .json(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines))
            case .notFound: return .error(.notFound, code: "account_not_found", "")
            default: return nil
            }
        } catch {
            return nil
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
