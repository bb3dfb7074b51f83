/// A key of the `.nspawn` file that nspawnctl understands and validates.
public struct SettingKey: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case bool, text, environment, user, absolutePath, signal, privateUsers, hostname
        case bind, temporaryFileSystem, interfaceName, zoneName, port
    }

    public let section: String
    public let name: String
    public let kind: Kind
    public let isList: Bool

    public var id: String { "\(section).\(name)" }

    public static let boot = SettingKey(section: "Exec", name: "Boot", kind: .bool, isList: false)
    public static let parameters = SettingKey(section: "Exec", name: "Parameters", kind: .text, isList: false)
    public static let environment = SettingKey(section: "Exec", name: "Environment", kind: .environment, isList: true)
    public static let user = SettingKey(section: "Exec", name: "User", kind: .user, isList: false)
    public static let workingDirectory = SettingKey(section: "Exec", name: "WorkingDirectory", kind: .absolutePath, isList: false)
    public static let killSignal = SettingKey(section: "Exec", name: "KillSignal", kind: .signal, isList: false)
    public static let privateUsers = SettingKey(section: "Exec", name: "PrivateUsers", kind: .privateUsers, isList: false)
    public static let hostname = SettingKey(section: "Exec", name: "Hostname", kind: .hostname, isList: false)
    public static let bind = SettingKey(section: "Files", name: "Bind", kind: .bind, isList: true)
    public static let bindReadOnly = SettingKey(section: "Files", name: "BindReadOnly", kind: .bind, isList: true)
    public static let temporaryFileSystem = SettingKey(section: "Files", name: "TemporaryFileSystem", kind: .temporaryFileSystem, isList: true)
    public static let privateNetwork = SettingKey(section: "Network", name: "Private", kind: .bool, isList: false)
    public static let virtualEthernet = SettingKey(section: "Network", name: "VirtualEthernet", kind: .bool, isList: false)
    public static let bridge = SettingKey(section: "Network", name: "Bridge", kind: .interfaceName, isList: false)
    public static let zone = SettingKey(section: "Network", name: "Zone", kind: .zoneName, isList: false)
    public static let port = SettingKey(section: "Network", name: "Port", kind: .port, isList: true)

    public static let all: [SettingKey] = [
        boot, parameters, environment, user, workingDirectory, killSignal, privateUsers, hostname,
        bind, bindReadOnly, temporaryFileSystem, privateNetwork, virtualEthernet, bridge, zone, port,
    ]

    /// Finds a key by `Section.Key` or, when unambiguous, by `Key` alone (case-sensitive, as systemd).
    public init(named text: String) throws(NspawnError) {
        let matches = SettingKey.all.filter { $0.id == text || $0.name == text }
        guard matches.count == 1, let key = matches.first else {
            let known = SettingKey.all.map(\.id).joined(separator: ", ")
            throw .invalidArgument("unknown setting '\(text.escapedForMessage)'; known settings: \(known)")
        }
        self = key
    }

    private init(section: String, name: String, kind: Kind, isList: Bool) {
        self.section = section
        self.name = name
        self.kind = kind
        self.isList = isList
    }

    /// Throws `invalidArgument` naming the key and the value when systemd-nspawn would reject it
    /// or, worse, read it as something else.
    public func validate(_ value: String) throws(NspawnError) {
        if let problem = problem(with: value) {
            throw .invalidArgument("invalid value '\(value.escapedForMessage)' for \(name)=: \(problem)")
        }
    }

    func problem(with value: String) -> String? {
        // A newline would start a new key; other control characters have no business here.
        if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            return "control characters are not allowed"
        }
        if value.isEmpty { return "empty; use --unset to remove a setting" }
        if value != value.trimmedWhitespace { return "leading or trailing blanks would be lost" }
        if value.hasSuffix("\\") { return "a trailing backslash would continue the line" }
        switch kind {
        case .bool:
            return parseSystemdBool(value) == nil ? "expected yes or no" : nil
        case .text:
            return nil
        case .environment:
            // nspawn reads the line as words, each one NAME=VALUE.
            guard let words = splitNspawnWords(value) else { return "unbalanced quotes or a backslash" }
            for word in words {
                guard let equals = word.firstIndex(of: "=") else { return "expected NAME=VALUE" }
                let variable = word[..<equals]
                guard let first = variable.unicodeScalars.first, first == "_" || first.properties.isAlphabetic && first.isASCII,
                      variable.unicodeScalars.allSatisfy({ $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) })
                else { return "'\(variable)' is not a valid variable name" }
            }
            return nil
        case .user:
            let ok = value.count <= 32 && value.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == ".")
            } && !value.hasPrefix("-")
            return ok ? nil : "expected a user name or UID"
        case .absolutePath:
            return pathProblem(value)
        case .signal:
            do { _ = try UnixSignal(parsing: value) } catch { return "not a signal name or number" }
            return nil
        case .privateUsers:
            if parseSystemdBool(value) != nil || ["pick", "identity", "managed"].contains(value) { return nil }
            let parts = value.split(separator: ":", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), parts.allSatisfy({ UInt32($0) != nil }) else {
                return "expected yes, no, pick, identity, UID or UID:COUNT"
            }
            return nil
        case .hostname:
            let labels = value.split(separator: ".", omittingEmptySubsequences: false)
            let ok = value.count <= 64 && labels.allSatisfy { label in
                !label.isEmpty && !label.hasPrefix("-") && !label.hasSuffix("-")
                    && label.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }
            }
            return ok ? nil : "not a valid host name"
        case .bind:
            return bindProblem(value)
        case .temporaryFileSystem:
            let path = value.prefix { $0 != ":" }
            return pathProblem(String(path))
        case .interfaceName:
            let ok = value.utf8.count <= 15 && value != "." && value != ".."
                && value.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
            return ok ? nil : "not a valid network interface name (at most 15 of A-Z a-z 0-9 - _ .)"
        case .zoneName:
            // nspawn names the bridge "vz-ZONE", which must still fit the 15-character limit.
            let ok = value.utf8.count <= 12
                && value.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_".unicodeScalars.contains($0)) }
            return ok ? nil : "not a valid zone name (at most 12 of A-Z a-z 0-9 - _)"
        case .port:
            return PortForward.problem(with: value)
        }
    }
}

