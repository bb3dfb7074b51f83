import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What `expose` did.
public struct ExposeResult: Sendable, Codable, Equatable {
    public var name: String
    public var addresses: [String]
    public var socketUnit: String
    public var restarted: Bool
}

extension MachineManager {
    // MARK: Socket activation

    /// Makes the host listen on `activation.addresses` and start the machine on the first
    /// connection. A running machine is refused unless `restart`: systemd cannot start the
    /// socket while the machine's service is active.
    public func expose(_ activation: SocketActivation, restart: Bool, stopTimeout: Duration) async throws -> ExposeResult {
        try await withBus { bus in
            let name = activation.machine
            let machined = Machined(bus: bus)
            let root = try Self.writableDirectoryImage(name, machined: machined)
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
            // The socket first, so no connection starts the machine again while it changes.
            if running { try Self.stopHostSocket(name, bus: bus) }
            // Started directly again, the service still gets the listening sockets of its socket unit.
            try self.whileStopped(name, running: running, stopTimeout: stopTimeout, bus: bus) {
                try Self.installSocketActivation(activation, root: root, bus: bus)
            }
            return ExposeResult(name: name.rawValue, addresses: activation.addresses.map(\.description),
                                socketUnit: name.socketUnit, restarted: running)
        }
    }

    /// Removes both sides of `expose`. A running machine holds the passed sockets open until it
    /// stops, so it is refused unless `restart`.
    public func unexpose(_ name: MachineName, restart: Bool, stopTimeout: Duration) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let hostUnitExists = access(name.socketUnitPath, F_OK) == 0
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
                throw NspawnError.readOnly(name.rawValue)
            }
            let running = try machined.machinePathIfRunning(name) != nil
            if running && !restart {
                throw NspawnError.busy(name.rawValue, reason: "it is running and holds the passed sockets open until it stops; stop it first or pass --restart")
            }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            // The host's socket first, so no connection starts the machine again.
            try Self.removeHostSocket(name, bus: bus)
            try self.whileStopped(name, running: running, stopTimeout: stopTimeout, bus: bus) {
                if let root { try Self.removeGuestSide(root, name: name) }
            }
        }
    }

    /// Runs `body` with a `running` machine stopped, and starts it again afterwards, also when
    /// `body` fails: the machine then runs with whatever sockets it had.
    func whileStopped(_ name: MachineName, running: Bool, stopTimeout: Duration, bus: BusConnection,
                      _ body: () throws -> Void) throws {
        guard running else { return try body() }
        let systemd = SystemdManager(bus: bus)
        do {
            try stop(name, timeout: stopTimeout, bus: bus)
            try body()
        } catch {
            try? systemd.startUnit(name.serviceUnit)
            throw error
        }
        try systemd.startUnit(name.serviceUnit)
    }

    // MARK: - Blocking helpers

    static func exposedAddresses(of name: MachineName) throws(NspawnError) -> [String] {
        try AtomicFile.read(name.socketUnitPath).map(SocketActivation.addresses(inHostUnit:)) ?? []
    }

    /// The image's root, which must be a writable directory (the guest's units are written into it).
    static func writableDirectoryImage(_ name: MachineName, machined: Machined) throws(NspawnError) -> Directory {
        try MachineRoot.open(name, machined: machined, writable: true).directory
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
        let socketUnit = name.socketUnit
        try AtomicFile.write(name.socketUnitPath, text)
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
            host = try AtomicFile.read(name.socketUnitPath)
            do {
                guestSocket = try guest.read(SocketActivation.guestSocketPath)
                guestService = try guest.read(SocketActivation.guestServicePath)
            } catch {
                throw .system("cannot read the socket units inside machine '\(name)'", error)
            }
            self.name = name
        }

        let name: MachineName

        func restore(guest: ContainedRoot, bus: BusConnection) throws(NspawnError) {
            guard let host, let guestSocket else { return }
            try MachineManager.writeGuestSide(socket: guestSocket, service: guestService, guest: guest, name: name)
            try MachineManager.startHostSocket(name, text: host, bus: bus)
        }
    }

    static func writeGuestSide(_ activation: SocketActivation, root: Directory) throws(NspawnError) {
        try writeGuestSide(socket: Array(activation.guestSocketText().utf8),
                           service: activation.guestServiceText().map { Array($0.utf8) },
                           guest: ContainedRoot(root: root), name: activation.machine)
    }

    /// The guest's socket unit, enabled, and its per-connection service (nil: none, removed).
    static func writeGuestSide(socket: [UInt8], service: [UInt8]?, guest: ContainedRoot, name: MachineName) throws(NspawnError) {
        do throws(Errno) {
            try guest.makeDirectories(SocketActivation.guestWantsDirectory)
            try guest.write(SocketActivation.guestSocketPath, socket)
            if let service {
                try guest.write(SocketActivation.guestServicePath, service)
            } else {
                try guest.remove(SocketActivation.guestServicePath)
            }
            try guest.symlink(SocketActivation.guestSocketPath, at: SocketActivation.guestWantsLink)
        } catch {
            throw .system("cannot write the socket units inside machine '\(name)'", error)
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
        let socketUnit = name.socketUnit
        let path = name.socketUnitPath
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
        let socketUnit = name.socketUnit
        if let state = try systemd.unitStates([socketUnit])[socketUnit], state.active != "inactive" {
            try systemd.stopUnit(socketUnit)
        }
    }
}
