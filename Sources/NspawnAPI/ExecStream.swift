import FoundationEssentials
import NspawnKit

/// `POST /v1/machines/{name}/exec`: the body says what to run, and once nspawnd answers
/// `101 Switching Protocols` the connection carries frames both ways until the command ends.
///
/// A frame is a 1-byte type, a 4-byte big-endian payload length and the payload, as Docker's
/// attach stream is framed (there with a 1-byte stream number and 3 bytes of padding). Types
/// 0-2 are the standard streams by their descriptor numbers, as in Docker.
public enum ExecStream {
    /// The `Upgrade` token: the protocol and its version, so a later change gets a new token.
    public static let upgradeToken = "nspawnctl-exec.v1"
    public static let headerSize = 5
    /// The largest payload either side accepts; senders cut data into frames no larger.
    public static let maximumPayload = 64 * 1024
}

/// The frame types on the wire. Each has one sender: nspawnd refuses a frame a client may not
/// send, and the client one nspawnd may not.
public enum ExecFrameType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Client: bytes for the command's stdin (ignored unless the request was `interactive`).
    case stdin = 0
    /// Server: bytes the command wrote to stdout (with a tty, its terminal's output).
    case stdout = 1
    /// Server: bytes the command wrote to stderr (never with a tty).
    case stderr = 2
    /// Server, last: how the command ended. 1 byte kind (0 exited, 1 killed by a signal), then
    /// the exit status or signal number as a 4-byte big-endian integer.
    case exit = 3
    /// Server, last: a failure after the switch, as the JSON error body of every other route.
    case error = 4
    /// Client: the end of stdin (empty payload); no stdin frame may follow.
    case stdinEnd = 5
    /// Client: the terminal's new size, rows then columns, each a 2-byte big-endian integer.
    case resize = 6
    /// Client: a signal for the command, its number as a 4-byte big-endian integer.
    case signal = 7

    public var sentByClient: Bool {
        switch self {
        case .stdin, .stdinEnd, .resize, .signal: true
        case .stdout, .stderr, .exit, .error: false
        }
    }

    public var description: String {
        switch self {
        case .stdin: "stdin"
        case .stdout: "stdout"
        case .stderr: "stderr"
        case .exit: "exit"
        case .error: "error"
        case .stdinEnd: "stdin-end"
        case .resize: "resize"
        case .signal: "signal"
        }
    }
}

/// One decoded frame.
public enum ExecFrame: Equatable, Sendable {
    case stdin([UInt8])
    case stdinEnd
    case resize(TerminalSize)
    case signal(Int32)
    case stdout([UInt8])
    case stderr([UInt8])
    case exit(ExitOutcome)
    case error(code: String, message: String)

    public var type: ExecFrameType {
        switch self {
        case .stdin: .stdin
        case .stdinEnd: .stdinEnd
        case .resize: .resize
        case .signal: .signal
        case .stdout: .stdout
        case .stderr: .stderr
        case .exit: .exit
        case .error: .error
        }
    }

    /// The error frame for `error`, with its category as the code, as an error response has.
    public static func error(_ error: NspawnError) -> ExecFrame {
        .error(code: error.category.rawValue, message: error.description)
    }

    /// The error an error frame reports, with its category.
    public var nspawnError: NspawnError? {
        guard case .error(let code, let message) = self else { return nil }
        return ErrorBody(code: code, message: message).nspawnError
    }

    /// The frame's bytes: header and payload. Data frames must fit `maximumPayload`; the
    /// senders cut their data to that size.
    public var encoded: [UInt8] {
        var payload: [UInt8]
        switch self {
        case .stdin(let bytes), .stdout(let bytes), .stderr(let bytes):
            precondition(bytes.count <= ExecStream.maximumPayload, "a data frame larger than the limit")
            payload = bytes
        case .stdinEnd:
            payload = []
        case .resize(let size):
            payload = Self.bigEndian(size.rows) + Self.bigEndian(size.columns)
        case .signal(let number):
            payload = Self.bigEndian(UInt32(bitPattern: number))
        case .exit(.exited(let code)):
            payload = [0] + Self.bigEndian(UInt32(bitPattern: code))
        case .exit(.signaled(let number)):
            payload = [1] + Self.bigEndian(UInt32(bitPattern: number))
        case .error(let code, let message):
            payload = (try? Array(WireJSON.encoder(pretty: false).encode(ErrorBody(code: code, message: message)))) ?? []
            if payload.count > ExecStream.maximumPayload {
                payload = (try? Array(WireJSON.encoder(pretty: false).encode(ErrorBody(code: code, message: String(message.prefix(4096)))))) ?? []
            }
        }
        return Self.header(type, length: payload.count) + payload
    }

    /// A header alone, for a sender that has the payload in a buffer of its own.
    public static func header(_ type: ExecFrameType, length: Int) -> [UInt8] {
        [type.rawValue] + bigEndian(UInt32(length))
    }

