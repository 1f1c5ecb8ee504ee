import Foundation
import Glibc
import Logging
import PackMeterCore
import ServiceLifecycle

/// The worker's HTTP endpoint (docs/contract.md, HTTP): balances of an account, Prometheus
/// metrics, liveness and readiness. A small blocking HTTP/1.1 server on a thread of its
/// own, one request per connection; it reads the worker's published status, and asks the
/// worker thread for balances (answered between batches).
// Sound as `@unchecked Sendable`: `listener` is set in `run` before the serving thread starts
// and closed by the graceful-shutdown handler, which only wakes that thread's `accept`.
public final class HTTPEndpoint: Service, @unchecked Sendable {
    let worker: StreamingWorker
    let host: String
    let port: UInt16
    let logger: Logger
    private var listener: Int32 = -1

    /// `address` is `HOST:PORT`.
    public init(address: String, worker: StreamingWorker, logger: Logger) throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw WorkerError("--http '\(address)' is not HOST:PORT")
        }
        host = String(address[..<colon])
        self.port = port
        self.worker = worker
        self.logger = logger
        try bind()
    }

    private func bind() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WorkerError("--http: cannot create a socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            close(fd)
            throw WorkerError("--http: '\(host)' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw WorkerError("--http: cannot listen on \(host):\(port): \(why)")
        }
        listener = fd
    }

    public func run() async throws {
        let fd = listener
        logger.info("HTTP on http://\(host):\(port) (/v1/accounts/{account}/balances, /metrics, /healthz, /readyz)")
        await withGracefulShutdownHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    while true {
                        let client = accept(fd, nil, nil)
                        if client < 0 {
                            if errno == EINTR { continue }
                            break
                        }
                        handle(client)
                    }
                    continuation.resume()
                }
                thread.name = "packmeter-http"
                thread.start()
            }
        } onGracefulShutdown: {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    private func handle(_ client: Int32) {
        defer { close(client) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384 {
            let n = recv(client, &chunk, chunk.count, 0)
            if n <= 0 { break }
            request.append(contentsOf: chunk[0..<n])
            if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
            if let text = String(bytes: request, encoding: .utf8), text.contains("\r\n\r\n") { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let (status, type, body): (Int, String, String)
        if parts.count >= 2, parts[0] == "GET" {
            (status, type, body) = respond(to: String(parts[1]))
        } else {
            (status, type, body) = (405, "text/plain", "only GET is served\n")
        }
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][status] ?? "Error"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array((head + body).utf8)
        bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(client, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { break }
                sent += n
            }
        }
    }

    func respond(to target: String) -> (Int, String, String) {
        let pathAndQuery = target.split(separator: "?", maxSplits: 1)
        let path = String(pathAndQuery[0])
        let query = pathAndQuery.count > 1 ? String(pathAndQuery[1]) : ""
        switch path {
        case "/healthz":
            return (200, "text/plain", "ok\n")
        case "/readyz":
            let status = worker.currentStatus
            return status.isReady ? (200, "text/plain", "ready\n") : (503, "text/plain", "\(status.phase.rawValue)\n")
        case "/metrics":
            return (200, "text/plain; version=0.0.4", Metrics.text(worker.currentStatus))
        default:
            let pieces = path.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count == 5, pieces[1] == "v1", pieces[2] == "accounts", pieces[4] == "balances",
                  let account = String(pieces[3]).removingPercentEncoding, !account.isEmpty
            else { return (404, "text/plain", "not found; try /v1/accounts/{account}/balances, /metrics, /healthz, /readyz\n") }
            var month: BillingMonth?
            for pair in query.split(separator: "&") where pair.hasPrefix("month=") {
                guard let m = BillingMonth(String(pair.dropFirst(6))) else { return (400, "text/plain", "month must be YYYY-MM\n") }
                month = m
            }
            switch worker.balances(account: account, month: month) {
            case .none:
                return (503, "text/plain", "the worker did not answer in time\n")
            case .some(.none):
                return (404, "application/json", "{\"error\":\"account not found on this worker's partitions\"}\n")
            case let .some(.some(balances)):
                return (200, "application/json", balances.json(calendar: worker.options.engine.calendar) + "\n")
            }
        }
    }
}

/// The Prometheus text exposition of the worker's status.
enum Metrics {
    static func text(_ s: WorkerStatus) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            out += "# HELP packmeter_\(name) \(help)\n# TYPE packmeter_\(name) \(type)\n"
            for (labels, value) in samples { out += "packmeter_\(name)\(labels) \(value)\n" }
        }
        let c = s.counters
        metric("records_total", "counter", "Input records read, by outcome.", [
            ("{outcome=\"applied\"}", "\(c.applied)"), ("{outcome=\"duplicate\"}", "\(c.duplicates)"),
            ("{outcome=\"non_billable\"}", "\(c.nonBillable)"), ("{outcome=\"rejected\"}", "\(c.rejectedTotal)"),
        ])
        metric("dead_letters_total", "counter", "Rejected records, by reason.",
               RejectReason.allCases.map { ("{reason=\"\($0.rawValue)\"}", "\(c[$0])") })
        metric("calls_total", "counter", "Billable calls settled, by source.", [
            ("{source=\"free\"}", "\(c.callsFree)"), ("{source=\"prepaid\"}", "\(c.callsPrepaid)"), ("{source=\"overage\"}", "\(c.callsOverage)"),
        ])
        metric("overage_records_total", "counter", "Overage records produced.", [("", "\(c.overageRecords)")])
        metric("outputs_suppressed_total", "counter", "Outputs not produced again after a restart because they were already written.", [("", "\(s.outputsSuppressed)")])
        metric("records_lost_to_retention_total", "counter", "Input records that vanished from the broker before being billed.", [("", "\(s.recordsLostToRetention)")])
        metric("lag_records", "gauge", "Records behind the end of the assigned partitions.", [("", "\(s.lag)")])
        metric("assigned_partitions", "gauge", "Input partitions owned by this worker.", [("", "\(s.assignedPartitions.count)")])
        metric("accounts", "gauge", "Accounts known to this worker's engines.", [("", "\(s.accounts)")])
        metric("live_balances", "gauge", "Live (account, pack, month) balances.", [("", "\(s.liveBalances)")])
        metric("dedupe_remembered_ids", "gauge", "Event ids in the dedupe windows.", [("", "\(s.rememberedIDs)")])
        metric("dedupe_evictions_total", "counter", "Ids forgotten because a dedupe window was full.", [
            ("{month=\"any\"}", "\(s.dedupeEvictions)"), ("{month=\"open\"}", "\(s.dedupeEvictionsOpenMonth)"),
        ])
        metric("restore_seconds_total", "counter", "Time spent restoring partitions from checkpoints.", [("", "\(s.restoreSeconds)")])
        metric("readback_seconds_total", "counter", "Time spent reading back already-written outputs on (re)start.", [("", "\(s.recoverySeconds)")])
        metric("readback_records_total", "counter", "Output records scanned on (re)start.", [("", "\(s.recoveryRecordsScanned)")])
        metric("producer_queue_full_total", "counter", "Batches whose outputs waited for room in the producer's queue.", [("", "\(s.producerQueueFull)")])
        metric("fetch_wakeups_total", "counter", "Times fetchers parked by a full consumer queue were restarted.", [("", "\(s.fetchWakeups)")])
        metric("checkpoints_written_total", "counter", "Checkpoints written.", [("", "\(s.checkpointsWritten)")])
        metric("checkpoint_stall_seconds", "gauge", "How long the last checkpoint paused processing.", [("", "\(s.lastCheckpointStallMs / 1000)")])
        metric("checkpoint_stall_max_seconds", "gauge", "The longest checkpoint pause.", [("", "\(s.maxCheckpointStallMs / 1000)")])
        return out
    }
}
