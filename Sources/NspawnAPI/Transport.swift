import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One request as the client sends it.
public struct HTTPRequestMessage: Sendable, Equatable {
    public var method: String
    /// Path and query.
    public var target: String
    public var body: [UInt8]?
    /// The protocol to switch the connection to (`Connection: Upgrade`); nil closes it after
    /// the response.
    public var upgrade: String?

    public init(method: String, target: String, body: [UInt8]? = nil, upgrade: String? = nil) {
        self.method = method
        self.target = target
        self.body = body
        self.upgrade = upgrade
    }
}

/// One response: headers with lowercased names.
public struct HTTPResponseMessage: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// How requests reach nspawnd: a unix socket, ssh to another host, or (in tests) the router.
public protocol APITransport: Sendable {
    /// Who answers, for messages: "nspawnd at /run/nspawnd/nspawnd.sock", "nspawnd on HOST".
    var peerName: String { get }
    /// Sends `request` and reads the whole response. `wait` is how long the daemon may
    /// legitimately work on it (a stop's timeout); the client's own patience comes on top.
    func exchange(_ request: HTTPRequestMessage, wait: Duration) async throws -> HTTPResponseMessage
    /// Sends `request` and, on 200, hands over the body as it arrives until the server ends it.
    /// Any other status comes back whole, with an empty stream.
    func stream(_ request: HTTPRequestMessage) async throws -> (HTTPResponseMessage, AsyncThrowingStream<[UInt8], any Error>)
    /// Sends `request`, which asks to switch protocols. On `101 Switching Protocols` to the
    /// protocol it asked for, hands over the connection and the bytes already read past the
    /// response head; any other answer comes back whole and the connection is closed.
    func upgrade(_ request: HTTPRequestMessage, wait: Duration) async throws -> UpgradeOutcome
}

public enum UpgradeOutcome: Sendable {
    case switched(any ByteConnection, buffered: [UInt8])
    case answered(HTTPResponseMessage)
}

extension APITransport {
    public func upgrade(_ request: HTTPRequestMessage, wait: Duration) async throws -> UpgradeOutcome {
        throw NspawnError.failed("\(peerName) cannot carry a stream that switches protocols")
    }
}

/// A bidirectional byte stream to nspawnd: a connected socket, or ssh's end of a socket pair.
public protocol ByteConnection: AnyObject, Sendable {
    var descriptor: FileDescriptor { get }
    /// Why the stream ended before a whole response, when the other side can tell (ssh's own
    /// exit status and message); nil when it cannot.
    func failureAtEnd() -> NspawnError?
    func close()
}

/// Opens connections; one per request.
public protocol Connector: Sendable {
    var peerName: String { get }
    func connect() throws(NspawnError) -> any ByteConnection
}

/// HTTP/1.1 over a connector's byte streams: one request per connection (`Connection: close`),
/// bounded head and body, and a read that gives up after `patience` of silence beyond the
/// request's own wait.
public struct StreamTransport: APITransport {
    public static let maximumBody = 64 * 1024 * 1024
    public static let maximumHeadLine = 64 * 1024
    let connector: any Connector
    let patience: Duration

    public init(connector: any Connector, patience: Duration = StreamTransport.defaultPatience) {
        self.connector = connector
        self.patience = patience
    }

    /// `$NSPAWNCTL_API_TIMEOUT` seconds, else 30.
    public static var defaultPatience: Duration {
        if let text = ProcessInfo.processInfo.environment["NSPAWNCTL_API_TIMEOUT"], let seconds = Double(text), seconds > 0, seconds < 1e9 {
            return .milliseconds(Int64(seconds * 1000))
        }
        return .seconds(30)
    }

    public var peerName: String { connector.peerName }

    public func exchange(_ request: HTTPRequestMessage, wait: Duration) async throws -> HTTPResponseMessage {
        let (connector, silence) = (connector, patience + wait)
        return try await OSThread.run { () throws(NspawnError) in
            let reader = try HTTPReader(connector.connect(), peerName: connector.peerName, silence: silence)
            defer { reader.connection.close() }
            try reader.send(request)
            var response = try reader.readHead()
            response.body = try reader.readBody(response.headers)
            return response
        }
    }

