import NspawnKit

/// The library, called in this process: the CLI's direct path, and what nspawnd serves.
/// Imports and manifests run in `nspawnctl-images` as a child (`images`), which links what
/// they need (libcurl, libarchive, the YAML parser) so this process does not.
public struct LocalService: NspawnService {
    let manager: MachineManager
    let images: ImagesHelper

    public init(manager: MachineManager = MachineManager(), images: ImagesHelper = ImagesHelper()) {
        self.manager = manager
        self.images = images
    }

    public func version() async throws -> VersionInfo { VersionInfo(name: "nspawnctl") }

    /// A machine that does not exist is "not found" whatever else is wrong with the request,
    /// the answer a caller can act on first.
    func requireImage(_ name: MachineName) async throws {
        _ = try await manager.config(name)
    }
}

// MARK: Machines

extension LocalService {
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
    public func events() -> AsyncThrowingStream<MachineEvent, any Error> { MachineEvents.stream() }

    public func stats(_ request: StatsRequest) async throws -> [MachineStats] { try await manager.stats(try request.machineNames()) }

    public func logs(_ name: MachineName, _ request: LogRequest) async throws -> AsyncThrowingStream<[LogEntry], any Error> {
        try await manager.logs(name, request)
    }
}

// MARK: Files

extension LocalService {
    public func copyTo(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        try request.validate()
        return try await manager.copyTo(name, source: request.source, destination: request.destination, replace: request.replace)
    }

    public func copyFrom(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        try request.validate()
        return try await manager.copyFrom(name, source: request.source, destination: request.destination, replace: request.replace)
    }

    /// In `nspawnctl-images`, which links libarchive; `-` is this process's stdout.
    public func export(_ name: MachineName, _ request: ExportRequest) async throws -> ExportResult {
        try request.validate()
        return try await images.exportMachine(name, file: request.file, withSnapshots: request.snapshots ?? false).get()
    }

    public func copyMachine(_ name: MachineName, _ request: CopyMachineRequest,
                            progress: @escaping @Sendable (UInt64) -> Void) async throws -> CopyMachineResult {
        try await MachineCopier(manager: manager, images: images, progress: progress).run(name, request)
    }

    public func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess { try await manager.exec(name, spec) }
}
