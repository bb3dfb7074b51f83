#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    // MARK: Create

    /// Clones `image` as `name`, writes its settings, flavor and sockets, and optionally starts
    /// it. Any failure undoes every step, so nothing of `name` is left behind.
    public func create(_ name: MachineName, from image: MachineName, edit: SettingsEdit, flavor: Flavor?,
                       activation: SocketActivation?, start: Bool) async throws -> MachineStatus {
        try edit.validate()
        return try await hooked(.preCreate, .postCreate, name, context: Hooks.Context(image: image.rawValue, flavor: flavor?.name)) {
            try await createMachine(name, from: image, edit: edit, flavor: flavor, activation: activation, start: start)
        }
    }

    private func createMachine(_ name: MachineName, from image: MachineName, edit: SettingsEdit, flavor: Flavor?,
                               activation: SocketActivation?, start: Bool) async throws -> MachineStatus {
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
            for path in [name.settingsPath, name.dropInDirectory, name.socketUnitPath]
            where access(path, F_OK) == 0 {
                throw NspawnError.busy(name.rawValue, reason: "'\(path)' is left from an earlier machine of that name; remove it first")
            }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            try machined.cloneImage(image, to: name, readOnly: false)
            // From here on every failure is undone; a failed clone left nothing of ours to undo.
            do {
                let imagePath = try Self.imageFilesystemPath(name, machined: machined)
                // What `rebuild` starts again from. A file system without user xattrs only
                // costs rebuild its default, which `--image` gives back; creating still works.
                if let imagePath, let root = try? Directory(path: imagePath) {
                    try? ImageOrigin.record(image, on: root)
                }
                // machined copies the source's settings file along with the image.
                let source = try Self.loadSettings(name, imagePath: imagePath)
                if activation != nil && source.boot == false {
                    throw NspawnError.invalidArgument("image '\(image)' does not boot (Boot=no in \(source.path ?? source.adjacentPath ?? "its settings")); socket activation needs the guest's systemd")
                }
                if !edit.isEmpty {
                    var settings = try source.editable(name)
                    try settings.apply(edit)
                    try AtomicFile.write(name.settingsPath, settings.rendered())
                }
                if let flavor { try Self.applyFlavor(flavor, to: name, live: false, bus: bus) }
                if let restart = edit.restart { try Self.applyRestartPolicy(try restart.applied(to: nil, machine: name.rawValue), to: name, bus: bus) }
                if let health = edit.health { try Self.applyHealthCheck(try health.applied(to: nil, machine: name.rawValue), to: name, running: false, bus: bus) }
                if let schedule = edit.snapshotSchedule?.schedule { try Self.applySnapshotSchedule(schedule, to: name, machined: machined, bus: bus) }
                if let activation {
                    let root = try Self.writableDirectoryImage(name, machined: machined)
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
        try? removeHealthCheck(of: name, bus: bus)
        try? removeSnapshotSchedule(of: name, bus: bus)
        try? removeUnitFiles(of: name)
        try? systemd.reload()
        try? systemd.resetFailedUnit(name.serviceUnit)
        try? machined.removeImage(name)
        _ = try? AtomicFile.remove(name.settingsPath)
    }
}
