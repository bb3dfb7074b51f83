import FoundationEssentials
import NspawnKit
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// nspawnd's socket on this host.
public struct UnixSocketConnector: Connector {
    public static let defaultPath = "/run/nspawnd/nspawnd.sock"
    public let path: String

    /// `$NSPAWND_SOCKET`, else the installed socket.
    public init(path: String = ProcessInfo.processInfo.environment["NSPAWND_SOCKET"] ?? UnixSocketConnector.defaultPath) {
        self.path = path
    }

    public var peerName: String { "nspawnd at \(path)" }

    public func connect() throws(NspawnError) -> any ByteConnection {
        do {
            return SocketConnection(descriptor: try UnixSocket.connect(path: path))
        } catch .permissionDenied, .notPermitted {
            throw .remote(.permissionDenied, message: "permission denied: cannot connect to nspawnd at \(path); join group 'nspawn' or run as root", busError: nil)
        } catch .noSuchFileOrDirectory, .connectionRefused, .notDirectory {
            throw .remote(.unreachable, message: "cannot reach nspawnd at \(path): nothing listens there; is nspawnd.socket enabled?", busError: nil)
        } catch {
            throw .remote(.unreachable, message: "cannot reach nspawnd at \(path): \(error)", busError: nil)
        }
    }
}

final class SocketConnection: ByteConnection, @unchecked Sendable {
    let descriptor: FileDescriptor
    private var closed = false

    init(descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    func failureAtEnd() -> NspawnError? { nil }

    func close() {
        guard !closed else { return }
        closed = true
        try? descriptor.close()
    }

    deinit { close() }
}

/// Another host's nspawnd, through OpenSSH: `ssh -T HOST nspawnctl dial-stdio` carries the
/// HTTP stream to the remote socket, as docker's and podman's ssh:// remotes do. ssh does
/// the authentication and host-key checking with the user's own configuration; nspawnctl
/// never weakens either and never sees a key or a password.
public struct SSHConnector: Connector {
    public let destination: SSHDestination
    /// Asking for a passphrase is fine on a terminal, a hang anywhere else.
    let interactive: Bool

    public init(destination: SSHDestination, interactive: Bool = isatty(0) == 1) {
        self.destination = destination
        self.interactive = interactive
    }

    public var peerName: String { "nspawnd on \(destination.host)" }

    public var argv: [String] { command(["nspawnctl", "dial-stdio"]) }

    /// ssh running `remote` on the destination. Its words reach a remote shell: callers pass
    /// only names they have validated.
    public func command(_ remote: [String]) -> [String] {
        var argv = ["ssh", "-T", "-o", "ConnectTimeout=10"]
        if !interactive { argv += ["-o", "BatchMode=yes"] }
        if let user = destination.user { argv += ["-l", user] }
        if let port = destination.port { argv += ["-p", String(port)] }
        return argv + ["--", destination.host] + remote
    }

    public func connect() throws(NspawnError) -> any ByteConnection {
        let (ours, theirs): (FileDescriptor, FileDescriptor)
        do { (ours, theirs) = try UnixSocket.pair() } catch { throw .system("cannot create a socket pair for ssh", error) }
        defer { try? theirs.close() }
        let stderr: MemoryFile
        let child: ChildProcess
        do {
            stderr = try MemoryFile()
        } catch {
            try? ours.close()
            throw error
        }
        do {
            child = try ChildProcess.spawn(argv, stdin: theirs, stdout: theirs, stderr: stderr.descriptor)
        } catch {
            try? ours.close()
            throw .remote(.unreachable, message: "cannot reach \(destination.host): \(error); is OpenSSH's ssh installed?", busError: nil)
        }
        return SSHConnection(descriptor: ours, child: child, stderr: stderr, destination: destination)
    }
}

/// `ssh://[USER@]HOST[:PORT]`, as docker and podman write remotes.
public struct SSHDestination: Sendable, Equatable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: UInt16?

