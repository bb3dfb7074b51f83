import NspawnKit

extension LocalService {
    public func config(_ name: MachineName) async throws -> MachineConfig { try await manager.config(name) }

    public func configure(_ name: MachineName, _ request: ConfigRequest) async throws -> MachineConfig {
        try await requireImage(name)
        let edit = try request.settingsEdit()
        let flavor = try request.flavor.map { (flavor) throws(NspawnError) in try Flavor.load(flavor) }
        if edit.isEmpty && edit.restart == nil && edit.health == nil && edit.snapshotSchedule == nil && flavor == nil { return try await manager.config(name) }
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
        return try await manager.resize(name, flavor: try Flavor.load(request.flavor), confirmAfter: request.confirmWindow)
    }

    public func confirmResize(_ name: MachineName) async throws -> ResizeResult { try await manager.confirmResize(name) }
    public func revertResize(_ name: MachineName) async throws -> ResizeResult { try await manager.revertResize(name) }

    public func rebuild(_ name: MachineName, _ request: RebuildRequest) async throws -> RebuildResult {
        try await requireImage(name)
        try request.validate()
        let image = try request.image.map { try MachineName($0) }
        var pulled: ImportResult?
        if request.pull == true {
            // The image first, as `import --force IMAGE REF` would: nothing when the digest has not moved.
            let (source, origin) = try manager.pullSource(name, image: image)
            let job = ImportJob.file(origin.reference, checksum: nil, signature: nil, keyring: nil, force: true)
            pulled = try await images.importImage(job, name: source, cancel: ChildCancel(), progress: { _ in }).get()
        }
        var result = try await manager.rebuild(name, image: image, stopTimeout: StopTimeout.wait(request.timeout))
        if let pulled {
            result.pulled = pulled.unchanged != true
            result.manifestDigest = pulled.image?.manifestDigest ?? "sha256:\(pulled.sha256)"
        }
        return result
    }
}
