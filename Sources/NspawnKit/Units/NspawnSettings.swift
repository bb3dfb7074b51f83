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
