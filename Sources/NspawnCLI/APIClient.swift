import Dispatch
import FoundationEssentials
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// nspawnd over its unix socket: one HTTP/1.1 request per connection, blocking, on a worker
/// thread. Used when the caller is not root (or says --api), so the same commands work for
/// members of group nspawn.
struct APIClient: MachineService {
    static let defaultSocket = "/run/nspawnd/nspawnd.sock"
    var socketPath: String

    init(socketPath: String = ProcessInfo.processInfo.environment["NSPAWND_SOCKET"] ?? APIClient.defaultSocket) {
        self.socketPath = socketPath
    }

    // MARK: MachineService

    func list(includeHidden: Bool) async throws -> [MachineSummary] {
        try decode([MachineSummary].self, try await call("GET", "/v1/machines"))
    }

    func status(_ name: MachineName) async throws -> MachineStatus {
        try decode(MachineStatus.self, try await call("GET", "/v1/machines/\(name)"))
    }

    func start(_ name: MachineName) async throws { _ = try await call("POST", "/v1/machines/\(name)/start") }

    func stop(_ name: MachineName, timeout: Duration) async throws {
        _ = try await call("POST", "/v1/machines/\(name)/stop", body: ["timeout": .number(timeout.seconds)])
    }

    func reboot(_ name: MachineName) async throws { _ = try await call("POST", "/v1/machines/\(name)/reboot") }
    func terminate(_ name: MachineName) async throws { _ = try await call("POST", "/v1/machines/\(name)/terminate") }

    func kill(_ name: MachineName, signal: UnixSignal, whom: KillWhom) async throws {
        _ = try await call("POST", "/v1/machines/\(name)/kill",
                           body: ["signal": .text(String(signal.number)), "whom": .text(whom == .leader ? "leader" : "all")])
    }

    func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws {
        _ = try await call("DELETE", "/v1/images/\(name)", body: ["force": .flag(force)])
    }

    func rename(_ name: MachineName, to newName: MachineName) async throws {
        _ = try await call("POST", "/v1/images/\(name)/rename", body: ["name": .text(newName.rawValue)])
    }

    func clone(_ name: MachineName, to newName: MachineName, readOnly: Bool) async throws {
        _ = try await call("POST", "/v1/images/\(name)/clone", body: ["name": .text(newName.rawValue), "read_only": .flag(readOnly)])
    }

