#if canImport(Glibc)
import Glibc
#endif

/// What `config` shows for one machine.
public struct MachineConfig: Sendable, Codable, Equatable {
    public var name: String
    /// The file the settings come from, or nil when there is none.
    public var path: String?
    public var settings: EffectiveSettings
    public var flavor: String?
    public var exposed: [String]
    /// What systemd does when the machine ends; nil: the template's default (no restart).
    public var restart: RestartPolicy?
    /// The command run inside at an interval, and how its failures count; nil: none.
    public var health: HealthCheck?
    /// Snapshots taken by a host timer, and how many are kept; nil: none.
    public var snapshotSchedule: SnapshotSchedule?
}

extension MachineManager {
    // MARK: Settings

    public func config(_ name: MachineName) async throws -> MachineConfig {
        try await withBus { bus in
            guard try Machined(bus: bus).imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            return try Self.currentConfig(name)
        }
    }

    /// Validates the whole edit, then writes the settings file atomically (only if it changed)
    /// and, with a flavor, the flavor's drop-in. Settings apply from the machine's next start;
    /// a flavor applies at once.
    public func configure(_ name: MachineName, edit: SettingsEdit, flavor: Flavor?) async throws -> MachineConfig {
        try edit.validate()
        return try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            // A flavor set here would leave the pending resize nothing true to revert or confirm.
            if flavor != nil, let pending = try Self.pendingResize(of: name) { throw NspawnError.resizePending(name.rawValue, pending) }
            // Every value checked before anything is written; the flavor (whose disk limit may be
            // refused) before the settings file.
            var changedSettings: String?
            if !edit.isEmpty {
                let source = try Self.loadSettings(name, imagePath: Self.imageFilesystemPath(name, machined: machined))
                var settings = try source.editable(name)
                let before = settings.rendered()
                try settings.apply(edit)
                if settings.rendered() != before { changedSettings = settings.rendered() }
            }
            let restart = try edit.restart.map { (change) throws(NspawnError) in try change.applied(to: Self.restartPolicy(of: name), machine: name.rawValue) }
            // nil inside: the check goes.
            let health = try edit.health.map { (change) throws(NspawnError) in try change.applied(to: Self.healthCheck(of: name), machine: name.rawValue) }
            if let flavor {
                try Self.applyFlavor(flavor, to: name, live: machined.machinePathIfRunning(name) != nil, bus: bus)
            }
            if let restart { try Self.applyRestartPolicy(restart, to: name, bus: bus) }
            if let health { try Self.applyHealthCheck(health, to: name, running: machined.machinePathIfRunning(name) != nil, bus: bus) }
            if let schedule = edit.snapshotSchedule { try Self.applySnapshotSchedule(schedule.schedule, to: name, machined: machined, bus: bus) }
            if let changedSettings { try AtomicFile.write(name.settingsPath, changedSettings) }
            return try Self.currentConfig(name)
        }
    }

    // MARK: - Blocking helpers

    /// A machine's settings as systemd-nspawn finds them: /etc, then /run, and only when neither
    /// exists the untrusted file next to the image (whose privileged keys nspawn ignores).
    struct SettingsSource {
        var settings = NspawnSettings()
        var path: String?
        var rewriteProblem: String?
        var adjacentPath: String?
        var adjacentBoot: Bool?

        var boot: Bool? { path != nil ? settings.boot : adjacentBoot }

        /// The trusted settings to edit. Refused when writing /etc would drop bytes or shadow
        /// the file next to the image, which nspawn stops reading once /etc has one.
        func editable(_ name: MachineName) throws(NspawnError) -> NspawnSettings {
            if let path, let rewriteProblem {
                throw .invalidArgument("will not rewrite '\(path)' of machine '\(name)': \(rewriteProblem)")
            }
            if let adjacentPath {
                throw .busy(name.rawValue, reason: "its settings are in '\(adjacentPath)', next to the image, which systemd-nspawn stops reading once \(name.settingsPath) exists; review it and move it there first")
            }
            return settings
        }
    }

    static func loadSettings(_ name: MachineName, imagePath: String? = nil) throws(NspawnError) -> SettingsSource {
        var source = SettingsSource()
        for path in [name.settingsPath, name.runtimeSettingsPath] {
            if let bytes = try AtomicFile.readBytes(path) {
                source.settings = NspawnSettings(parsing: String(decoding: bytes, as: UTF8.self))
                source.path = path
                source.rewriteProblem = UnitFileDocument.rewriteProblem(bytes)
                return source
            }
        }
        if let imagePath {
            let adjacent = name.adjacentSettingsPath(imagePath: imagePath)
            if let text = try AtomicFile.read(adjacent) {
                source.adjacentPath = adjacent
                source.adjacentBoot = NspawnSettings(parsing: text).boot
            }
        }
        return source
    }

    static func imageFilesystemPath(_ name: MachineName, machined: Machined) throws(NspawnError) -> String? {
        guard let objectPath = try machined.imagePathIfExists(name) else { return nil }
        return try machined.imageProperties(name, path: objectPath).path
    }

    static func currentConfig(_ name: MachineName) throws(NspawnError) -> MachineConfig {
        let source = try loadSettings(name)
        return MachineConfig(name: name.rawValue, path: source.path, settings: source.settings.effective,
                             flavor: try flavorName(of: name), exposed: try exposedAddresses(of: name), restart: try restartPolicy(of: name),
                             health: try healthCheck(of: name), snapshotSchedule: try snapshotSchedule(of: name))
    }

    /// Puts `policy` in force whole (a manifest's), whatever the policy before.
    public func setRestartPolicy(_ name: MachineName, _ policy: RestartPolicy) async throws {
        try await withBus { bus in
            guard try Machined(bus: bus).imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            try Self.applyRestartPolicy(policy, to: name, bus: bus)
        }
    }

    /// The policy of our drop-in; nil when there is none (systemd's template: no restart).
    static func restartPolicy(of name: MachineName) throws(NspawnError) -> RestartPolicy? {
        try AtomicFile.read(name.restartDropInPath).flatMap(RestartPolicy.init(dropIn:))
    }

    /// Writes (or, for the template's default, removes) the drop-in and reloads systemd, which
    /// applies it to a running machine's unit as well.
    static func applyRestartPolicy(_ policy: RestartPolicy, to name: MachineName, bus: BusConnection) throws(NspawnError) {
        if policy.isDefault {
            try AtomicFile.remove(name.restartDropInPath)
            rmdir(name.dropInDirectory)
        } else {
            try AtomicFile.write(name.restartDropInPath, policy.dropIn())
        }
        try SystemdManager(bus: bus).reload()
    }
}