    static func bigEndian(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
    static func bigEndian(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)] }
}

/// Cuts a byte stream into frames, never trusting the peer: an unknown type, a type the peer
/// may not send, a length over the limit and a control payload of the wrong size are errors
/// (`invalidArgument`) as soon as the header arrives, before the payload is waited for.
public struct ExecFrameDecoder: Sendable {
    /// Who sends the frames this decoder reads.
    public enum Sender: Sendable {
        case client, server
    }

    public let sender: Sender
    private var buffer: [UInt8] = []
    private var start = 0

    public init(from sender: Sender) {
        self.sender = sender
    }

    public mutating func feed<Bytes: Collection<UInt8>>(_ bytes: Bytes) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Bytes received and not yet part of a whole frame.
    public var pendingCount: Int { buffer.count - start }

    /// The next whole frame, nil while one is still arriving.
    public mutating func next() throws(NspawnError) -> ExecFrame? {
        guard pendingCount >= ExecStream.headerSize else { return nil }
        let rawType = buffer[start]
        let length = Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8 | Int(buffer[start + 4])
        guard let type = ExecFrameType(rawValue: rawType) else {
            throw .invalidArgument("exec stream: unknown frame type \(rawType)")
        }
        guard type.sentByClient == (sender == .client) else {
            throw .invalidArgument("exec stream: a \(sender == .client ? "client" : "server") may not send \(type) frames (type \(rawType))")
        }
        guard length <= ExecStream.maximumPayload else {
            throw .invalidArgument("exec stream: a \(type) frame of \(length) bytes is over the limit of \(ExecStream.maximumPayload)")
        }
        if let expected = Self.fixedLength(type), length != expected {
            throw .invalidArgument("exec stream: a \(type) frame carries \(expected) bytes, not \(length)")
        }
        guard pendingCount >= ExecStream.headerSize + length else { return nil }
        let payload = Array(buffer[(start + ExecStream.headerSize)..<(start + ExecStream.headerSize + length)])
        start += ExecStream.headerSize + length
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 4 * ExecStream.maximumPayload)
            start = 0
        }
        return try Self.frame(type, payload)
    }

    /// What a stream that ends now leaves unsaid: nil when it ended between frames.
    public var truncation: String? {
        guard pendingCount > 0 else { return nil }
        if pendingCount < ExecStream.headerSize {
            return "exec stream ended inside a frame header (\(pendingCount) of \(ExecStream.headerSize) bytes)"
        }
        return "exec stream ended inside a frame (\(pendingCount - ExecStream.headerSize) payload bytes received)"
    }

    static func fixedLength(_ type: ExecFrameType) -> Int? {
        switch type {
        case .stdinEnd: 0
        case .resize, .signal: 4
        case .exit: 5
        case .stdin, .stdout, .stderr, .error: nil
        }
    }

    private static func frame(_ type: ExecFrameType, _ payload: [UInt8]) throws(NspawnError) -> ExecFrame {
        switch type {
        case .stdin: return .stdin(payload)
        case .stdout: return .stdout(payload)
        case .stderr: return .stderr(payload)
        case .stdinEnd: return .stdinEnd
        case .resize:
            return .resize(TerminalSize(rows: UInt16(payload[0]) << 8 | UInt16(payload[1]), columns: UInt16(payload[2]) << 8 | UInt16(payload[3])))
        case .signal:
            return .signal(Int32(bitPattern: uint32(payload[...])))
        case .exit:
            let value = Int32(bitPattern: uint32(payload[1...]))
            switch payload[0] {
            case 0 where (0...255).contains(value): return .exit(.exited(value))
            case 1 where (1...127).contains(value): return .exit(.signaled(value))
            default: throw .invalidArgument("exec stream: an exit frame with kind \(payload[0]) and value \(value)")
            }
        case .error:
            guard let body = try? WireJSON.decoder().decode(ErrorBody.self, from: Data(payload)) else {
                throw .invalidArgument("exec stream: an error frame that is not a JSON error body")
            }
            return .error(code: body.error.code, message: body.error.message)
        }
    }

    private static func uint32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}

/// The exec route's body: `ExecSpec` as the wire carries it, where every field but `command`
/// may be left out for its default.
public struct ExecRequest: Codable, Sendable, Equatable {
    public var command: [String]
    public var user: String?
    public var environment: [String]?
    public var workingDirectory: String?
    public var interactive: Bool?
    public var tty: Bool?
    public var terminal: String?
    public var size: TerminalSize?

    public init(_ spec: ExecSpec) {
        command = spec.command
        user = spec.user
        environment = spec.environment
        workingDirectory = spec.workingDirectory
        interactive = spec.interactive
        tty = spec.tty
        terminal = spec.terminal
        size = spec.size
    }

    public var spec: ExecSpec {
        ExecSpec(command: command, user: user, environment: environment ?? [], workingDirectory: workingDirectory,
                 interactive: interactive ?? false, tty: tty ?? false, terminal: terminal, size: size)
    }
}
