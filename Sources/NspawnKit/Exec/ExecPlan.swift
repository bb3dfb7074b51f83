import CLinux
import SystemPackage

/// The pure half of running a command in a machine: checking what the caller asked for and
/// turning it, with what the guest says about itself, into argv, environment and directory.
extension ExecSpec {
    /// Rejects a spec that cannot be passed to the guest as asked; says which part is wrong.
    public func validate() throws(NspawnError) {
        if let first = command.first, first.isEmpty {
            throw .invalidArgument("the command to run is empty")
        }
        for argument in command where argument.contains("\0") {
            throw .invalidArgument("command argument '\(argument.escapedForMessage)' contains a NUL byte")
        }
        for entry in environment { try ExecEnvironment.check(entry) }
        if let user {
            guard !user.isEmpty, !user.contains("\0"), !user.contains(":"), !user.contains("/") else {
                throw .invalidArgument("invalid user '\(user.escapedForMessage)'")
            }
        }
        if let workingDirectory {
            guard workingDirectory.hasPrefix("/"), !workingDirectory.contains("\0") else {
                throw .invalidArgument("working directory '\(workingDirectory.escapedForMessage)' is not an absolute path")
            }
        }
        if let terminal, terminal.isEmpty || terminal.contains("\0") || terminal.contains("=") {
            throw .invalidArgument("invalid terminal type '\(terminal.escapedForMessage)'")
        }
    }
}

package enum ExecEnvironment {
    /// Where a guest that sets no PATH still finds its tools.
    package static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Variables of the leader that talk to nspawn or to socket activation, not to a command.
    static let leaderOnly: Set<String> = ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    /// `NAME=VALUE` with a name a shell can use.
    package static func check(_ entry: String) throws(NspawnError) {
        guard let equals = entry.firstIndex(of: "="), isValidName(entry[..<equals]), !entry.contains("\0") else {
            throw .invalidArgument("invalid environment entry '\(entry.escapedForMessage)': expected NAME=VALUE")
        }
    }

    package static func isValidName(_ name: Substring) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// The leader's environment (the guest's own), with a PATH, the user's identity, the
    /// caller's terminal type when there is a terminal, then the caller's entries on top.
    /// Later entries replace earlier ones of the same name, keeping the first one's place.
    package static func build(leader: [String], user: GuestUser, terminal: String?, extra: [String]) -> [String] {
        var order: [String] = []
        var values: [String: String] = [:]
        func set(_ name: String, _ value: String) {
            if values.updateValue(value, forKey: name) == nil { order.append(name) }
        }
        for entry in leader {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else { continue }
            let name = String(entry[..<equals])
            guard !leaderOnly.contains(name) else { continue }
            set(name, String(entry[entry.index(after: equals)...]))
        }
        if values["PATH"] == nil { set("PATH", defaultPath) }
        set("HOME", user.home)
        set("SHELL", user.loginShell)
        if let name = user.name {
            set("USER", name)
            set("LOGNAME", name)
        }
        if let terminal { set("TERM", terminal) }
        for entry in extra {
            guard let equals = entry.firstIndex(of: "=") else { continue }
            set(String(entry[..<equals]), String(entry[entry.index(after: equals)...]))
        }
        return order.map { "\($0)=\(values[$0]!)" }
    }

    /// `/proc/PID/environ`: NUL-separated entries.
    package static func parseEnviron(_ bytes: [UInt8]) -> [String] {
        bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// What the intermediate child reports when the command could not be started.
package enum ExecStage: Int32, Sendable {
    case cgroup = 1, namespaces, root, terminal, pipe, fork, stdio, capabilities, groups, gid, uid, directory, exec

    /// What we were doing, for the message.
    package func action(command: String, directory: String, user: GuestUser, machine: String) -> String {
        let who = user.name.map { "'\($0)'" } ?? "\(user.uid)"
        return switch self {
        case .cgroup: "cannot join the cgroup of machine '\(machine)'"
        case .namespaces: "cannot enter the namespaces of machine '\(machine)'"
        case .root: "cannot enter the root directory of machine '\(machine)'"
        case .terminal: "cannot allocate a terminal in machine '\(machine)'"
        case .pipe, .fork: "cannot start a process in machine '\(machine)'"
        case .stdio: "cannot set up the standard streams in machine '\(machine)'"
        case .capabilities: "cannot limit capabilities as the leader of machine '\(machine)' is"
        case .groups, .gid: "cannot switch to the groups of user \(who) in machine '\(machine)'"
        case .uid: "cannot switch to user \(who) in machine '\(machine)'"
        case .directory: "cannot change to directory '\(directory.escapedForMessage)' in machine '\(machine)'"
        case .exec: "cannot run '\(command.escapedForMessage)' in machine '\(machine)'"
        }
    }
}

extension ExitOutcome {
    /// A raw status from waitpid(2).
    package init(waitStatus status: Int32) {
        let signal = status & 0x7f
        self = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    /// The status a shell gives a command it cannot run: 127 when there is no such command,
    /// 126 when it exists but cannot be executed; nil for an errno that is nspawnctl's failure.
    package static func startFailure(_ errno: Errno) -> ExitOutcome? {
        switch errno {
        case .noSuchFileOrDirectory: .exited(127)
        case .permissionDenied, .execFormatError, .isDirectory, .notDirectory, .tooManySymbolicLinkLevels, .textFileBusy:
            .exited(126)
        default: nil
        }
    }
}

extension TerminalSize {
    /// The window size of the terminal on `fd`; nil when it is not a terminal (or says 0x0).
    public static func of(_ fd: FileDescriptor) -> TerminalSize? {
        var rows: UInt16 = 0
        var columns: UInt16 = 0
        guard nspawnctl_get_window_size(fd.rawValue, &rows, &columns) == 0, rows > 0, columns > 0 else { return nil }
        return TerminalSize(rows: rows, columns: columns)
    }
}
