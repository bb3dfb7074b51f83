#if canImport(Glibc)
import Glibc
#endif

/// One step that prepares a fresh root before it becomes visible. Recipes list them as data.
public enum SetupStep: Sendable, Equatable, CustomStringConvertible {
    /// Puts `line` first in the file unless it is already there (e.g. enable a mirror).
    case prependLine(path: String, line: String)
    /// Comments out lines whose first word is `key` (e.g. pacman.conf's CheckSpace).
    case commentOut(path: String, key: String)
    /// Adds `line` to the file if the file exists and lacks it (e.g. pts/0 in securetty).
    case appendLineIfExists(path: String, line: String)
    /// Runs a command inside the root with systemd-nspawn, not registered and without network.
    case run([String])
    /// Writes the machine name to /etc/hostname.
    case setHostname
    /// Leaves /etc/machine-id empty, so the first boot generates one.
    case emptyMachineID

    public var description: String {
        switch self {
        case .prependLine(let path, let line): "prepend '\(line)' to \(path)"
        case .commentOut(let path, let key): "comment out \(key) in \(path)"
        case .appendLineIfExists(let path, let line): "append '\(line)' to \(path)"
        case .run(let argv): "run '\(argv.joined(separator: " "))'"
        case .setHostname: "set the hostname"
        case .emptyMachineID: "empty /etc/machine-id"
        }
    }
}
