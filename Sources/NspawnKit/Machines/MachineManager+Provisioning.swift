import CLinux
import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What a manifest's apply recorded on a machine's root (an xattr, so it survives reboots,
/// travels with rename and goes with the machine): who created it, and which settings the
/// manifest managed, so a key dropped from the manifest can be removed.
public struct ProvisioningRecord: Codable, Sendable, Equatable {
    public var manifest: String
    /// Created by that manifest's apply: only then may `--prune` remove it.
    public var created: Bool
    /// `Section.Key` of every setting the manifest set at its last apply.
    public var settings: [String]

    public init(manifest: String, created: Bool, settings: [String]) {
        self.manifest = manifest
        self.created = created
        self.settings = settings
    }

    package static let attribute = "user.nspawnctl.manifest"
}

/// A guest file as it is on disk, ids as the guest sees them.
public struct GuestFileState: Sendable, Equatable {
    public var content: [UInt8]
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32

    public init(content: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) {
        self.content = content
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }
}

/// One machine as `plan` sees it.
public struct ObservedMachine: Sendable {
    public var exists = false
    public var running = false
    public var enabled = false
    public var flavor: String?
    public var restart: RestartPolicy?
    public var health: HealthCheck?
    public var snapshotSchedule: SnapshotSchedule?
    /// The trusted settings file (/etc, then /run); empty when there is none.
    public var settings = NspawnSettings()
    public var record: ProvisioningRecord?
    public var origin: MachineName?
    /// The host's socket unit exists.
    public var exposed = false
    /// Both sides of the exposure are exactly what the manifest asks for.
    public var exposureMatches = false
    /// Present files among those asked about; absent ones are missing from the map.
    public var files: [String: GuestFileState] = [:]
    /// Guest paths that exist among those asked about (`creates:` guards).
    public var existingPaths: Set<String> = []
    /// The guest's package manager: apt, pacman, apk or dnf.
    public var packageManager: String?

    public init() {}
}

/// Host-side files of one machine as they were, to put back when a manifest's apply fails.
public struct HostSideState: Sendable {
    var files: [(path: String, bytes: [UInt8]?)]
    var enabled: Bool
    var name: MachineName
}

extension MachineManager {
    // MARK: Provisioning

    static let packageManagers: [(name: String, path: String)] = [
        ("apt", "/usr/bin/apt-get"), ("pacman", "/usr/bin/pacman"), ("apk", "/sbin/apk"), ("dnf", "/usr/bin/dnf"),
    ]

    /// Everything `plan` compares for `name`, read without changing anything. `exposure` is the
    /// exposure the manifest wants (compared file by file); `files` and `paths` are guest paths.
    public func observe(_ name: MachineName, exposure: SocketActivation?, files: [String], paths: [String]) async throws -> ObservedMachine {
        try await withBus { bus in
            var observed = ObservedMachine()
            let machined = Machined(bus: bus)
            guard let objectPath = try machined.imagePathIfExists(name) else {
                observed.running = try machined.machinePathIfRunning(name) != nil
                return observed
            }
            observed.exists = true
            observed.running = try machined.machinePathIfRunning(name) != nil
            observed.enabled = try SystemdManager(bus: bus).unitFileState(name.serviceUnit).map { $0 == "enabled" || $0 == "enabled-runtime" } ?? false
            observed.flavor = try Self.flavorName(of: name)
            observed.restart = try Self.restartPolicy(of: name)
            observed.health = try Self.healthCheck(of: name)
            observed.snapshotSchedule = try Self.snapshotSchedule(of: name)
            observed.settings = try Self.loadSettings(name).settings
            observed.exposed = access(name.socketUnitPath, F_OK) == 0
            let properties = try machined.imageProperties(name, path: objectPath)
            guard let path = properties.path, properties.type == "directory" || properties.type == "subvolume",
                  let rootDirectory = try? Directory(path: path) else { return observed }
            observed.record = Self.provisioningRecord(on: rootDirectory)
            observed.origin = try? ImageOrigin.read(from: rootDirectory)
            let guest = ContainedRoot(root: rootDirectory)
            if let exposure {
                observed.exposureMatches = try Self.exposureMatches(exposure, guest: guest)
            }
            let st: stat
            do throws(Errno) { st = try rootDirectory.descriptor.status() } catch { throw NspawnError.system("cannot read '\(path)'", error) }
            let base = MachineRoot.idBase(uid: st.st_uid, gid: st.st_gid)
            let root = MachineRoot(name: name, path: path, directory: rootDirectory, idBase: base)
            for file in files {
                if let state = try Self.guestFile(file, in: root) { observed.files[file] = state }
            }
            for candidate in paths where guest.exists(candidate) { observed.existingPaths.insert(candidate) }
            observed.packageManager = Self.packageManagers.first { guest.exists($0.path) }?.name
            return observed
        }
    }

    static func exposureMatches(_ activation: SocketActivation, guest: ContainedRoot) throws(NspawnError) -> Bool {
        guard try AtomicFile.read(activation.machine.socketUnitPath) == activation.hostSocketText() else { return false }
        let service = try activation.guestServiceText().map { Array($0.utf8) }
        do throws(Errno) {
            guard try guest.read(SocketActivation.guestSocketPath) == Array(activation.guestSocketText().utf8) else { return false }
            return try guest.read(SocketActivation.guestServicePath) == service && guest.exists(SocketActivation.guestWantsLink)
        } catch {
            return false
        }
    }

    static func guestFile(_ path: String, in root: MachineRoot) throws(NspawnError) -> GuestFileState? {
        guard let (directory, base) = try root.parent(of: path) else { return nil }
        let st: stat
        do throws(Errno) {
            guard let found = try directory.status(base) else { return nil }
            st = found
        } catch {
            throw NspawnError.system("cannot read '\(path.escapedForMessage)' in machine '\(root.name)'", error)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw NspawnError.invalidArgument("'\(path.escapedForMessage)' in machine '\(root.name)' is not a regular file; the manifest manages files only")
        }
        let content: [UInt8]
        do throws(Errno) {
            let fd = try FileDescriptor.opening { openat(directory.descriptor.rawValue, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            defer { try? fd.close() }
            content = try fd.readAll(limit: 1024 * 1024 + 1)
        } catch {
            throw NspawnError.system("cannot read '\(path.escapedForMessage)' in machine '\(root.name)'", error)
        }
        let (uid, gid) = root.idBase.map { (st.st_uid &- $0.uid, st.st_gid &- $0.gid) } ?? (st.st_uid, st.st_gid)
        return GuestFileState(content: content, mode: UInt32(st.st_mode & 0o7777), uid: uid, gid: gid)
    }

    static func provisioningRecord(on root: Directory) -> ProvisioningRecord? {
        guard let value = try? ExtendedAttributes.descriptor(root.descriptor).value(ProvisioningRecord.attribute) else { return nil }
        return try? WireJSON.decoder().decode(ProvisioningRecord.self, from: Data(value))
    }

    /// Replaces the values of each key given and removes the keys in `remove`, writing the
    /// settings file atomically and only when its text changes. True when it changed.
    public func setSettings(_ name: MachineName, values: [(SettingKey, [String])], remove: [SettingKey]) async throws -> Bool {
        for (key, list) in values { for value in list { try key.validate(value) } }
        return try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let source = try Self.loadSettings(name, imagePath: Self.imageFilesystemPath(name, machined: machined))
            var settings = try source.editable(name)
            let before = settings.rendered()
            for key in remove { settings.document.remove(key.section, key.name) }
            for (key, list) in values { settings.document.set(key.section, key.name, to: list) }
            guard settings.rendered() != before else { return false }
            try AtomicFile.write(name.settingsPath, settings.rendered())
            return true
        }
    }

    /// Writes a guest file atomically with its mode and owner (guest ids), creating missing
    /// parent directories (0755). The machine may be running or not.
    public func writeGuestFile(_ name: MachineName, path: String, content: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) async throws {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: true)
            let guest = ContainedRoot(root: root.directory)
            let parentPath = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if !parentPath.isEmpty {
                do throws(Errno) { try guest.makeDirectories(parentPath) } catch {
                    throw NspawnError.system("cannot create '\(parentPath.escapedForMessage)' in machine '\(name)'", error)
                }
            }
            guard let (directory, base) = try root.parent(of: path) else {
                throw NspawnError.invalidArgument("'\(path.escapedForMessage)' does not name a file in machine '\(name)'")
            }
            let owner = root.idBase.map { (uid_t($0.uid &+ uid), gid_t($0.gid &+ gid)) } ?? (uid_t(uid), gid_t(gid))
            let existing: stat?
            do throws(Errno) { existing = try directory.status(base) } catch {
                throw NspawnError.system("cannot read '\(path.escapedForMessage)' in machine '\(name)'", error)
            }
            if let existing, (existing.st_mode & S_IFMT) != S_IFREG {
                throw NspawnError.invalidArgument("'\(path.escapedForMessage)' in machine '\(name)' is not a regular file; the manifest manages files only")
            }
            do throws(Errno) {
                try directory.replaceFile(base, with: content, mode: mode_t(mode), owner: owner)
            } catch {
                throw NspawnError.system("cannot write '\(path.escapedForMessage)' in machine '\(name)'", error)
            }
        }
    }

    /// The guest's ids for a user and group name (or number), from the guest's own files.
    public func guestIDs(_ name: MachineName, user: String, group: String?) async throws -> (uid: UInt32, gid: UInt32) {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: false)
            let guest = ContainedRoot(root: root.directory)
            let passwd = GuestAccounts.parsePasswd(String(decoding: (try? guest.read("/etc/passwd")) ?? nil ?? [], as: UTF8.self))
            let groups = GuestAccounts.parseGroup(String(decoding: (try? guest.read("/etc/group")) ?? nil ?? [], as: UTF8.self))
            let uid: UInt32
            var gid: UInt32
            if let entry = passwd.first(where: { $0.name == user }) {
                uid = entry.uid
                gid = entry.gid
            } else if let number = GuestAccounts.id(user) ?? (user == "root" ? 0 : nil) {
                // uid 0 is root in every guest, with a passwd file or without one (busybox roots).
                uid = number
                gid = number
            } else {
                throw NspawnError.invalidArgument("machine '\(name)' has no user '\(user.escapedForMessage)' in its /etc/passwd")
            }
            if let group {
                if let entry = groups.first(where: { $0.name == group }) {
                    gid = entry.gid
                } else if let number = GuestAccounts.id(group) ?? (group == "root" ? 0 : nil) {
                    gid = number
                } else {
                    throw NspawnError.invalidArgument("machine '\(name)' has no group '\(group.escapedForMessage)' in its /etc/group")
                }
            }
            return (uid, gid)
        }
    }

    /// Records (or, with nil, removes) what a manifest's apply keeps on the machine's root.
    public func setProvisioningRecord(_ name: MachineName, _ record: ProvisioningRecord?) async throws {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: true)
            let attributes = ExtendedAttributes.descriptor(root.directory.descriptor)
            var bytes: [UInt8]?
            if let record { bytes = Array(try WireJSON.encoder(pretty: false).encode(record)) }
            do throws(Errno) {
                if let bytes {
                    if try attributes.value(ProvisioningRecord.attribute) != bytes { try attributes.set(ProvisioningRecord.attribute, bytes) }
                } else if fremovexattr(root.directory.descriptor.rawValue, ProvisioningRecord.attribute) != 0, errno != ENODATA {
                    throw Errno.last
                }
            } catch {
                throw NspawnError.system("cannot record the manifest on the root of '\(name)'", error)
            }
        }
    }

    /// The host-side files of `name` (settings, drop-ins, socket unit) and its enablement.
    public func hostSideState(_ name: MachineName) async throws -> HostSideState {
        try await withBus { bus in
            var files: [(String, [UInt8]?)] = []
            for path in [name.settingsPath, name.flavorDropInPath, name.restartDropInPath, name.socketUnitPath,
                         name.healthServicePath, name.healthTimerPath, name.healthDropInPath,
                         name.snapshotServicePath, name.snapshotTimerPath] + name.controlDropIns {
                files.append((path, try AtomicFile.readBytes(path)))
            }
            let enabled = try SystemdManager(bus: bus).unitFileState(name.serviceUnit).map { $0 == "enabled" } ?? false
            return HostSideState(files: files, enabled: enabled, name: name)
        }
    }

    /// Puts `state` back: files rewritten or removed, systemd reloaded, enablement restored,
    /// and the host socket stopped when it did not exist before.
    public func restoreHostSide(_ state: HostSideState) async throws {
        let name = state.name
        try await withBus { bus in
            let systemd = SystemdManager(bus: bus)
            let socketExisted = state.files.first { $0.path == name.socketUnitPath }?.bytes != nil
            if !socketExisted { try Self.removeHostSocket(name, bus: bus) }
            for (path, bytes) in state.files {
                if let bytes {
                    if try AtomicFile.readBytes(path) != bytes { try AtomicFile.write(path, String(decoding: bytes, as: UTF8.self)) }
                } else {
                    _ = try AtomicFile.remove(path)
                }
            }
            try systemd.reload()
            try Self.settleSnapshotTimer(of: name, bus: bus)
            let enabled = try systemd.unitFileState(name.serviceUnit).map { $0 == "enabled" } ?? false
            if enabled != state.enabled {
                if state.enabled { _ = try systemd.enableUnitFiles([name.serviceUnit]) } else { _ = try systemd.disableUnitFiles([name.serviceUnit]) }
                try systemd.reload()
            }
        }
    }
}
