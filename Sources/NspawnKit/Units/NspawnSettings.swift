/// A machine's `.nspawn` settings (systemd.nspawn(5)), typed over a line-preserving document.
///
/// Only the keys in `SettingKey.all` are modelled and validated; every other line of the file
/// is carried through untouched.
public struct NspawnSettings: Sendable, Equatable {
    public var document: UnitFileDocument

    public init(document: UnitFileDocument = UnitFileDocument()) {
        self.document = document
    }

    public init(parsing text: String) {
        document = UnitFileDocument(parsing: text)
    }

    public func rendered() -> String { document.rendered() }

    public func values(_ key: SettingKey) -> [String] { document.values(key.section, key.name) }

    public func value(_ key: SettingKey) -> String? { document.value(key.section, key.name) }

    public var boot: Bool? { value(.boot).flatMap(parseSystemdBool) }
    public var ports: [String] { values(.port) }

    /// The settings as `config` shows them: modelled keys by name, everything else as written.
    public var effective: EffectiveSettings {
        var modelled: [String: [String]] = [:]
        var other: [EffectiveSettings.RawEntry] = []
        for entry in document.entries {
            if let key = SettingKey.all.first(where: { $0.section == entry.section && $0.name == entry.key }) {
                if key.isList {
                    modelled[key.id, default: []].append(entry.value)
                } else {
                    modelled[key.id] = [entry.value]
                }
            } else {
                other.append(.init(section: entry.section, key: entry.key, value: entry.value))
            }
        }
        return EffectiveSettings(settings: modelled, other: other)
    }

    /// Applies an edit after validating all of it, so a bad value changes nothing.
    public mutating func apply(_ edit: SettingsEdit) throws(NspawnError) {
        var copy = document
        for key in edit.removals { copy.remove(key.section, key.name) }
        for (key, value) in edit.assignments {
            try key.validate(value)
            copy.set(key.section, key.name, to: value)
        }
        if let boot = edit.boot {
            switch boot {
            case .boot:
                copy.set("Exec", "Boot", to: "yes")
                copy.remove("Exec", "Parameters")
            case .exec(let command):
                let parameters = try quoteNspawnWords(command, what: "command")
                copy.set("Exec", "Boot", to: "no")
                copy.set("Exec", "Parameters", to: parameters)
            }
        }
        for assignment in edit.environment {
            let word = try quoteNspawnWords([assignment], what: "environment assignment")
            try SettingKey.environment.validate(word)
            // nspawn splits each Environment= line into words: drop only this variable's word.
            let variable = assignment.prefix { $0 != "=" }
            var kept: [String] = []
            for line in copy.values("Exec", "Environment") {
                guard let words = splitNspawnWords(line) else { kept.append(line); continue }
                let others = words.filter { $0.prefix { $0 != "=" } != variable }
                if others.count == words.count { kept.append(line) } else if !others.isEmpty {
                    kept.append(try quoteNspawnWords(others, what: "environment assignment"))
                }
            }
            copy.set("Exec", "Environment", to: kept + [word])
        }
        for bind in edit.binds {
            try SettingKey.bind.validate(bind)
            if !copy.values("Files", "Bind").contains(bind) { copy.add("Files", "Bind", bind) }
        }
        for bind in edit.readOnlyBinds {
            try SettingKey.bindReadOnly.validate(bind)
            if !copy.values("Files", "BindReadOnly").contains(bind) { copy.add("Files", "BindReadOnly", bind) }
        }
        if let network = edit.network {
            switch network {
            case .veth:
                copy.remove("Network", "Private")
                copy.set("Network", "VirtualEthernet", to: "yes")
                copy.remove("Network", "Bridge")
                copy.remove("Network", "Zone")
            case .private:
                copy.set("Network", "Private", to: "yes")
                copy.set("Network", "VirtualEthernet", to: "no")
                copy.remove("Network", "Bridge")
                copy.remove("Network", "Zone")
            case .host:
                copy.set("Network", "Private", to: "no")
                copy.set("Network", "VirtualEthernet", to: "no")
                copy.remove("Network", "Bridge")
                copy.remove("Network", "Zone")
            case .bridge(let bridge):
                try SettingKey.bridge.validate(bridge)
                copy.remove("Network", "Private")
                copy.remove("Network", "VirtualEthernet")
                copy.set("Network", "Bridge", to: bridge)
                copy.remove("Network", "Zone")
            case .zone(let zone):
                try SettingKey.zone.validate(zone)
                copy.remove("Network", "Private")
                copy.remove("Network", "VirtualEthernet")
                copy.remove("Network", "Bridge")
                copy.set("Network", "Zone", to: zone)
            }
        }
        for port in edit.ports {
            try SettingKey.port.validate(port)
            if !copy.values("Network", "Port").contains(port) { copy.add("Network", "Port", port) }
        }
        // nspawn refuses to start with Port= and no virtual link to forward to.
        let candidate = NspawnSettings(document: copy)
        if !candidate.ports.isEmpty && !candidate.hasVirtualLink {
            throw .invalidArgument("Port= needs a virtual link to the container (--network veth, bridge=BRIDGE or zone=ZONE)")
        }
        document = copy
    }

    /// Whether the container gets a veth link. nspawn takes the file's network keys as a group:
    /// with none, systemd-nspawn@.service's own --network-veth applies; with any, only
    /// VirtualEthernet=yes, Bridge= or Zone= make a link.
    var hasVirtualLink: Bool {
        let networkKeys = ["Private", "VirtualEthernet", "VirtualEthernetExtra", "Bridge", "Zone", "Interface", "MACVLAN", "IPVLAN"]
        if networkKeys.allSatisfy({ document.value("Network", $0) == nil }) { return true }
        return value(.virtualEthernet).flatMap(parseSystemdBool) == true || value(.bridge) != nil || value(.zone) != nil
    }
}

