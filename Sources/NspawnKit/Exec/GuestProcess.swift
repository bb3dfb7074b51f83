import SystemPackage

/// What to run inside a machine: the one description `exec` and `shell` share, whether the CLI
/// runs it directly or nspawnd runs it for a client at the other end of a stream.
public struct ExecSpec: Codable, Sendable, Equatable {
    /// argv; empty means the user's login shell (`shell`).
    public var command: [String]
    /// A guest user name or numeric uid; nil means root.
    public var user: String?
    /// `K=V` entries added to (and overriding) the guest's own environment.
    public var environment: [String]
    /// A directory inside the guest; nil means the user's home directory (or /).
    public var workingDirectory: String?
    /// Whether the caller sends stdin; without it the command reads /dev/null.
    public var interactive: Bool
    /// Whether to run on a pseudo-terminal (stdout and stderr then arrive merged).
    public var tty: Bool
    /// The caller's terminal type (TERM) and size, for `tty`.
    public var terminal: String?
    public var size: TerminalSize?

    public init(command: [String], user: String? = nil, environment: [String] = [], workingDirectory: String? = nil,
                interactive: Bool = false, tty: Bool = false, terminal: String? = nil, size: TerminalSize? = nil) {
        self.command = command
        self.user = user
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.interactive = interactive
        self.tty = tty
        self.terminal = terminal
        self.size = size
    }
}

public struct TerminalSize: Codable, Sendable, Equatable {
    public var rows: UInt16
    public var columns: UInt16
    public init(rows: UInt16, columns: UInt16) {
        self.rows = rows
        self.columns = columns
    }
}

/// How a command inside a machine ended. A non-zero status is a result, not an error.
public enum ExitOutcome: Codable, Sendable, Equatable {
    case exited(Int32)
    case signaled(Int32)

    /// The shell's convention: the status, or 128+N for a command killed by signal N.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }
}

/// A command started inside a machine. Owns the host ends of its standard streams: write to
/// `input` (nil unless interactive), read `output` and `errorOutput` (nil on a tty, where both
/// arrive on `output`, the terminal's master side) until end of file, then `wait()`.
/// A command that could not be started says why on its error stream (the terminal with a tty)
/// and ends with 127 (no such command) or 126 (found but cannot be executed), as in a shell.
public protocol GuestProcess: AnyObject, Sendable {
    var input: FileDescriptor? { get }
    var output: FileDescriptor { get }
    var errorOutput: FileDescriptor? { get }
    /// Ends the command's input (it reads end of file) while its output still flows; `close()`
    /// will not close it again. Does nothing without input or on a tty.
    func closeInput()
    /// Follows the caller's terminal; does nothing without a tty.
    func resize(_ size: TerminalSize) throws(NspawnError)
    /// Forwards a signal the caller received (INT, TERM, HUP) to the command.
    func signal(_ signal: UnixSignal) throws(NspawnError)
    /// Blocks until the command ends; call it off the cooperative pool (`OSThread.run`).
    func wait() throws(NspawnError) -> ExitOutcome
    /// Closes the host ends that are still open.
    func close()
}