/// A `Port=` value: `[tcp|udp:]HOSTPORT[:CONTAINERPORT]`.
enum PortForward {
    static func problem(with value: String) -> String? {
        var parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if let first = parts.first, first == "tcp" || first == "udp" { parts.removeFirst() }
        guard (1...2).contains(parts.count) else { return "expected [tcp|udp:]HOSTPORT[:CONTAINERPORT]" }
        for part in parts {
            guard let port = UInt16(part), port > 0 else { return "'\(part)' is not a port between 1 and 65535" }
        }
        return nil
    }
}

/// Why `path` is not a clean absolute path, or nil. nspawn unescapes backslashes in paths,
/// so one would silently change the path.
func pathProblem(_ path: String) -> String? {
    guard path.hasPrefix("/") else { return "'\(path)' is not an absolute path" }
    if path.contains("\\") { return "backslashes in paths are not supported" }
    let components = path.split(separator: "/")
    if components.contains("..") || components.contains(".") { return "'\(path)' must not contain '.' or '..'" }
    return nil
}

/// `SRC[:DST[:OPTIONS]]`; a source may start with '+' (relative to the container's root).
func bindProblem(_ value: String) -> String? {
    let parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    guard (1...3).contains(parts.count) else {
        return "expected SOURCE[:DESTINATION[:OPTIONS]] (paths containing ':' are not supported)"
    }
    let source = parts[0].hasPrefix("+") ? String(parts[0].dropFirst()) : parts[0]
    if let problem = pathProblem(source) { return problem }
    if parts.count >= 2, let problem = pathProblem(parts[1]) { return problem }
    if parts.count == 3 {
        let known: Set<Substring> = ["rbind", "norbind", "idmap", "noidmap", "rootidmap", "owneridmap"]
        if let unknown = parts[2].split(separator: ",").first(where: { !known.contains($0) }) {
            return "unknown bind option '\(unknown)'"
        }
    }
    return nil
}

/// systemd's boolean spellings.
func parseSystemdBool(_ text: String) -> Bool? {
    switch text.lowercased() {
    case "1", "yes", "y", "true", "t", "on": true
    case "0", "no", "n", "false", "f", "off": false
    default: nil
    }
}
