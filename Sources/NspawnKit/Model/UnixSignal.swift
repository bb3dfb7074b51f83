#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A signal number with the name people type: `TERM`, `SIGTERM`, `15`, `RTMIN+4`.
public struct UnixSignal: Sendable, Hashable, Codable, CustomStringConvertible {
    public let number: Int32

    public static let term = UnixSignal(unchecked: SIGTERM)
    public static let kill = UnixSignal(unchecked: SIGKILL)
    public static let interrupt = UnixSignal(unchecked: SIGINT)
    /// systemd's "power off" request (what `machinectl poweroff` sends).
    public static let powerOff = UnixSignal(unchecked: realtimeMinimum + 4)

    // glibc reserves the first real-time signals for itself; ask it where ours begin.
    static let realtimeMinimum: Int32 = __libc_current_sigrtmin()
    static let realtimeMaximum: Int32 = __libc_current_sigrtmax()

    private static let named: [(String, Int32)] = [
        ("HUP", SIGHUP), ("INT", SIGINT), ("QUIT", SIGQUIT), ("ILL", SIGILL), ("TRAP", SIGTRAP),
        ("ABRT", SIGABRT), ("BUS", SIGBUS), ("FPE", SIGFPE), ("KILL", SIGKILL), ("USR1", SIGUSR1),
        ("SEGV", SIGSEGV), ("USR2", SIGUSR2), ("PIPE", SIGPIPE), ("ALRM", SIGALRM), ("TERM", SIGTERM),
        ("STKFLT", SIGSTKFLT), ("CHLD", SIGCHLD), ("CONT", SIGCONT), ("STOP", SIGSTOP), ("TSTP", SIGTSTP),
        ("TTIN", SIGTTIN), ("TTOU", SIGTTOU), ("URG", SIGURG), ("XCPU", SIGXCPU), ("XFSZ", SIGXFSZ),
        ("VTALRM", SIGVTALRM), ("PROF", SIGPROF), ("WINCH", SIGWINCH), ("IO", SIGIO), ("PWR", SIGPWR),
        ("SYS", SIGSYS),
    ]

    private init(unchecked number: Int32) {
        self.number = number
    }

    public init(number: Int32) throws(NspawnError) {
        guard number >= 1, number <= Self.realtimeMaximum else {
            throw .invalidArgument("invalid signal number \(number)")
        }
        self.number = number
    }

    /// Parses a signal name or number.
    public init(parsing text: String) throws(NspawnError) {
        let invalid = NspawnError.invalidArgument("invalid signal '\(text.escapedForMessage)'")
        if let value = Int32(text) {
            guard value >= 1, value <= Self.realtimeMaximum else { throw invalid }
            self.number = value
            return
        }
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        if let match = Self.named.first(where: { $0.0 == name }) {
            self.number = match.1
            return
        }
        for (prefix, base, sign) in [("RTMIN", Self.realtimeMinimum, Int32(1)), ("RTMAX", Self.realtimeMaximum, Int32(-1))]
        where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            var offset: Int32 = 0
            if !rest.isEmpty {
                let expectedSign: Character = sign > 0 ? "+" : "-"
                guard rest.first == expectedSign, let n = Int32(rest.dropFirst()), n >= 0 else { throw invalid }
                offset = n * sign
            }
            let value = base + offset
            guard value >= Self.realtimeMinimum, value <= Self.realtimeMaximum else { throw invalid }
            self.number = value
            return
        }
        throw invalid
    }

    public var name: String {
        if let match = Self.named.first(where: { $0.1 == number }) { return "SIG" + match.0 }
        if number >= Self.realtimeMinimum, number <= Self.realtimeMaximum {
            let offset = number - Self.realtimeMinimum
            return offset == 0 ? "SIGRTMIN" : "SIGRTMIN+\(offset)"
        }
        return "\(number)"
    }

    public var description: String { name }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int32.self) {
            do { try self.init(number: n) } catch { throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description) }
        } else {
            let text = try container.decode(String.self)
            do { try self.init(parsing: text) } catch { throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description) }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }
}
