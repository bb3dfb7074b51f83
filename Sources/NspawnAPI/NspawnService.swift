import NspawnKit

/// Every verb as one call taking its route's request type. Three implementations: the library
/// itself (`LocalService`, which nspawnd serves too), the HTTP client (`APIClient`, over a unix
/// socket or ssh), and the tests' recorder. Imports are operations, not calls: see `APIClient`.
public protocol NspawnService: Sendable {
    /// Who does the work: this process's library (nspawnctl), or the daemon that answers.
    func version() async throws -> VersionInfo
    func list(_ request: ListRequest) async throws -> [MachineSummary]
    func status(_ name: MachineName) async throws -> MachineStatus
    func start(_ name: MachineName) async throws
    /// Starts several machines side by side; each failure beside its name, in the order given.
    func start(_ names: [MachineName]) async -> [(name: MachineName, error: NspawnError)]
    func stop(_ name: MachineName, _ request: StopRequest) async throws
    func reboot(_ name: MachineName, _ request: RebootRequest) async throws
    func terminate(_ name: MachineName) async throws
    func kill(_ name: MachineName, _ request: KillRequest) async throws
    func enable(_ name: MachineName) async throws -> [UnitFileChange]
    func disable(_ name: MachineName) async throws -> [UnitFileChange]
    func remove(_ name: MachineName, _ request: RemoveRequest) async throws
    func rename(_ name: MachineName, _ request: RenameRequest) async throws
    func clone(_ name: MachineName, _ request: CloneRequest) async throws
    func setReadOnly(_ name: MachineName, _ request: ReadOnlyRequest) async throws
    func config(_ name: MachineName) async throws -> MachineConfig
    func configure(_ name: MachineName, _ request: ConfigRequest) async throws -> MachineConfig
    func create(_ request: CreateRequest) async throws -> MachineStatus
    func expose(_ name: MachineName, _ request: ExposeRequest) async throws -> ExposeResult
    func unexpose(_ name: MachineName, _ request: UnexposeRequest) async throws
    func resize(_ name: MachineName, _ request: ResizeRequest) async throws -> ResizeResult
    func rebuild(_ name: MachineName, _ request: RebuildRequest) async throws -> RebuildResult
    func snapshot(_ name: MachineName, _ request: SnapshotRequest) async throws -> SnapshotResult
    func snapshots(_ name: MachineName) async throws -> [SnapshotInfo]
    func restore(_ name: MachineName, _ request: RestoreRequest) async throws -> SnapshotResult
    func removeSnapshot(_ name: MachineName, _ request: SnapshotRemoveRequest) async throws
    /// A file or tree from this host into the machine's root, or out of it; the library only.
    func copyTo(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult
    func copyFrom(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult
    /// machined's MachineNew and MachineRemoved until the consumer stops iterating.
    func events() -> AsyncThrowingStream<MachineEvent, any Error>
    /// A command in a running machine (`exec`; an empty command is `shell`'s login shell).
    /// The caller reads and writes its descriptors whichever way it went: in this process,
    /// or relayed over nspawnd's exec stream.
    func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess
}

/// The library, called in this process: the CLI's direct path, and what nspawnd serves.
extension NspawnService {
    /// One request per machine, all in flight at once (the daemon starts each as it arrives).
    public func start(_ names: [MachineName]) async -> [(name: MachineName, error: NspawnError)] {
        let failures = await withTaskGroup(of: (MachineName, NspawnError?).self) { group in
            for name in names {
                group.addTask {
                    do {
                        try await start(name)
                        return (name, nil)
                    } catch let error as NspawnError {
                        return (name, error)
                    } catch {
                        return (name, .failed("machine '\(name)': \(error)"))
                    }
                }
            }
            var failures: [MachineName: NspawnError] = [:]
            for await (name, error) in group { failures[name] = error }
            return failures
        }
        return names.compactMap { name in failures[name].map { (name, $0) } }
    }
}

public struct LocalService: NspawnService {
    let manager: MachineManager

    public init(manager: MachineManager = MachineManager()) {
        self.manager = manager
    }

    public func version() async throws -> VersionInfo { VersionInfo(name: "nspawnctl") }

    public func list(_ request: ListRequest) async throws -> [MachineSummary] {
        try await manager.list(includeHidden: request.includeHidden)
    }

    public func status(_ name: MachineName) async throws -> MachineStatus { try await manager.status(name) }
    public func start(_ name: MachineName) async throws { try await manager.start(name) }

    public func start(_ names: [MachineName]) async -> [(name: MachineName, error: NspawnError)] {
        await manager.start(names)
    }

    public func stop(_ name: MachineName, _ request: StopRequest) async throws {
        try request.validate()
        try await manager.stop(name, timeout: StopTimeout.wait(request.timeout))
    }

    public func reboot(_ name: MachineName, _ request: RebootRequest) async throws {
        if request.hard ?? false {
            try await manager.resetPower(name)
        } else {
            try await manager.reboot(name)
        }
    }
    public func terminate(_ name: MachineName) async throws { try await manager.terminate(name) }

    public func kill(_ name: MachineName, _ request: KillRequest) async throws {
        try request.validate()
        try await manager.kill(name, signal: try request.unixSignal, whom: request.whom ?? KillRequest.defaultWhom)
    }

    public func enable(_ name: MachineName) async throws -> [UnitFileChange] { try await manager.enable(name) }
    public func disable(_ name: MachineName) async throws -> [UnitFileChange] { try await manager.disable(name) }

    public func remove(_ name: MachineName, _ request: RemoveRequest) async throws {
        try request.validate()
        try await manager.remove(name, force: request.force ?? false, stopTimeout: StopTimeout.wait(request.timeout))
    }

    public func rename(_ name: MachineName, _ request: RenameRequest) async throws {
        try request.validate()
        try await manager.rename(name, to: try MachineName(request.name))
    }

    public func clone(_ name: MachineName, _ request: CloneRequest) async throws {
        try request.validate()
        try await manager.clone(name, to: try MachineName(request.name), readOnly: request.readOnly ?? false)
    }

    public func setReadOnly(_ name: MachineName, _ request: ReadOnlyRequest) async throws {
        try await manager.setReadOnly(name, request.readOnly)
    }

    public func config(_ name: MachineName) async throws -> MachineConfig { try await manager.config(name) }

    public func configure(_ name: MachineName, _ request: ConfigRequest) async throws -> MachineConfig {
        try await requireImage(name)
        let edit = try request.settingsEdit()
        let flavor = try request.flavor.map { (flavor) throws(NspawnError) in try Flavor.load(flavor) }
        if edit.isEmpty && flavor == nil { return try await manager.config(name) }
        return try await manager.configure(name, edit: edit, flavor: flavor)
    }

    public func create(_ request: CreateRequest) async throws -> MachineStatus {
        try await requireImage(try MachineName(request.image))
        try request.validate()
        let name = try MachineName(request.name)
        let settings = request.settings ?? SettingsChange()
        return try await manager.create(
            name, from: try MachineName(request.image), edit: try settings.settingsEdit(),
            flavor: try settings.flavor.map { (flavor) throws(NspawnError) in try Flavor.load(flavor) },
            activation: try request.expose?.activation(for: name), start: request.start ?? false)
    }

    public func expose(_ name: MachineName, _ request: ExposeRequest) async throws -> ExposeResult {
        try await requireImage(name)
        try request.validate(for: name)
        return try await manager.expose(try request.spec.activation(for: name), restart: request.restart ?? false,
                                 stopTimeout: StopTimeout.wait(request.timeout))
    }

    public func unexpose(_ name: MachineName, _ request: UnexposeRequest) async throws {
        try request.validate()
        try await manager.unexpose(name, restart: request.restart ?? false, stopTimeout: StopTimeout.wait(request.timeout))
    }

    public func resize(_ name: MachineName, _ request: ResizeRequest) async throws -> ResizeResult {
        try await requireImage(name)
        try request.validate()
        let flavor = try Flavor.load(request.flavor)
        return ResizeResult(name: name.rawValue, flavor: flavor, limits: try await manager.resize(name, flavor: flavor))
    }

    public func rebuild(_ name: MachineName, _ request: RebuildRequest) async throws -> RebuildResult {
        try await requireImage(name)
        try request.validate()
        return try await manager.rebuild(name, image: try request.image.map { try MachineName($0) },
                                         stopTimeout: StopTimeout.wait(request.timeout))
    }

    public func snapshot(_ name: MachineName, _ request: SnapshotRequest) async throws -> SnapshotResult {
        try request.validate()
        return try await manager.snapshot(name, as: request.name)
    }

    public func snapshots(_ name: MachineName) async throws -> [SnapshotInfo] { try await manager.snapshots(name) }

    public func restore(_ name: MachineName, _ request: RestoreRequest) async throws -> SnapshotResult {
        try request.validate()
        return try await manager.restore(name, from: request.snapshot)
    }

    public func removeSnapshot(_ name: MachineName, _ request: SnapshotRemoveRequest) async throws {
        try request.validate()
        try await manager.removeSnapshot(name, request.snapshot)
    }

    public func copyTo(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        try request.validate()
        return try await manager.copyTo(name, source: request.source, destination: request.destination, replace: request.replace)
    }

    public func copyFrom(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        try request.validate()
        return try await manager.copyFrom(name, source: request.source, destination: request.destination, replace: request.replace)
    }

    public func events() -> AsyncThrowingStream<MachineEvent, any Error> { MachineEvents.stream() }
    public func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess { try await manager.exec(name, spec) }

    /// A machine that does not exist is "not found" whatever else is wrong with the request,
    /// the answer a caller can act on first.
    private func requireImage(_ name: MachineName) async throws {
        _ = try await manager.config(name)
    }
}
