import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import PackMeterCore
import ServiceLifecycle

/// A request the server hands to its `HTTPRoutes`: GET or HEAD (others are answered 405
/// before they get there), with the path and query split.
struct HTTPRequest: Sendable {
    var path: String
    var query: [String: String]
    /// Passed on by another worker of the group (`WorkerAPI.forwardedHeader`).
    var isForwarded = false
}

/// A response: status, content type and body (HEAD gets the head only).
struct HTTPResponse: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: String
    var headers: [(String, String)] = []

    /// The one error shape of the API: `{"error":{"code":"…","message":"…"}}`.
    static func error(_ status: HTTPResponseStatus, code: String, _ message: String, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json",
                     body: "{\"error\":{\"code\":\(jsonString(code)),\"message\":\(jsonString(message))}}\n", headers: headers)
    }

    static func json(_ body: String, status: HTTPResponseStatus = .ok) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: body + "\n")
    }
}

/// Answers requests. `respond` may call `answer` later and from any thread, exactly once.
protocol HTTPRoutes: Sendable {
    func respond(to request: HTTPRequest, answer: @escaping @Sendable (HTTPResponse) -> Void)
}

/// The limits of the HTTP server.
struct HTTPServerLimits: Sendable {
    /// Connections beyond this many are closed as soon as they are accepted.
    var connectionsMax = 512
    /// A connection with no request in flight that sends nothing for this long is closed.
    var idleTimeoutSeconds: Int64 = 15
    /// A request whose answer takes longer is answered 503.
    var answerTimeoutSeconds: Int64 = 5
}

/// An HTTP/1.1 server on swift-nio: many connections at once on one event loop, keep-alive,
/// a bound on connections, an idle timeout per connection and a deadline per answer, so a
/// slow or idle client never delays another. Runs as a swift-service-lifecycle `Service`.
final class HTTPServer: Service, Sendable {
    let address: SocketAddress
    private let channel: Channel
    private let group: MultiThreadedEventLoopGroup
    private let connections: ConnectionTracker
    private let logger: Logger

    /// Binds `host:port` (port 0: any free port; `address` tells which).
    static func bind(host: String, port: Int, routes: HTTPRoutes, limits: HTTPServerLimits = HTTPServerLimits(),
                     logger: Logger) async throws -> HTTPServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connections = ConnectionTracker(limit: limits.connectionsMax)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard connections.admit(channel) else { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: .seconds(limits.idleTimeoutSeconds)),
                        HTTPRequestHandler(routes: routes, answerTimeout: .seconds(limits.answerTimeoutSeconds)),
                    ])
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            return HTTPServer(channel: channel, group: group, connections: connections, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(channel: Channel, group: MultiThreadedEventLoopGroup, connections: ConnectionTracker, logger: Logger) {
        self.channel = channel
        self.address = channel.localAddress!
        self.group = group
        self.connections = connections
        self.logger = logger
    }

    /// Serves until the service group shuts down gracefully, then closes every connection.
    func run() async throws {
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: { [channel] in
            channel.close(promise: nil)
        }
        await connections.closeAll()
        try await group.shutdownGracefully()
    }

    /// Stops serving (for tests and for a failed start).
    func close() async {
        try? await channel.close()
        await connections.closeAll()
        try? await group.shutdownGracefully()
    }
}

/// The open connections: admits a new one while there are fewer than the limit.
private final class ConnectionTracker: Sendable {
    private let open = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func admit(_ channel: Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let admitted = open.withLockedValue { open -> Bool in
            guard open.count < limit else { return false }
            open[id] = channel
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [open] _ in _ = open.withLockedValue { $0.removeValue(forKey: id) } }
        }
        return admitted
    }

    func closeAll() async {
        let channels = open.withLockedValue { Array($0.values) }
        for channel in channels { try? await channel.close() }
    }
}

/// One connection's requests, answered in order (NIO's pipelining handler holds back the
/// next request until the response in hand is written).
private final class HTTPRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: HTTPRoutes
    private let answerTimeout: TimeAmount
    private var head: HTTPRequestHead?
    /// Which answer the connection waits for; a late answer to an earlier one is dropped.
    private var inFlight: UInt64 = 0
    private var answered: UInt64 = 0

    init(routes: HTTPRoutes, answerTimeout: TimeAmount) {
        self.routes = routes
        self.answerTimeout = answerTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(requestHead):
            head = requestHead
        case .body:
            break
        case .end:
            guard let requestHead = head else { return }
            head = nil
            dispatch(requestHead, context: context)
        }
    }

    private func dispatch(_ requestHead: HTTPRequestHead, context: ChannelHandlerContext) {
        guard requestHead.method == .GET || requestHead.method == .HEAD else {
            write(.error(.methodNotAllowed, code: "method_not_allowed", "only GET and HEAD are served", headers: [("Allow", "GET, HEAD")]),
                  for: requestHead, context: context)
            return
        }
        inFlight += 1
        let number = inFlight
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let timeout = loop.scheduleTask(in: answerTimeout) {
            let (handler, context) = bound.value
            handler.deliver(.error(.serviceUnavailable, code: "timeout", "no answer in time; try again", headers: [("Retry-After", "1")]),
                            number: number, head: requestHead, context: context)
        }
        routes.respond(to: Self.request(requestHead)) { response in
            loop.execute {
                timeout.cancel()
                let (handler, context) = bound.value
                handler.deliver(response, number: number, head: requestHead, context: context)
            }
        }
    }

    private func deliver(_ response: HTTPResponse, number: UInt64, head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard number == inFlight, answered < number, context.channel.isActive else { return }
        answered = number
        write(response, for: head, context: context)
    }

    private func write(_ response: HTTPResponse, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.utf8.count)")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
        }
        let written = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
        if !keepAlive { written.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Idle: nothing read for the idle timeout. A connection waiting for its answer stays.
        if event is IdleStateHandler.IdleStateEvent, answered == inFlight, head == nil {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private static func request(_ head: HTTPRequestHead) -> HTTPRequest {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [String: String] = [:]
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                query[key] = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            }
        }
        return HTTPRequest(path: String(parts.first ?? ""), query: query,
                           isForwarded: head.headers.contains(name: WorkerAPI.forwardedHeader))
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopPromise<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise
    }
}

/// `"…"` with JSON escapes.
func jsonString(_ text: String) -> String {
    let w = ByteWriter(capacity: text.utf8.count + 8)
    w.append(jsonString: text)
    return w.string
}