    /// Follows /v1/events, calling `body` with each event's JSON until the stream ends.
    func followEvents(_ body: @escaping @Sendable (String) -> Void) async throws {
        let socketPath = socketPath
        try await OffThread.run {
            let connection = try Connection(path: socketPath)
            try connection.send(Self.requestText("GET", "/v1/events", body: nil))
            let (status, headers) = try connection.readHead()
            guard status == 200 else {
                throw Self.error(status: status, body: try connection.readBody(headers: headers), socketPath: socketPath)
            }
            // Chunked or until close; either way SSE lines, one "data:" line per event.
            var pending: [UInt8] = []
            let chunked = headers["transfer-encoding"]?.lowercased() == "chunked"
            while let bytes = try (chunked ? connection.readChunk() : connection.readSome()) {
                pending += bytes
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    if line.hasPrefix("data: ") { body(String(line.dropFirst(6))) }
                }
            }
        }
    }

    // MARK: Transport

    enum JSONValue: Encodable {
        case text(String), number(Double), flag(Bool)
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let value): try container.encode(value)
            case .number(let value): try container.encode(value)
            case .flag(let value): try container.encode(value)
            }
        }
    }

    func call(_ method: String, _ path: String, body: [String: JSONValue]? = nil) async throws -> [UInt8] {
        let socketPath = socketPath
        let payload = try body.map { Array(try WireJSON.encoder(pretty: false).encode($0)) }
        return try await OffThread.run {
            let connection = try Connection(path: socketPath)
            try connection.send(Self.requestText(method, path, body: payload))
            let (status, headers) = try connection.readHead()
            let responseBody = try connection.readBody(headers: headers)
            guard (200..<300).contains(status) else { throw Self.error(status: status, body: responseBody, socketPath: socketPath) }
            return responseBody
        }
    }

    static func requestText(_ method: String, _ path: String, body: [UInt8]?) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: nspawnd\r\nConnection: close\r\nAccept: application/json\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        return Array((head + "\r\n").utf8) + (body ?? [])
    }

    /// The daemon's JSON error as an NspawnError of the same category, so exit codes match.
    static func error(status: Int, body: [UInt8], socketPath: String) -> NspawnError {
        if let decoded = try? WireJSON.decoder().decode(ErrorBody.self, from: Data(body)),
           let category = NspawnError.Category(rawValue: decoded.error.code) {
            return .remote(category, message: decoded.error.message, busError: decoded.error.busError)
        }
        return .failed("nspawnd at \(socketPath) answered HTTP \(status) without an error body")
    }

    func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8]) throws -> T {
        do {
            return try WireJSON.decoder().decode(T.self, from: Data(body))
        } catch {
            throw NspawnError.malformedReply("nspawnd's \(T.self): \(error)")
        }
    }

    /// One connected unix stream socket with a small read buffer.
    final class Connection {
        let fd: Int32
        var buffer: [UInt8] = []

        init(path: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw NspawnError.failed("cannot create a socket: \(String(cString: strerror(errno)))") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                throw NspawnError.invalidArgument("socket path '\(path)' is too long")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { for (i, b) in bytes.enumerated() { $0[i] = b } }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if connected != 0 {
                let code = errno
                close(fd)
                if code == EACCES || code == EPERM {
                    throw NspawnError.remote(.permissionDenied, message: "permission denied: cannot connect to nspawnd at \(path); join group 'nspawn' or run as root", busError: nil)
                }
                throw NspawnError.failed("cannot connect to nspawnd at \(path): \(String(cString: strerror(code))); is nspawnd.socket enabled?")
            }
        }

        deinit { close(fd) }

        func send(_ bytes: [UInt8]) throws {
            var offset = 0
            while offset < bytes.count {
                let count = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if count < 0 { if errno == EINTR { continue }; throw NspawnError.failed("writing to nspawnd: \(String(cString: strerror(errno)))") }
                offset += count
            }
        }

        /// More bytes into the buffer; false at end of stream.
        private func fill() throws -> Bool {
            var chunk = [UInt8](repeating: 0, count: 16 * 1024)
            while true {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 { if errno == EINTR { continue }; throw NspawnError.failed("reading from nspawnd: \(String(cString: strerror(errno)))") }
                if count == 0 { return false }
                buffer += chunk[..<count]
                return true
            }
        }

        func readLine() throws -> String {
            while true {
                if let newline = buffer.firstIndex(of: 0x0A) {
                    var line = Array(buffer[..<newline])
                    buffer.removeSubrange(...newline)
                    if line.last == 0x0D { line.removeLast() }
                    return String(decoding: line, as: UTF8.self)
                }
                guard buffer.count < 64 * 1024, try fill() else { throw NspawnError.malformedReply("nspawnd closed the connection mid-response") }
            }
        }

        func readHead() throws -> (Int, [String: String]) {
            let statusLine = try readLine()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
                throw NspawnError.malformedReply("nspawnd's status line '\(statusLine.escapedForTerminal)'")
            }
            var headers: [String: String] = [:]
            while true {
                let line = try readLine()
                if line.isEmpty { break }
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmedWhitespace
            }
            return (status, headers)
        }

        func readBody(headers: [String: String]) throws -> [UInt8] {
            if let length = headers["content-length"].flatMap({ Int($0) }) {
                guard length <= 64 * 1024 * 1024 else { throw NspawnError.malformedReply("nspawnd's body of \(length) bytes") }
                while buffer.count < length {
                    guard try fill() else { throw NspawnError.malformedReply("nspawnd closed the connection mid-body") }
                }
                let body = Array(buffer[..<length])
                buffer.removeSubrange(..<length)
                return body
            }
            while try fill() {}
            defer { buffer.removeAll() }
            return buffer
        }

        /// Whatever arrived next, or nil at end of stream.
        func readSome() throws -> [UInt8]? {
            if buffer.isEmpty, try !fill() { return nil }
            defer { buffer.removeAll() }
            return buffer
        }

        /// The next chunk of a chunked body, or nil after the last one.
        func readChunk() throws -> [UInt8]? {
            let sizeLine = try readLine()
            guard let size = Int(sizeLine.prefix { $0 != ";" }, radix: 16) else {
                throw NspawnError.malformedReply("nspawnd's chunk size '\(sizeLine.escapedForTerminal)'")
            }
            if size == 0 { return nil }
            while buffer.count < size + 2 {
                guard try fill() else { return nil }
            }
            let chunk = Array(buffer[..<size])
            buffer.removeSubrange(..<(size + 2))
            return chunk
        }
    }
}

/// Blocking socket work off Swift's cooperative pool.
enum OffThread {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }
}

extension String {
    var escapedForTerminal: String {
        String(String.UnicodeScalarView(unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : $0 }))
    }
}
