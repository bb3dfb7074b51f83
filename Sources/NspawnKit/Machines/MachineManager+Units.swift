import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where a machine's settings and units live on the host.
enum MachineFiles {
    /// Trusted settings, written by us. /run is read as a base when /etc has none;
    /// a file next to the image is untrusted and never read.
    static let settingsDirectory = "/etc/systemd/nspawn"
    static let runtimeSettingsDirectory = "/run/systemd/nspawn"

    static func settingsPath(_ name: MachineName) -> String { "\(settingsDirectory)/\(name.rawValue).nspawn" }
    static func runtimeSettingsPath(_ name: MachineName) -> String { "\(runtimeSettingsDirectory)/\(name.rawValue).nspawn" }
    static func dropInDirectory(_ name: MachineName) -> String { "/etc/systemd/system/\(name.serviceUnit).d" }
    static func flavorPath(_ name: MachineName) -> String { "\(dropInDirectory(name))/50-flavor.conf" }
    /// Where SetUnitProperties(runtime) keeps the live copies of a flavor's limits.
    static func controlDropIns(_ name: MachineName) -> [String] {
        ["MemoryMax", "CPUQuota", "CPUQuotaPerSecUSec", "TasksMax", "IOWeight"].map {
            "/run/systemd/system.control/\(name.serviceUnit).d/50-\($0).conf"
        }
    }
}

/// What `config` shows for one machine.
public struct MachineConfig: Sendable, Codable, Equatable {
    public var name: String
    /// The file the settings come from, or nil when there is none.
    public var path: String?
    public var settings: EffectiveSettings
    public var flavor: String?
    public var exposed: [String]
}

