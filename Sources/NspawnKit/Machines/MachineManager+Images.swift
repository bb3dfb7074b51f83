import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    // MARK: Images

    /// Removes the image, its settings and its boot-time enablement.
    /// A running machine is refused unless `force`, which stops it first.
    public func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws {
        try await hooked(.preRemove, .postRemove, name, context: Hooks.Context(flavor: try? Self.flavorName(of: name))) {
            try await removeMachine(name, force: force, stopTimeout: stopTimeout)
        }
    }

    private func removeMachine(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            if try machined.machinePathIfRunning(name) != nil {
                guard force else { throw NspawnError.busy(name.rawValue, reason: "it is running; stop it first or use --force") }
                try self.stop(name, timeout: stopTimeout, bus: bus)
            }
            let snapshots = try Self.snapshotStore(of: name, machined: machined)
            let project = Self.projectQuota(of: name, machined: machined)
            try machined.removeImage(name)
            // A project's limit outlives its files; lifted, the ID is free for the next machine.
            if let project { try? DiskLimit.setProjectQuota(project.id, limit: 0, on: project.fileSystem) }
            // The snapshots go with the image, never before it.
            try snapshots?.removeAll()
            // And what a killed import, rebuild or restore of it left, when no other operation holds the name.
            let store = ImageStore.system
            if let lock = try? store.lockName(name), let images = try? store.openDirectory() {
                withExtendedLifetime(lock) { _ = try? store.removeLeftovers(of: name, in: images) }
            }
            // Only once the image is gone, so a failed removal leaves start-at-boot, the
            // listening socket and the flavor as they were.
            try Self.dropEnablement(of: name, bus: bus)
            try Self.removeHostSocket(name, bus: bus)
            // A pending resize goes with the machine: there is nothing left to confirm or revert.
            try Self.removeConfirmTimer(of: name, bus: bus)
            try Self.removeHealthCheck(of: name, bus: bus)
            try Self.removeSnapshotSchedule(of: name, bus: bus)
            let unitFiles: [String] = [name.flavorDropInPath, name.flavorBeforeResizePath, name.restartDropInPath]
            if unitFiles.contains(where: { path in access(path, F_OK) == 0 }) {
                try Self.removeUnitFiles(of: name)
                try SystemdManager(bus: bus).reload()
            }
        }
    }

    /// Renames a stopped machine's image, carrying its boot-time enablement over.
    public func rename(_ name: MachineName, to newName: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            if try machined.machinePathIfRunning(name) != nil {
                throw NspawnError.busy(name.rawValue, reason: "it is running; stop it before renaming")
            }
            if try machined.imageExists(newName) { throw NspawnError.alreadyExists(newName.rawValue) }
            if access(name.socketUnitPath, F_OK) == 0 {
                throw NspawnError.busy(name.rawValue, reason: "it is exposed; its socket units name it, so run 'nspawnctl unexpose \(name)' before renaming")
            }
            // The pending resize's timer names the machine; it is settled first, as Nova settles a resize before anything else.
            if let pending = try Self.pendingResize(of: name) { throw NspawnError.resizePending(name.rawValue, pending) }
            if access(newName.dropInDirectory, F_OK) == 0 {
                throw NspawnError.busy(newName.rawValue, reason: "'\(newName.dropInDirectory)' is left from an earlier machine of that name; remove it first")
            }
            let snapshots = try Self.snapshotStore(of: name, machined: machined)
            if let snapshots, case let left = SnapshotStore(machine: newName, imagesDirectory: snapshots.imagesDirectory).path, access(left, F_OK) == 0 {
                throw NspawnError.busy(newName.rawValue, reason: "snapshots of an earlier machine of that name are left in '\(left)'; remove them first")
            }
            let systemd = SystemdManager(bus: bus)
            let wasEnabled = SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit))
            let health = try Self.healthCheck(of: name)
            let snapshotSchedule = try Self.recordedSnapshotSchedule(of: name)
            try machined.renameImage(name, to: newName)
            // The snapshots go with the machine.
            try snapshots?.move(to: newName)
            // The flavor goes with the machine; live copies from an old resize do not.
            for path in name.controlDropIns { try AtomicFile.remove(path) }
            rmdir(name.controlDropInDirectory)
            if access(name.dropInDirectory, F_OK) == 0 {
                if Glibc.rename(name.dropInDirectory, newName.dropInDirectory) != 0 {
                    throw NspawnError.system("cannot move '\(name.dropInDirectory)' to '\(newName.dropInDirectory)'", .last)
                }
                try systemd.reload()
            }
            // Its units name the machine, so they are written again for the new name.
            if let health {
                try Self.removeHealthCheck(of: name, bus: bus)
                try Self.applyHealthCheck(health, to: newName, running: false, bus: bus)
            }
            if let snapshotSchedule {
                try Self.removeSnapshotSchedule(of: name, bus: bus)
                try Self.applySnapshotSchedule(snapshotSchedule, to: newName, machined: machined, bus: bus)
            }
            if wasEnabled {
                _ = try systemd.disableUnitFiles([name.serviceUnit])
                _ = try systemd.enableUnitFiles([newName.serviceUnit, "machines.target"])
                try systemd.reload()
            }
        }
    }

    public func clone(_ name: MachineName, to newName: MachineName, readOnly: Bool) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            if try machined.imageExists(newName) { throw NspawnError.alreadyExists(newName.rawValue) }
            try machined.cloneImage(name, to: newName, readOnly: readOnly)
        }
    }

    public func setReadOnly(_ name: MachineName, _ readOnly: Bool) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            try machined.markImageReadOnly(name, readOnly)
        }
    }

    /// Where the image's snapshots are (whether it has any or not); nil for an image that is
    /// not a directory on disk.
    static func snapshotStore(of name: MachineName, machined: Machined) throws -> SnapshotStore? {
        guard let objectPath = try machined.imagePathIfExists(name),
              let path = try machined.imageProperties(name, path: objectPath).path else { return nil }
        return SnapshotStore(machine: name, imagePath: path)
    }
}
