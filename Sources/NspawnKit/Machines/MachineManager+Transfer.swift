import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A machine's host-side state as an export archive carries it: what lives outside its root.
/// Units are kept as what they mean (a flavor, addresses, the health check), never as unit text,
/// so an import writes them for its own name, and an archive cannot bring a host command
/// (an ExecStartPre= in a drop-in or socket unit) along.
public struct MachineHostState: Codable, Sendable, Equatable {
    /// `/etc/systemd/nspawn/NAME.nspawn`, as written.
    public var settings: String?
    public var flavor: Flavor?
    public var restart: RestartPolicy?
    public var health: HealthCheck?
    public var snapshotSchedule: SnapshotSchedule?
    /// Where `systemd-nspawn@NAME.socket` listens: the host side of an exposure (its guest side is in the root).
    public var exposure: [ListenAddress]?
    /// Started at boot (`systemd-nspawn@NAME.service` enabled).
    public var enabled: Bool

    public init(settings: String? = nil, flavor: Flavor? = nil, restart: RestartPolicy? = nil, health: HealthCheck? = nil,
                snapshotSchedule: SnapshotSchedule? = nil, exposure: [ListenAddress]? = nil, enabled: Bool = false) {
        self.settings = settings
        self.flavor = flavor
        self.restart = restart
        self.health = health
        self.snapshotSchedule = snapshotSchedule
        self.exposure = exposure
        self.enabled = enabled
    }

    /// The parts that are there, for messages: `settings, flavor, exposure, enablement`.
    public var parts: [String] {
        var parts: [String] = []
        if settings != nil { parts.append("settings") }
        if let flavor { parts.append("flavor \(flavor.name)") }
        if restart != nil { parts.append("restart policy") }
        if health != nil { parts.append("health check") }
        if snapshotSchedule != nil { parts.append("snapshot schedule") }
        if let exposure { parts.append("exposure \(exposure.map(\.description).joined(separator: " "))") }
        if enabled { parts.append("enablement") }
        return parts
    }
}

/// What `export` reads, held for as long as the archive is written: the name's lock, the tree
/// to read (the root, or a snapshot of a running machine's root, removed at `finish()`).
package final class ExportSource: @unchecked Sendable {
    package let name: MachineName
    package let rootPath: String
    /// The snapshot taken because the machine runs; nil for a stopped machine.
    package let temporarySnapshot: String?
    package let host: MachineHostState
    package let snapshots: [SnapshotInfo]
    private let lock: FileLock
    private let store: SnapshotStore
    private var finished = false

    init(name: MachineName, rootPath: String, temporarySnapshot: String?, host: MachineHostState, snapshots: [SnapshotInfo],
         lock: FileLock, store: SnapshotStore) {
        self.name = name
        self.rootPath = rootPath
        self.temporarySnapshot = temporarySnapshot
        self.host = host
        self.snapshots = snapshots
        self.lock = lock
        self.store = store
    }

    /// Removes the temporary snapshot and lets go of the name.
    package func finish() {
        guard !finished else { return }
        finished = true
        if let temporarySnapshot, let directory = try? store.open() {
            try? SnapshotStore.removeTree(temporarySnapshot, in: directory, label: "\(store.path)/\(temporarySnapshot)")
            if rmdir(store.path) == 0 { rmdir("\(store.imagesDirectory)/\(SnapshotStore.directoryName)") }
        }
        withExtendedLifetime(lock) {}
    }

    deinit { finish() }
}

extension MachineManager {
    // MARK: Export and import of whole machines

    /// Locks the machine's name and gathers what an export writes. A running machine's root is
    /// read from a snapshot taken now (crash-consistent), so the archive is one moment of it.
    package static func prepareExport(_ name: MachineName, withSnapshots: Bool) throws -> ExportSource {
        let bus = try connectSystemBus()
        let lock = try ImageStore.system.lockName(name)
        let machined = Machined(bus: bus)
        let root = try MachineRoot.open(name, machined: machined, writable: false)
        let store = SnapshotStore(machine: name, imagePath: root.path)
        let snapshots = withSnapshots ? try store.list() : []
        let host = try hostState(of: name, bus: bus)
        var rootPath = root.path
        var temporary: String?
        if try machined.machinePathIfRunning(name) != nil {
            let directory = try store.openOrCreate()
            let snapshot = temporaryName("export")
            _ = try copyRoot(root.directory, label: root.path, to: snapshot, in: directory, label: "\(store.path)/\(snapshot)", readOnly: true)
            temporary = snapshot
            rootPath = store.path(of: snapshot)
        }
        return ExportSource(name: name, rootPath: rootPath, temporarySnapshot: temporary, host: host, snapshots: snapshots,
                            lock: lock, store: store)
    }

