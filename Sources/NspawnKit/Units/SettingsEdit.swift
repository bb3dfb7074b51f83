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
    /// Kept in a drop-in for the unit, not in the settings file; `isEmpty` does not count it.
    public var restart: RestartChange?
    /// Kept in units of its own; `isEmpty` does not count it either.
    public var health: HealthChange?
    /// Kept in units of its own; `isEmpty` does not count it either.
    public var snapshotSchedule: SnapshotScheduleChange?

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
            && lhs.network == rhs.network && lhs.boot == rhs.boot && lhs.restart == rhs.restart && lhs.health == rhs.health
            && lhs.snapshotSchedule == rhs.snapshotSchedule
    }
}

extension NspawnSettings {
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
}
