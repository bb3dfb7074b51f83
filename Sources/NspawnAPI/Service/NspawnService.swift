import NspawnKit

/// Every verb as one call taking its route's request type, in four concerns. Three
/// implementations: the library (`LocalService`: nspawnctl's direct path, and what nspawnd
/// serves), the HTTP client (`APIClient`, over a unix socket or ssh), and the tests' recorder.
/// Which process does the work is the implementation's business: the CLI only parses and renders.
public protocol NspawnService: MachineService, ImageService, SettingsService, FileService, ManifestService {
    /// Who does the work: this process's library (nspawnctl), or the daemon that answers.
    func version() async throws -> VersionInfo
}

/// Machines as machined and systemd run them.
public protocol MachineService: Sendable {
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
    /// machined's MachineNew and MachineRemoved until the consumer stops iterating.
    func events() -> AsyncThrowingStream<MachineEvent, any Error>
    /// One sample of each running machine named (every running container when none is).
    func stats(_ request: StatsRequest) async throws -> [MachineStats]
    /// The machine's journal window in batches, oldest first; the request is checked and the
    /// machine found before the stream starts. Following, an empty batch is a heartbeat.
    func logs(_ name: MachineName, _ request: LogRequest) async throws -> AsyncThrowingStream<[LogEntry], any Error>
}

/// Images in /var/lib/machines: imported, cloned, renamed, snapshotted, removed.
public protocol ImageService: Sendable {
    /// An import or a recipe's bootstrap to its end; `progress` sees it go, `cancellation`
    /// stops it (and what it wrote is removed). A nil name is the next free childNN (recipes only).
    func importImage(_ name: MachineName?, _ job: ImportJob, cancellation: ImportCancellation,
                     progress: @escaping @Sendable (ImportProgress) -> Void) async throws -> ImportResult
    func remove(_ name: MachineName, _ request: RemoveRequest) async throws
    func rename(_ name: MachineName, _ request: RenameRequest) async throws
    func clone(_ name: MachineName, _ request: CloneRequest) async throws
    func setReadOnly(_ name: MachineName, _ request: ReadOnlyRequest) async throws
    func snapshot(_ name: MachineName, _ request: SnapshotRequest) async throws -> SnapshotResult
    func snapshots(_ name: MachineName) async throws -> [SnapshotInfo]
    func restore(_ name: MachineName, _ request: RestoreRequest) async throws -> SnapshotResult
    func removeSnapshot(_ name: MachineName, _ request: SnapshotRemoveRequest) async throws
}

/// A machine's settings, flavor and exposure, and the machines made from them.
public protocol SettingsService: Sendable {
    func config(_ name: MachineName) async throws -> MachineConfig
    func configure(_ name: MachineName, _ request: ConfigRequest) async throws -> MachineConfig
    func create(_ request: CreateRequest) async throws -> MachineStatus
    func expose(_ name: MachineName, _ request: ExposeRequest) async throws -> ExposeResult
    func unexpose(_ name: MachineName, _ request: UnexposeRequest) async throws
    /// A new flavor, pending until confirmed, reverted, or its window ends (Nova's resize).
    func resize(_ name: MachineName, _ request: ResizeRequest) async throws -> ResizeResult
    func confirmResize(_ name: MachineName) async throws -> ResizeResult
    func revertResize(_ name: MachineName) async throws -> ResizeResult
    func rebuild(_ name: MachineName, _ request: RebuildRequest) async throws -> RebuildResult
}

/// What goes into and out of a machine: files and processes.
public protocol FileService: Sendable {
    /// A file or tree from this host into the machine's root, or out of it.
    func copyTo(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult
    func copyFrom(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult
    /// The whole machine into one archive on this host (`export`).
    func export(_ name: MachineName, _ request: ExportRequest) async throws -> ExportResult
    /// The whole machine to another host over ssh (`copy-machine`, `move-machine`); `progress`
    /// sees the bytes sent so far.
    func copyMachine(_ name: MachineName, _ request: CopyMachineRequest,
                     progress: @escaping @Sendable (UInt64) -> Void) async throws -> CopyMachineResult
    /// A command in a running machine (`exec`; an empty command is `shell`'s login shell).
    /// The caller reads and writes its descriptors whichever way it went: in this process,
    /// or relayed over nspawnd's exec stream.
    func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess
}

/// Manifests: what applying one would change, where its values come from, and the apply.
public protocol ManifestService: Sendable {
    func plan(_ request: PlanRequest) async throws -> ProvisionPlan
    /// Each value of one machine of the manifest and the layer it came from; changes nothing.
    func explain(_ request: PlanRequest, machine: MachineName) async throws -> [ExplanationLine]
    /// Converges to the manifest; `progress` sees each change and failure as it happens. The
    /// report says per machine what changed, what failed and what its undo left.
    func apply(_ request: ApplyRequest, progress: @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport
}

extension MachineService {
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