    public func upgrade(_ request: HTTPRequestMessage, wait: Duration) async throws -> UpgradeOutcome {
        let (connector, silence) = (connector, patience + wait)
        return try await OSThread.run { () throws(NspawnError) -> UpgradeOutcome in
            let reader = try HTTPReader(connector.connect(), peerName: connector.peerName, silence: silence)
            do throws(NspawnError) {
                try reader.send(request)
                var head = try reader.readHead()
                guard head.status == 101 else {
                    head.body = try reader.readBody(head.headers)
                    reader.connection.close()
                    return .answered(head)
                }
                let offered = head.headers["upgrade"] ?? ""
                guard let wanted = request.upgrade, offered.lowercased() == wanted.lowercased() else {
                    throw .failed("\(connector.peerName) switched to '\(offered.prefix(80).escapedForMessage)', not to \(request.upgrade ?? "another protocol")")
                }
                return .switched(reader.connection, buffered: reader.takeBuffered())
            } catch {
                reader.connection.close()
                throw error
            }
        }
    }

    public func stream(_ request: HTTPRequestMessage) async throws -> (HTTPResponseMessage, AsyncThrowingStream<[UInt8], any Error>) {
        let connector = connector
        let patience = patience
        let (reader, head) = try await OSThread.run { () throws(NspawnError) -> (HTTPReader, HTTPResponseMessage) in
            let reader = try HTTPReader(connector.connect(), peerName: connector.peerName, silence: patience)
            do throws(NspawnError) {
                try reader.send(request)
                var head = try reader.readHead()
                if head.status != 200 {
                    head.body = try reader.readBody(head.headers)
                    reader.connection.close()
                }
                return (reader, head)
            } catch {
                reader.connection.close()
                throw error
            }
        }
        guard head.status == 200 else { return (head, AsyncThrowingStream { $0.finish() }) }
        // A stream has no end to wait for; heartbeats every 15 s keep a live one talking.
        reader.silence = patience + .seconds(15)
        let (chunks, sink) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let stopped = StopFlag()
        sink.onTermination = { _ in stopped.stop() }
        let headers = head.headers
        _ = OSThread {
            defer { reader.connection.close() }
            do throws(NspawnError) {
                while !stopped.isStopped, let chunk = try reader.readStreamChunk(headers) {
                    sink.yield(chunk)
                }
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
        return (head, chunks)
    }
}

/// Reads one HTTP/1.1 response from a connection, never trusting the peer: every line and
/// body is bounded and every read has a deadline.
final class HTTPReader: @unchecked Sendable {
    let connection: any ByteConnection
    let peerName: String
    var silence: Duration
    private var buffer: [UInt8] = []
    private var ended = false
    private var received = false

    init(_ connection: any ByteConnection, peerName: String, silence: Duration) {
        self.connection = connection
        self.peerName = peerName
        self.silence = silence
    }

    func send(_ request: HTTPRequestMessage) throws(NspawnError) {
        let connectionHeader = request.upgrade.map { "Connection: Upgrade\r\nUpgrade: \($0)" } ?? "Connection: close"
        var head = "\(request.method) \(request.target) HTTP/1.1\r\nHost: nspawnd\r\n\(connectionHeader)\r\nAccept: application/json\r\n"
        if let body = request.body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + (request.body ?? [])
        do throws(Errno) {
            try connection.descriptor.sendAll(bytes)
        } catch .brokenPipe, .connectionReset {
            // The peer hung up before reading it all; what it said first is still to be read.
        } catch {
            // The peer may have answered (and closed) before reading: ssh's refusal, for one.
            throw connection.failureAtEnd() ?? .system("cannot send a request to \(peerName)", error)
        }
    }

    /// What was read past the response head: the first bytes of a switched protocol.
    func takeBuffered() -> [UInt8] {
        defer { buffer.removeAll() }
        return buffer
    }

    /// More bytes into the buffer; false at end of stream.
    private func fill() throws(NspawnError) -> Bool {
        if ended { return false }
        do {
            guard try connection.descriptor.waitReadable(timeout: silence) else {
                throw NspawnError.failed("\(peerName) sent nothing for \(silence.seconds.formatted) s; giving up")
            }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let count = try chunk.withUnsafeMutableBytes { try connection.descriptor.read(into: $0, retryOnInterrupt: true) }
            if count == 0 {
                ended = true
                return false
            }
            buffer += chunk[..<count]
            received = true
            return true
        } catch let error as NspawnError {
            throw error
        } catch let error as Errno {
            // ssh that gave up leaves our unread request behind, so the stream ends in a reset.
            throw connection.failureAtEnd() ?? .system("cannot read from \(peerName)", error)
        } catch {
            throw .failed("cannot read from \(peerName): \(error)")
        }
    }

    /// Where the stream ended too early: ssh's own explanation when there is one.
    private func truncated(_ what: String) -> NspawnError {
        connection.failureAtEnd() ?? .failed("\(peerName) closed the connection \(what)")
    }

    private func readLine() throws(NspawnError) -> String {
        var searched = buffer.startIndex
        while true {
            if let newline = buffer[searched...].firstIndex(of: 0x0A) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            searched = buffer.count
            guard buffer.count <= StreamTransport.maximumHeadLine else {
                throw .failed("\(peerName) sent a header line longer than \(StreamTransport.maximumHeadLine) bytes")
            }
            guard try fill() else { throw truncated(received ? "mid-response" : "without answering") }
        }
    }

    func readHead() throws(NspawnError) -> HTTPResponseMessage {
        let statusLine = try readLine()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            throw .failed("\(peerName) answered '\(statusLine.prefix(80).escapedForMessage)', which is not HTTP")
        }
        var headers: [String: String] = [:]
        for count in 0... {
            let line = try readLine()
            if line.isEmpty { break }
            guard count < 100 else { throw .failed("\(peerName) sent more than 100 header lines") }
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmedWhitespace
        }
        guard headers[APILevel.header.lowercased()] == APILevel.current else {
            let level = headers[APILevel.header.lowercased()].map { "API level '\($0.prefix(40).escapedForMessage)'" } ?? "no API level"
            throw .remote(.unsupportedAPI, message: "\(peerName) speaks \(level); this nspawnctl speaks \(APILevel.current)", busError: nil)
        }
        return HTTPResponseMessage(status: status, headers: headers, body: [])
    }

    func readBody(_ headers: [String: String]) throws(NspawnError) -> [UInt8] {
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var body: [UInt8] = []
            while let chunk = try readChunk() {
                body += chunk
                guard body.count <= StreamTransport.maximumBody else { throw tooLarge() }
            }
            return body
        }
        if let text = headers["content-length"] {
            guard let length = Int(text), length >= 0 else { throw .failed("\(peerName) sent Content-Length '\(text.prefix(40).escapedForMessage)'") }
            guard length <= StreamTransport.maximumBody else { throw tooLarge() }
            while buffer.count < length {
                guard try fill() else { throw truncated("mid-body") }
            }
            return Array(buffer[..<length])
        }
        while try fill() {
            guard buffer.count <= StreamTransport.maximumBody else { throw tooLarge() }
        }
        return buffer
    }