/// What `config` shows.
public struct EffectiveSettings: Sendable, Codable, Equatable {
    public struct RawEntry: Sendable, Codable, Equatable {
        public var section: String
        public var key: String
        public var value: String
    }
    /// "Section.Key" → values, for the modelled keys present in the file.
    public var settings: [String: [String]]
    /// Keys nspawnctl does not model, kept as written.
    public var other: [RawEntry]
}

/// A change to a machine's settings, validated as a whole before anything is written.
public struct SettingsEdit: Sendable, Equatable {
    public enum BootMode: Sendable, Equatable {
        case boot
        case exec([String])
    }

    public enum NetworkMode: Sendable, Equatable {
        case veth, `private`, host
        case bridge(String)
        case zone(String)

        /// Parses `veth`, `private`, `host`, `bridge=BR` or `zone=Z`.
        public init(parsing text: String) throws(NspawnError) {
            switch text {
            case "veth": self = .veth
            case "private": self = .private
            case "host": self = .host
            default:
                if text.hasPrefix("bridge=") {
                    let name = String(text.dropFirst("bridge=".count))
                    try SettingKey.bridge.validate(name)
                    self = .bridge(name)
                } else if text.hasPrefix("zone=") {
                    let name = String(text.dropFirst("zone=".count))
                    try SettingKey.zone.validate(name)
                    self = .zone(name)
                } else {
                    throw .invalidArgument("invalid network '\(text.escapedForMessage)': expected veth, private, host, bridge=BRIDGE or zone=ZONE")
                }
            }
        }
    }

    public var assignments: [(SettingKey, String)] = []
    public var removals: [SettingKey] = []
    public var binds: [String] = []
    public var readOnlyBinds: [String] = []
    public var ports: [String] = []
    public var environment: [String] = []
    public var network: NetworkMode?
    public var boot: BootMode?

    public init() {}

    public var isEmpty: Bool {
        assignments.isEmpty && removals.isEmpty && binds.isEmpty && readOnlyBinds.isEmpty && ports.isEmpty
            && environment.isEmpty && network == nil && boot == nil
    }

    /// Checks every value without a file at hand, so the CLI and the daemon reject bad input early.
    public func validate() throws(NspawnError) {
        var scratch = NspawnSettings()
        try scratch.apply(self)
    }

    public static func == (lhs: SettingsEdit, rhs: SettingsEdit) -> Bool {
        lhs.assignments.map { "\($0.0.id)=\($0.1)" } == rhs.assignments.map { "\($0.0.id)=\($0.1)" }
            && lhs.removals == rhs.removals && lhs.binds == rhs.binds && lhs.readOnlyBinds == rhs.readOnlyBinds
            && lhs.ports == rhs.ports && lhs.environment == rhs.environment
            && lhs.network == rhs.network && lhs.boot == rhs.boot
    }
}

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

/// Quotes words for a `.nspawn` value (Parameters=, Environment=). nspawn unquotes but keeps
/// backslashes as they are, so a word is wrapped in the quote it does not contain; one with
/// both quotes, or with a backslash, cannot be written faithfully and is refused.
func quoteNspawnWords(_ words: [String], what: String) throws(NspawnError) -> String {
    guard !words.isEmpty else { throw .invalidArgument("the \(what) is empty") }
    return try words.map { word throws(NspawnError) -> String in
        if word.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': control characters are not allowed")
        }
        if word.contains("\\") {
            throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': backslashes are not supported in .nspawn files")
        }
        if isPlainWord(word) { return word }
        if !word.contains("\"") { return "\"\(word)\"" }
        if !word.contains("'") { return "'\(word)'" }
        throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': it holds both kinds of quote")
    }.joined(separator: " ")
}

/// Splits a `.nspawn` value into words the way nspawn does for the values we write; nil for
/// unbalanced quotes or backslashes, which we never write.
func splitNspawnWords(_ text: String) -> [String]? {
    var words: [String] = []
    var current = ""
    var inWord = false
    var quote: Character?
    for character in text {
        if character == "\\" { return nil }
        if let open = quote {
            if character == open { quote = nil } else { current.append(character) }
        } else if character == "\"" || character == "'" {
            quote = character
            inWord = true
        } else if character == " " || character == "\t" {
            if inWord { words.append(current); current = ""; inWord = false }
        } else {
            current.append(character)
            inWord = true
        }
    }
    if quote != nil { return nil }
    if inWord { words.append(current) }
    return words
}

private func isPlainWord(_ word: String) -> Bool {
    !word.isEmpty && word.unicodeScalars.allSatisfy {
        $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/._-+=,@%:".unicodeScalars.contains($0))
    }
}

/// Quotes a command line for ExecStart= in a unit file, which unescapes C-style within double
/// quotes and expands `%` specifiers and `$` variables even there.
func quoteExecStart(_ words: [String]) throws(NspawnError) -> String {
    guard !words.isEmpty else { throw .invalidArgument("the command to run is empty") }
    return try words.map { word throws(NspawnError) -> String in
        if word.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw .invalidArgument("invalid command word '\(word.escapedForMessage)': control characters are not allowed")
        }
        let literal = word.replacing("%", with: "%%").replacing("$", with: "$$")
        if isPlainWord(word) && !word.contains("%") { return literal }
        let escaped = literal.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
        return "\"\(escaped)\""
    }.joined(separator: " ")
}
