import Foundation

// A minimal HTTP/1.1 client over loopback sockets, for tests that talk to packmeter's
// HTTP server without pulling an HTTP client library into the test targets.

/// A loopback TCP port nobody listens on now.
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            precondition(bind(fd, pointer, length) == 0, "bind: \(errno)")
            precondition(getsockname(fd, pointer, &length) == 0, "getsockname: \(errno)")
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A response as the tests read it.
public struct HTTPReply: Sendable {
    public var status: Int
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: String
}

/// One request over loopback (`Connection: close`); nil if nothing answers within `timeout`.
public func httpRequest(address: String, path: String, method: String = "GET", timeout: Int = 2) -> HTTPReply? {
    let request = Array("\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n\r\n".utf8)
    return httpExchange(address: address, sending: request, timeout: timeout).flatMap(parseReply)
}

/// `GET path`: status and body, or nil.
public func httpGet(address: String, path: String, timeout: Int = 2) -> (status: Int, body: String)? {
    httpRequest(address: address, path: path, timeout: timeout).map { ($0.status, $0.body) }
}

/// The status, headers and body of a response's text.
public func parseReply(_ text: String) -> HTTPReply? {
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    let lines = text[..<split.lowerBound].split(separator: "\r\n")
    guard let statusLine = lines.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return HTTPReply(status: status, headers: headers, body: String(text[split.upperBound...]))
}

/// Raw bytes to `address`, and whatever comes back until the server closes or `timeout`.
public func httpExchange(address: String, sending bytes: [UInt8], timeout: Int = 2) -> String? {
    guard let fd = connectLoopback(address, timeout: timeout) else { return nil }
    defer { close(fd) }
    guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { return nil }
    return receiveAll(fd)
}

/// A connected socket to `HOST:PORT` with send and receive timeouts, or nil.
public func connectLoopback(_ address: String, timeout: Int = 2) -> Int32? {
    let parts = address.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { return nil }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var wait = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
    var target = sockaddr_in()
    target.sin_family = sa_family_t(AF_INET)
    target.sin_addr.s_addr = inet_addr(String(parts[0]))
    target.sin_port = port.bigEndian
    let connected = withUnsafePointer(to: &target) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// Everything `fd` receives until the peer closes or the receive timeout passes.
public func receiveAll(_ fd: Int32) -> String {
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    return String(decoding: response, as: UTF8.self)
}