    private func tooLarge() -> NspawnError {
        .failed("\(peerName) sent a body larger than \(StreamTransport.maximumBody / 1024 / 1024) MiB")
    }

    /// The next piece of a streamed body, nil at its end.
    func readStreamChunk(_ headers: [String: String]) throws(NspawnError) -> [UInt8]? {
        if headers["transfer-encoding"]?.lowercased() == "chunked" { return try readChunk() }
        if buffer.isEmpty, try !fill() { return nil }
        defer { buffer.removeAll() }
        return buffer
    }

    private func readChunk() throws(NspawnError) -> [UInt8]? {
        let sizeLine = try readLine()
        guard let size = Int(sizeLine.prefix { $0 != ";" }.trimmedWhitespace, radix: 16), size >= 0, size <= StreamTransport.maximumBody else {
            throw .failed("\(peerName) sent the chunk size '\(sizeLine.prefix(40).escapedForMessage)'")
        }
        while buffer.count < size + 2 {
            guard try fill() else { throw truncated("mid-chunk") }
        }
        let chunk = Array(buffer[..<size])
        buffer.removeSubrange(..<(size + 2))
        if size == 0 { return nil }
        return chunk
    }
}

extension Substring {
    var escapedForMessage: String { String(self).escapedForMessage }
    var trimmedWhitespace: String { String(self).trimmedWhitespace }
}
