import NspawnKit

extension LocalService {
    /// In `nspawnctl-images`, given this process's stdin for `-`; a cancel signals it, and
    /// it removes what it wrote.
    public func importImage(_ name: MachineName?, _ job: ImportJob, cancellation: ImportCancellation,
                            progress: @escaping @Sendable (ImportProgress) -> Void) async throws -> ImportResult {
        let cancel = ChildCancel()
        cancellation.onCancel { cancel.cancel() }
        return try await images.importImage(job, name: name, cancel: cancel, progress: progress).get()
    }

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

    public func snapshot(_ name: MachineName, _ request: SnapshotRequest) async throws -> SnapshotResult {
        // A missing machine is 404 whatever the body says, as for config.
        try await requireImage(name)
        try request.validate()
        return try await manager.snapshot(name, as: request.name, expiresAfter: try request.expiresAfter())
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
}
