import Dispatch
import Foundation
import HTTPTestClient
import Logging
import NIOHTTP1
import Testing
@testable import PackMeterWorker

/// Routes for the server's tests: `/fast` answers at once, `/slow` after a while (as a
/// balance query waits for the worker thread), `/never` not at all.
struct TestRoutes: HTTPRoutes {
    var slowSeconds = 2.0

    func respond(to request: HTTPRequest, answer: @escaping @Sendable (HTTPResponse) -> Void) {
        switch request.path {
        case "/fast":
            answer(.json("{\"fast\":true,\"q\":\(jsonString(request.query["q"] ?? ""))}"))
        case "/slow":
            DispatchQueue.global().asyncAfter(deadline: .now() + slowSeconds) { answer(.json("{\"slow\":true}")) }
        case "/never":
            break
        default:
            answer(.error(.notFound, code: "not_found", "no such path"))
        }
    }
}

@Suite("HTTP server: slow and idle clients never hold up another")
struct HTTPServerTests {
    func withServer(_ limits: HTTPServerLimits = HTTPServerLimits(), _ body: (String) async throws -> Void) async throws {
        let server = try await HTTPServer.bind(host: "127.0.0.1", port: 0, routes: TestRoutes(), limits: limits,
                                               logger: Logger(label: "test"))
        let address = "127.0.0.1:\(server.address.port!)"
        do {
            try await body(address)
        } catch {
            await server.close()
            throw error
        }
        await server.close()
    }

    /// What the old one-connection-at-a-time endpoint failed: one idle client delayed
    /// every health check by its 5 s read timeout.
    @Test func idleConnections_andSlowAnswers_doNotDelayAFastOne() async throws {
        try await withServer { address in
            let idle = (0..<100).compactMap { _ in connectLoopback(address) }
            defer { idle.forEach { close($0) } }
            #expect(idle.count == 100)
            // 20 slow requests in flight on their own threads.
            let slow = DispatchGroup()
            for _ in 0..<20 {
                DispatchQueue.global().async(group: slow) { _ = httpGet(address: address, path: "/slow", timeout: 5) }
            }
            try await Task.sleep(for: .milliseconds(200))
            var worst = 0.0
            for _ in 0..<20 {
                let started = Date()
                let reply = httpGet(address: address, path: "/fast")
                worst = max(worst, Date().timeIntervalSince(started))
                #expect(reply?.status == 200)
            }
            #expect(worst < 0.5, "a fast request took \(worst) s behind idle and slow ones")
            slow.wait()
        }
    }

    @Test func head_getsTheHeadOnly_otherMethods_get405WithAllow() async throws {
        try await withServer { address in
            let get = try #require(httpRequest(address: address, path: "/fast"))
            let head = try #require(httpRequest(address: address, path: "/fast", method: "HEAD"))
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(head.headers["content-length"] == get.headers["content-length"])
            for method in ["POST", "PUT", "DELETE", "PATCH"] {
                let reply = try #require(httpRequest(address: address, path: "/fast", method: method))
                #expect(reply.status == 405 && reply.headers["allow"] == "GET, HEAD", "\(method): \(reply)")
                #expect(reply.body.contains("\"code\":\"method_not_allowed\""))
            }
        }
    }

    @Test func errors_shareOneJSONShape() async throws {
        try await withServer { address in
            let reply = try #require(httpRequest(address: address, path: "/nowhere"))
            #expect(reply.status == 404 && reply.headers["content-type"] == "application/json")
            let object = try JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: [String: String]]
            #expect(object?["error"]?["code"] == "not_found" && object?["error"]?["message"] != nil, "\(reply.body)")
        }
    }

    @Test func garbageAndBinary_get400_andTheServerGoesOn() async throws {
        try await withServer { address in
            for junk in [Array("HELLO\r\n\r\n".utf8), [0x00, 0xFF, 0x13, 0x37, 0x0D, 0x0A, 0x0D, 0x0A], Array("GET / HTTP/9\r\n\r\n".utf8)] {
                let text = httpExchange(address: address, sending: junk) ?? ""
                #expect(text.isEmpty || text.hasPrefix("HTTP/1.1 400"), "\(junk): \(text)")
            }
            #expect(httpGet(address: address, path: "/fast")?.status == 200)
        }
    }

    @Test func anAnswerThatNeverComes_is503WithRetryAfter_atTheDeadline() async throws {
        var limits = HTTPServerLimits()
        limits.answerTimeoutSeconds = 1
        try await withServer(limits) { address in
            let started = Date()
            let reply = try #require(httpRequest(address: address, path: "/never", timeout: 5))
            #expect(reply.status == 503 && reply.headers["retry-after"] == "1")
            #expect(Date().timeIntervalSince(started) < 3)
        }
    }

    @Test func connectionsBeyondTheBound_areClosedAtOnce() async throws {
        var limits = HTTPServerLimits()
        limits.connectionsMax = 5
        try await withServer(limits) { address in
            let held = (0..<5).compactMap { _ in connectLoopback(address, timeout: 10) }
            #expect(held.count == 5)
            // Each is admitted for sure once it has been answered (it stays open: keep-alive).
            let request = Array("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            for fd in held {
                #expect(send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count)
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = recv(fd, &buffer, buffer.count, 0)
                #expect(n > 0 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 200"))
            }
            // The sixth is accepted and closed at once: no answer.
            #expect(httpGet(address: address, path: "/fast") == nil)
            held.forEach { close($0) }
            // Closed connections free their places.
            let deadline = Date().addingTimeInterval(5)
            var reply = httpGet(address: address, path: "/fast")
            while reply == nil && Date() < deadline {
                try await Task.sleep(for: .milliseconds(50))
                reply = httpGet(address: address, path: "/fast")
            }
            #expect(reply?.status == 200)
        }
    }

    @Test func anIdleConnection_isClosedAfterTheIdleTimeout() async throws {
        var limits = HTTPServerLimits()
        limits.idleTimeoutSeconds = 1
        try await withServer(limits) { address in
            let fd = try #require(connectLoopback(address, timeout: 10))
            defer { close(fd) }
            let started = Date()
            var byte: UInt8 = 0
            // recv returns 0 when the server closes the connection.
            #expect(recv(fd, &byte, 1, 0) == 0)
            let waited = Date().timeIntervalSince(started)
            #expect(waited > 0.5 && waited < 8, "closed after \(waited) s")
        }
    }

    @Test func keepAlive_servesSeveralRequestsOnOneConnection_inOrder() async throws {
        try await withServer { address in
            let fd = try #require(connectLoopback(address))
            defer { close(fd) }
            let requests = (1...3).map { "GET /fast?q=\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined() + "GET /fast?q=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let bytes = Array(requests.utf8)
            #expect(send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count)
            let text = receiveAll(fd)
            let order = text.matches(of: /"q":"(\d)"/).map { String($0.1) }
            #expect(order == ["1", "2", "3", "4"], "\(text)")
        }
    }
}