/// What `expose` did.
public struct ExposeResult: Sendable, Codable, Equatable {
    public var name: String
    public var addresses: [String]
    public var socketUnit: String
    public var restarted: Bool
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
            if !edit.isEmpty {
                let source = try Self.loadSettings(name, imagePath: Self.imageFilesystemPath(name, machined: machined))
                var settings = try source.editable(name)
                let before = settings.rendered()
                try settings.apply(edit)
                if settings.rendered() != before {
                    try AtomicFile.write(MachineFiles.settingsPath(name), settings.rendered())
                }
            }
            if let flavor {
                try Self.applyFlavor(flavor, to: name, live: machined.machinePathIfRunning(name) != nil, bus: bus)
            }
            return try Self.currentConfig(name)
        }
    }

    /// Applies a flavor's drop-in and, when the machine runs, its limits live.
    public func resize(_ name: MachineName, flavor: Flavor) async throws -> LiveLimits? {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let running = try machined.machinePathIfRunning(name) != nil
            try Self.applyFlavor(flavor, to: name, live: running, bus: bus)
            return running ? try Self.liveLimits(name, bus: bus) : nil
        }
    }

    // MARK: Socket activation

    /// Makes the host listen on `activation.addresses` and start the machine on the first
    /// connection. A running machine is refused unless `restart`: systemd cannot start the
    /// socket while the machine's service is active.
    public func expose(_ activation: SocketActivation, restart: Bool, stopTimeout: Duration) async throws -> ExposeResult {
        try await withBus { bus in
            let name = activation.machine
            let machined = Machined(bus: bus)
            let root = try Self.writableDirectoryImage(name, machined: machined, purpose: "expose")
            let running = try machined.machinePathIfRunning(name) != nil
            if running && !restart {
                throw NspawnError.busy(name.rawValue, reason: "it is running, and systemd cannot listen on its socket while \(name.serviceUnit) is active; stop it first or pass --restart")
            }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let source = try Self.loadSettings(name, imagePath: Self.imageFilesystemPath(name, machined: machined))
            if source.boot == false {
                throw NspawnError.invalidArgument("machine '\(name)' does not boot (Boot=no in \(source.path ?? source.adjacentPath ?? "its settings")); socket activation needs the guest's systemd to take the sockets")
            }
            let systemd = SystemdManager(bus: bus)
            if running {
                // The socket first, so no connection starts the machine again while it changes.
                try Self.stopHostSocket(name, bus: bus)
                try self.stop(name, timeout: stopTimeout, bus: bus)
            }
            do {
                try Self.installSocketActivation(activation, root: root, bus: bus)
            } catch {
                // A machine we stopped runs again, with whatever sockets it had.
                if running { try? systemd.startUnit(name.serviceUnit) }
                throw error
            }
            // Started directly, the service still gets the listening sockets of its socket unit.
            if running { try systemd.startUnit(name.serviceUnit) }
            return ExposeResult(name: name.rawValue, addresses: activation.addresses.map(\.description),
                                socketUnit: SocketActivation.hostSocketUnit(name), restarted: running)
        }
    }

    /// Removes both sides of `expose`. A running machine holds the passed sockets open until it
    /// stops, so it is refused unless `restart`.
    public func unexpose(_ name: MachineName, restart: Bool, stopTimeout: Duration) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let hostUnitExists = access(SocketActivation.hostSocketPath(name), F_OK) == 0
            var root: Directory?
            var readOnly = false
            if let objectPath = try machined.imagePathIfExists(name) {
                let properties = try machined.imageProperties(name, path: objectPath)
                if let path = properties.path { root = try Self.openImageRoot(path, name: name) }
                readOnly = properties.readOnly == true
            }
            let guestExposed = root.map { ContainedRoot(root: $0).exists(SocketActivation.guestSocketPath) } ?? false
            guard hostUnitExists || guestExposed else { throw NspawnError.notExposed(name.rawValue) }
            if guestExposed && readOnly {
                throw NspawnError.busy(name.rawValue, reason: "its image is read-only, so the socket units inside cannot be removed; make it writable first")
            }
            let running = try machined.machinePathIfRunning(name) != nil
            if running && !restart {
                throw NspawnError.busy(name.rawValue, reason: "it is running and holds the passed sockets open until it stops; stop it first or pass --restart")
            }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let systemd = SystemdManager(bus: bus)
            // The host's socket first, so no connection starts the machine again.
            try Self.removeHostSocket(name, bus: bus)
            do {
                if running { try self.stop(name, timeout: stopTimeout, bus: bus) }
                if let root { try Self.removeGuestSide(root, name: name) }
            } catch {
                if running { try? systemd.startUnit(name.serviceUnit) }
                throw error
            }
            if running { try systemd.startUnit(name.serviceUnit) }
        }
    }

    // MARK: Create

    /// Clones `image` as `name`, writes its settings, flavor and sockets, and optionally starts
    /// it. Any failure undoes every step, so nothing of `name` is left behind.
    public func create(_ name: MachineName, from image: MachineName, edit: SettingsEdit, flavor: Flavor?,
                       activation: SocketActivation?, start: Bool) async throws -> MachineStatus {
        try edit.validate()
        if let activation, activation.machine != name {
            throw NspawnError.invalidArgument("socket activation is for '\(activation.machine)', not '\(name)'")
        }
        return try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(image) else { throw NspawnError.noSuchImage(image.rawValue) }
            if try machined.imageExists(name) || machined.machinePathIfRunning(name) != nil {
                throw NspawnError.alreadyExists(name.rawValue)
            }
            // Files of an earlier machine of this name would be adopted silently; refuse instead.
            for path in [MachineFiles.settingsPath(name), MachineFiles.dropInDirectory(name), SocketActivation.hostSocketPath(name)]
            where access(path, F_OK) == 0 {
                throw NspawnError.busy(name.rawValue, reason: "'\(path)' is left from an earlier machine of that name; remove it first")
            }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            try machined.cloneImage(image, to: name, readOnly: false)
            // From here on every failure is undone; a failed clone left nothing of ours to undo.
            do {
                // machined copies the source's settings file along with the image.
                let source = try Self.loadSettings(name, imagePath: Self.imageFilesystemPath(name, machined: machined))
                if activation != nil && source.boot == false {
                    throw NspawnError.invalidArgument("image '\(image)' does not boot (Boot=no in \(source.path ?? source.adjacentPath ?? "its settings")); socket activation needs the guest's systemd")
                }
                if !edit.isEmpty {
                    var settings = try source.editable(name)
                    try settings.apply(edit)
                    try AtomicFile.write(MachineFiles.settingsPath(name), settings.rendered())
                }
                if let flavor { try Self.applyFlavor(flavor, to: name, live: false, bus: bus) }
                if let activation {
                    let root = try Self.writableDirectoryImage(name, machined: machined, purpose: "expose")
                    try Self.installSocketActivation(activation, root: root, bus: bus)
                }
                if start { try SystemdManager(bus: bus).startUnit(name.serviceUnit) }
            } catch {
                Self.undoCreate(name, bus: bus, terminateGrace: terminateGrace)
                throw error
            }
            return try Self.status(name, bus: bus)
        }
    }

    /// Best effort, in reverse order; each step runs even if an earlier one failed.
    static func undoCreate(_ name: MachineName, bus: BusConnection, terminateGrace: Duration) {
        let machined = Machined(bus: bus)
        let systemd = SystemdManager(bus: bus)
        if (try? machined.machinePathIfRunning(name)) != nil {
            if let removal = try? subscribeMachineRemoved(bus) {
                try? machined.terminateMachine(name)
                _ = try? waitUntilGone(name, removal: removal, timeout: terminateGrace, bus: bus)
            }
        }
        try? removeHostSocket(name, bus: bus)
        try? removeUnitFiles(of: name)
        try? systemd.reload()
        try? systemd.resetFailedUnit(name.serviceUnit)
        try? machined.removeImage(name)
        _ = try? AtomicFile.remove(MachineFiles.settingsPath(name))
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
                throw .busy(name.rawValue, reason: "its settings are in '\(adjacentPath)', next to the image, which systemd-nspawn stops reading once /etc/systemd/nspawn/\(name).nspawn exists; review it and move it there first")
            }
            return settings
        }
    }

    static func loadSettings(_ name: MachineName, imagePath: String? = nil) throws(NspawnError) -> SettingsSource {
        var source = SettingsSource()
        for path in [MachineFiles.settingsPath(name), MachineFiles.runtimeSettingsPath(name)] {
            if let bytes = try AtomicFile.readBytes(path) {
                source.settings = NspawnSettings(parsing: String(decoding: bytes, as: UTF8.self))
                source.path = path
                source.rewriteProblem = UnitFileDocument.rewriteProblem(bytes)
                return source
            }
        }
        if let imagePath {
            let adjacent = AtomicFile.split(imagePath).parent + "/\(name.rawValue).nspawn"
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
                             flavor: try flavorName(of: name), exposed: try exposedAddresses(of: name))
    }

    static func flavorName(of name: MachineName) throws(NspawnError) -> String? {
        try AtomicFile.read(MachineFiles.flavorPath(name)).flatMap(Flavor.name(inDropIn:))
    }

    static func exposedAddresses(of name: MachineName) throws(NspawnError) -> [String] {
        try AtomicFile.read(SocketActivation.hostSocketPath(name)).map(SocketActivation.addresses(inHostUnit:)) ?? []
    }

    /// Writes the drop-in, drops live copies of older limits, reloads, and applies the limits
    /// live when the machine runs.
    static func applyFlavor(_ flavor: Flavor, to name: MachineName, live: Bool, bus: BusConnection) throws(NspawnError) {
        try AtomicFile.write(MachineFiles.flavorPath(name), flavor.dropIn())
        // Runtime properties from an earlier resize would shadow the new drop-in until reboot.
        for path in MachineFiles.controlDropIns(name) { try AtomicFile.remove(path) }
        let systemd = SystemdManager(bus: bus)
        try systemd.reload()
        if live { try systemd.setUnitProperties(name.serviceUnit, runtime: true, flavor.unitProperties) }
    }

    static func liveLimits(_ name: MachineName, bus: BusConnection) throws(NspawnError) -> LiveLimits {
        let p = try SystemdManager(bus: bus).unitProperties(name.serviceUnit, interface: "org.freedesktop.systemd1.Service")
        return LiveLimits(memoryMax: knownSize(p["MemoryMax"]?.uint64), cpuQuotaPerSecUSec: knownSize(p["CPUQuotaPerSecUSec"]?.uint64),
                          tasksMax: knownSize(p["TasksMax"]?.uint64), ioWeight: knownSize(p["IOWeight"]?.uint64),
                          memoryCurrent: knownSize(p["MemoryCurrent"]?.uint64))
    }

    /// The image's root, which must be a writable directory (the guest's units are written into it).
    static func writableDirectoryImage(_ name: MachineName, machined: Machined, purpose: String) throws(NspawnError) -> Directory {
        guard let path = try machined.imagePathIfExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
        let properties = try machined.imageProperties(name, path: path)
        guard properties.type == "directory" || properties.type == "subvolume", let imagePath = properties.path else {
            throw NspawnError.invalidArgument("cannot \(purpose) machine '\(name)': its image is a \(properties.type ?? "unknown") image; only directory images are supported")
        }
        if properties.readOnly == true {
            throw NspawnError.busy(name.rawValue, reason: "its image is read-only")
        }
        return try openImageRoot(imagePath, name: name)
    }

    static func openImageRoot(_ path: String, name: MachineName) throws(NspawnError) -> Directory {
        do { return try Directory(path: path) } catch {
            throw .system("cannot open the root of machine '\(name)' at '\(path)'", error)
        }
    }

    /// Guest side first, then the host's socket. On failure both sides are taken back to what
    /// they were, an earlier expose included.
    static func installSocketActivation(_ activation: SocketActivation, root: Directory, bus: BusConnection) throws(NspawnError) {
        let name = activation.machine
        let guest = ContainedRoot(root: root)
        if case .exec(let command) = activation.handler, let program = command.first, !guest.exists(program) {
            throw NspawnError.invalidArgument("'\(program.escapedForMessage)' does not exist inside machine '\(name)'")
        }
        let previous = try ExposedFiles(of: name, guest: guest)
        do {
            // An earlier expose is replaced whole: its socket must let go of the old addresses.
            try removeHostSocket(name, bus: bus)
            try writeGuestSide(activation, root: root)
            try startHostSocket(name, text: activation.hostSocketText(), bus: bus)
        } catch {
            try? removeHostSocket(name, bus: bus)
            try? removeGuestSide(root, name: name)
            try? previous.restore(guest: guest, bus: bus)
            throw error
        }
    }

    static func startHostSocket(_ name: MachineName, text: String, bus: BusConnection) throws(NspawnError) {
        let systemd = SystemdManager(bus: bus)
        let socketUnit = SocketActivation.hostSocketUnit(name)
        try AtomicFile.write(SocketActivation.hostSocketPath(name), text)
        try systemd.reload()
        _ = try systemd.enableUnitFiles([socketUnit])
        try systemd.startUnit(socketUnit)
    }

    /// Both sides of an earlier expose, kept so a failed replacement can put them back.
    struct ExposedFiles {
        var host: String?
        var guestSocket: [UInt8]?
        var guestService: [UInt8]?

        init(of name: MachineName, guest: ContainedRoot) throws(NspawnError) {
            host = try AtomicFile.read(SocketActivation.hostSocketPath(name))
            do {
                guestSocket = try guest.read(SocketActivation.guestSocketPath)
                guestService = try guest.read(SocketActivation.guestServicePath)
            } catch {
                throw .system("cannot read the socket units inside machine '\(name)'", error)
            }
            self.name = name
        }

        let name: MachineName

        func restore(guest: ContainedRoot, bus: BusConnection) throws {
            guard let host, let guestSocket else { return }
            try guest.makeDirectories("/etc/systemd/system/sockets.target.wants")
            try guest.write(SocketActivation.guestSocketPath, guestSocket)
            if let guestService { try guest.write(SocketActivation.guestServicePath, guestService) }
            try guest.symlink(SocketActivation.guestSocketPath, at: SocketActivation.guestWantsLink)
            try MachineManager.startHostSocket(name, text: host, bus: bus)
        }
    }

    static func writeGuestSide(_ activation: SocketActivation, root: Directory) throws(NspawnError) {
        let guest = ContainedRoot(root: root)
        let service = try activation.guestServiceText()
        do throws(Errno) {
            try guest.makeDirectories("/etc/systemd/system/sockets.target.wants")
            try guest.write(SocketActivation.guestSocketPath, Array(activation.guestSocketText().utf8))
            if let service {
                try guest.write(SocketActivation.guestServicePath, Array(service.utf8))
            } else {
                try guest.remove(SocketActivation.guestServicePath)
            }
            try guest.symlink(SocketActivation.guestSocketPath, at: SocketActivation.guestWantsLink)
        } catch {
            throw .system("cannot write the socket units inside machine '\(activation.machine)'", error)
        }
    }

    static func removeGuestSide(_ root: Directory, name: MachineName) throws(NspawnError) {
        let guest = ContainedRoot(root: root)
        do {
            for path in [SocketActivation.guestWantsLink, SocketActivation.guestSocketPath, SocketActivation.guestServicePath] {
                try guest.remove(path)
            }
        } catch {
            throw .system("cannot remove the socket units inside machine '\(name)'", error)
        }
    }

    /// Stops and disables the host's socket unit and removes its file. Nothing to do is fine.
    static func removeHostSocket(_ name: MachineName, bus: BusConnection) throws(NspawnError) {
        let systemd = SystemdManager(bus: bus)
        let socketUnit = SocketActivation.hostSocketUnit(name)
        let path = SocketActivation.hostSocketPath(name)
        guard access(path, F_OK) == 0 else { return }
        try stopHostSocket(name, bus: bus)
        _ = try systemd.disableUnitFiles([socketUnit])
        try AtomicFile.remove(path)
        try systemd.reload()
        try systemd.resetFailedUnit(socketUnit)
    }

    /// Stops the host's socket unit (if it exists) without removing it.
    static func stopHostSocket(_ name: MachineName, bus: BusConnection) throws(NspawnError) {
        let systemd = SystemdManager(bus: bus)
        let socketUnit = SocketActivation.hostSocketUnit(name)
        if let state = try systemd.unitStates([socketUnit])[socketUnit], state.active != "inactive" {
            try systemd.stopUnit(socketUnit)
        }
    }

    /// The flavor drop-in (and its live copies); the directory goes only when empty.
    static func removeUnitFiles(of name: MachineName) throws(NspawnError) {
        try AtomicFile.remove(MachineFiles.flavorPath(name))
        for path in MachineFiles.controlDropIns(name) { try AtomicFile.remove(path) }
        rmdir(MachineFiles.dropInDirectory(name))
        rmdir("/run/systemd/system.control/\(name.serviceUnit).d")
    }
}