    public init(parsing text: String) throws(NspawnError) {
        guard text.hasPrefix("ssh://") else {
            throw .invalidArgument("invalid host '\(text.escapedForMessage)': expected ssh://[USER@]HOST[:PORT]")
        }
        var rest = Substring(text.dropFirst("ssh://".count))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
        }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            rest = rest[colon...]
        } else {
            host = String(rest)
            rest = ""
        }
        if rest.hasPrefix(":") {
            guard let port = UInt16(rest.dropFirst()), port > 0 else {
                throw .invalidArgument("invalid port in '\(text.escapedForMessage)': expected 1 to 65535")
            }
            self.port = port
        } else if !rest.isEmpty {
            throw .invalidArgument("invalid host '\(text.escapedForMessage)': expected ssh://[USER@]HOST[:PORT]")
        }
        // Nothing that ssh could read as an option or that a shell would split.
        let allowed = { (scalar: Unicode.Scalar) in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "-._:%".unicodeScalars.contains(scalar))
        }
        guard !host.isEmpty, !host.hasPrefix("-"), host.unicodeScalars.allSatisfy(allowed), host.utf8.count <= 253 else {
            throw .invalidArgument("invalid host name in '\(text.escapedForMessage)'")
        }
        if let user, user.isEmpty || user.hasPrefix("-") || !user.unicodeScalars.allSatisfy({ allowed($0) && $0 != ":" }) || user.utf8.count > 64 {
            throw .invalidArgument("invalid user name in '\(text.escapedForMessage)'")
        }
    }

    public var description: String {
        "ssh://" + (user.map { "\($0)@" } ?? "") + (host.contains(":") ? "[\(host)]" : host) + (port.map { ":\($0)" } ?? "")
    }
}

final class SSHConnection: ByteConnection, @unchecked Sendable {
    let descriptor: FileDescriptor
    private let child: ChildProcess
    private let stderr: MemoryFile
    private let destination: SSHDestination
    /// How ssh ended, once reaped; and whether our end is closed.
    private let state = Mutex<(termination: ChildProcess.Termination?, closed: Bool)>((nil, false))

    init(descriptor: FileDescriptor, child: ChildProcess, stderr: MemoryFile, destination: SSHDestination) {
        self.descriptor = descriptor
        self.child = child
        self.stderr = stderr
        self.destination = destination
    }

    /// ssh has no other interface for why it failed than its exit status and its words on
    /// stderr; these are OpenSSH's stable messages.
    func failureAtEnd() -> NspawnError? {
        let termination = reap(kill: false)
        if termination == .exited(0) { return nil }
        return Self.failure(termination, said: stderr.text(limit: 4096), destination: destination, command: "nspawnctl dial-stdio")
    }

    /// Why `ssh HOST COMMAND…` failed, from how it ended and its stderr.
    static func failure(_ termination: ChildProcess.Termination, said: String, destination: SSHDestination, command: String) -> NspawnError {
        let host = destination.description
        let lastLine = said.split(whereSeparator: \.isNewline).last.map { String($0).trimmedWhitespace } ?? ""
        let detail = lastLine.isEmpty ? "" : ": \(lastLine.escapedForMessage)"
        switch termination {
        case .exited(255):
            if said.contains("Host key verification failed") || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || said.contains("No ED25519 host key is known")
                || said.contains("host key for") && said.contains("has changed") {
                return .remote(.verificationFailed, message: "ssh to \(host): host key verification failed; check known_hosts\(detail)", busError: nil)
            }
            if said.contains("Permission denied") || said.contains("Too many authentication failures") {
                return .remote(.permissionDenied, message: "ssh to \(host): authentication refused\(detail)", busError: nil)
            }
            return .remote(.unreachable, message: "cannot reach \(host) over ssh\(detail)", busError: nil)
        case .exited(127):
            return .remote(.unreachable, message: "no nspawnctl on \(host): the remote shell cannot find it\(detail)", busError: nil)
        case .exited(let code):
            // dial-stdio's own failure (no nspawnd there), with its exit code's category.
            if let category = Self.category(exitCode: code) {
                return .remote(category, message: "\(host): \(lastLine.isEmpty ? "\(command) exited with status \(code)" : lastLine.escapedForMessage)", busError: nil)
            }
            return .remote(.unreachable, message: "\(host): the remote command exited with status \(code)\(detail)", busError: nil)
        case .signaled(let signal):
            return .remote(.unreachable, message: "ssh to \(host) was killed by signal \(signal)\(detail)", busError: nil)
        }
    }

    /// The categories dial-stdio can end with, by its exit code.
    static func category(exitCode: Int32) -> NspawnError.Category? {
        switch exitCode {
        case 4: .permissionDenied
        case 7: .unreachable
        default: nil
        }
    }

    /// Waits for ssh to end; `kill` ends it first. Bounded: a ControlMaster ssh forks, and a
    /// hung one must not hang us.
    private func reap(kill: Bool) -> ChildProcess.Termination {
        state.withLock { state in
            if let termination = state.termination { return termination }
            if kill { child.signal(SIGTERM) }
            for attempt in 0..<200 {
                let ended: ChildProcess.Termination?
                do { ended = try child.reapIfEnded() } catch { break }
                if let ended {
                    state.termination = ended
                    return ended
                }
                if attempt == 100 { child.signal(SIGKILL) }
                usleep(10_000)
            }
            let result = ChildProcess.Termination.signaled(SIGKILL)
            state.termination = result
            return result
        }
    }

    func close() {
        let first = state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        try? descriptor.close()
        _ = reap(kill: true)
    }

    deinit { close() }
}