    /// What `name` has on this host now, as an export records it.
    package static func hostState(of name: MachineName) throws(NspawnError) -> MachineHostState {
        try hostState(of: name, bus: try connectSystemBus())
    }

    static func hostState(of name: MachineName, bus: BusConnection) throws(NspawnError) -> MachineHostState {
        let addresses = try exposedAddresses(of: name).map { (text) throws(NspawnError) in try ListenAddress(parsing: text) }
        return MachineHostState(settings: try AtomicFile.read(name.settingsPath), flavor: try flavorInForce(of: name),
                                restart: try restartPolicy(of: name), health: try healthCheck(of: name),
                                snapshotSchedule: try snapshotSchedule(of: name), exposure: addresses.isEmpty ? nil : addresses,
                                enabled: SystemdManager.isEnabled(try SystemdManager(bus: bus).unitFileState(name.serviceUnit)))
    }

    /// Writes an archive's host state for `name`, whose image was just imported: replaces what
    /// is there (an import with --force), and removes what the archive does not have.
    package static func installHostState(_ state: MachineHostState, for name: MachineName) throws {
        let bus = try connectSystemBus()
        let systemd = SystemdManager(bus: bus)
        let machined = Machined(bus: bus)
        if let settings = state.settings { try AtomicFile.write(name.settingsPath, settings) } else { try AtomicFile.remove(name.settingsPath) }
        if let flavor = state.flavor { try writeFlavor(flavor, to: name) } else { try AtomicFile.remove(name.flavorDropInPath) }
        if let restart = state.restart { try applyRestartPolicy(restart, to: name, bus: bus) } else { try AtomicFile.remove(name.restartDropInPath) }
        rmdir(name.dropInDirectory)
        try systemd.reload()
        try applyHealthCheck(state.health, to: name, running: false, bus: bus)
        try applySnapshotSchedule(state.snapshotSchedule, to: name, machined: machined, bus: bus)
        if let addresses = state.exposure, !addresses.isEmpty {
            try startHostSocket(name, text: SocketActivation.hostSocketText(machine: name, addresses: addresses), bus: bus)
        } else {
            try removeHostSocket(name, bus: bus)
        }
        let enabled = SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit))
        if state.enabled != enabled {
            if state.enabled {
                _ = try systemd.enableUnitFiles([name.serviceUnit, "machines.target"])
            } else {
                _ = try systemd.disableUnitFiles([name.serviceUnit])
            }
            try systemd.reload()
        }
    }

    /// Puts snapshots extracted from an archive (`directory/SNAP`, records in `records`) into
    /// the machine's store, read-only as `snapshot` makes them.
    package static func adoptSnapshots(_ snapshots: [SnapshotInfo], from directory: Directory, directoryPath: String,
                                       for name: MachineName, imagesDirectory: String) throws {
        guard !snapshots.isEmpty else { return }
        let store = SnapshotStore(machine: name, imagesDirectory: imagesDirectory)
        let target = try store.openOrCreate()
        for snapshot in snapshots {
            try SnapshotInfo.check(snapshot.name)
            do throws(Errno) {
                try directory.rename(snapshot.name, to: snapshot.name, in: target)
            } catch {
                throw NspawnError.system("cannot move snapshot '\(directoryPath)/\(snapshot.name)' to '\(store.path(of: snapshot.name))'", error)
            }
            var info = snapshot
            info.path = store.path(of: snapshot.name)
            info.method = .copy
            info.scheduled = snapshot.scheduled
            try store.writeRecord(info)
            do throws(Errno) { try SnapshotStore.setImmutable(try target.openDirectory(snapshot.name), true) } catch {
                throw NspawnError.system("cannot make snapshot '\(info.path)' read-only", error)
            }
        }
        try? target.sync()
    }
}
