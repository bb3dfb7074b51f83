import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// What `resize`, its confirmation and its revert leave: the flavor in force, the limits
/// systemd enforces when the machine runs, and the resize still pending, if any.
public struct ResizeResult: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        case resized, confirmed, reverted
    }

    public var name: String
    public var action: Action
    /// The flavor in force; nil when a revert went back to none.
    public var flavor: Flavor?
    public var limits: LiveLimits?
    public var pending: PendingResize?

    public init(name: String, action: Action, flavor: Flavor?, limits: LiveLimits?, pending: PendingResize?) {
        self.name = name
        self.action = action
        self.flavor = flavor
        self.limits = limits
        self.pending = pending
    }
}

extension MachineManager {
    // MARK: Flavor

    /// Applies a flavor's drop-in and, when the machine runs, its limits live. With a confirm
    /// window above zero the resize stays pending until confirmed, reverted or the window ends
    /// (a timer then confirms it); with zero it is confirmed at once.
    public func resize(_ name: MachineName, flavor: Flavor, confirmAfter: Double = 0) async throws -> ResizeResult {
        try await hooked(.preResize, .postResize, name, context: Hooks.Context(flavor: flavor.name)) {
            try await resizeMachine(name, flavor: flavor, confirmAfter: confirmAfter)
        }
    }

    private func resizeMachine(_ name: MachineName, flavor: Flavor, confirmAfter: Double) async throws -> ResizeResult {
        try await withResizeLock(name) { bus, running in
            if let pending = try Self.pendingResize(of: name) { throw NspawnError.resizePending(name.rawValue, pending) }
            let before = try AtomicFile.readBytes(name.flavorDropInPath)
            let oldDiskMax = before.flatMap { Flavor(dropIn: String(decoding: $0, as: UTF8.self)) }?.diskMax
            var pending: PendingResize?
            if confirmAfter > 0 {
                // Whole seconds, as the timer unit records them and systemd prints them.
                let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
                pending = PendingResize(from: before.flatMap { Flavor.name(inDropIn: String(decoding: $0, as: UTF8.self)) },
                                        to: flavor.name, since: now, confirmsAt: now.addingTimeInterval(confirmAfter))
            }
            // The disk limit (which may be refused), every file, then one reload (systemd's
            // reload is most of a resize's time).
            var diskLimitChanged = false
            do {
                try Self.changeDiskLimit(from: oldDiskMax, to: flavor.diskMax, of: name, bus: bus)
                diskLimitChanged = true
                let systemd = SystemdManager(bus: bus)
                if pending != nil { try AtomicFile.write(name.flavorBeforeResizePath, bytes: before ?? []) }
                try Self.writeFlavor(flavor, to: name)
                if let pending { try Self.writeConfirmTimer(pending, of: name) }
                try systemd.reload()
                if running { try systemd.setUnitProperties(name.serviceUnit, runtime: true, flavor.unitProperties) }
                if pending != nil {
                    // Enabled, so it is there after a reboot (Persistent= then fires it if its time passed).
                    _ = try systemd.enableUnitFiles([name.resizeTimerUnit])
                    try systemd.startUnit(name.resizeTimerUnit)
                }
            } catch {
                try? Self.restoreFlavor(before, of: name, live: running, bus: bus)
                if diskLimitChanged { try? Self.changeDiskLimit(from: flavor.diskMax, to: oldDiskMax, of: name, bus: bus) }
                try? Self.removeConfirmTimer(of: name, bus: bus)
                _ = try? AtomicFile.remove(name.flavorBeforeResizePath)
                throw error
            }
            return ResizeResult(name: name.rawValue, action: .resized, flavor: flavor,
                                limits: running ? try Self.liveLimits(name, bus: bus) : nil, pending: pending)
        }
    }

    /// Keeps the new flavor and forgets the old one.
    public func confirmResize(_ name: MachineName) async throws -> ResizeResult {
        try await withResizeLock(name) { bus, running in
            guard try Self.pendingResize(of: name) != nil else { throw NspawnError.noPendingResize(name.rawValue) }
            // No reload: the stopped timer, its file gone, is forgotten by systemd on its own.
            try Self.stopConfirmTimer(of: name, bus: bus)
            try AtomicFile.remove(name.flavorBeforeResizePath)
            return ResizeResult(name: name.rawValue, action: .confirmed, flavor: try Self.flavorInForce(of: name),
                                limits: running ? try Self.liveLimits(name, bus: bus) : nil, pending: nil)
        }
    }

    /// Puts the old flavor back, byte for byte, live when the machine runs, and forgets the new one.
    public func revertResize(_ name: MachineName) async throws -> ResizeResult {
        try await withResizeLock(name) { bus, running in
            guard try Self.pendingResize(of: name) != nil else { throw NspawnError.noPendingResize(name.rawValue) }
            guard let before = try AtomicFile.readBytes(name.flavorBeforeResizePath) else {
                throw NspawnError.failed("cannot revert the resize of machine '\(name)': '\(name.flavorBeforeResizePath)' with the flavor before it is missing")
            }
            // The old disk limit first: below what the machine now holds, the revert is refused untouched.
            let oldDiskMax = before.isEmpty ? nil : Flavor(dropIn: String(decoding: before, as: UTF8.self))?.diskMax
            try Self.changeDiskLimit(from: try Self.flavorInForce(of: name)?.diskMax, to: oldDiskMax, of: name, bus: bus)
            try Self.stopConfirmTimer(of: name, bus: bus)
            try Self.restoreFlavor(before.isEmpty ? nil : before, of: name, live: running, bus: bus)
            try AtomicFile.remove(name.flavorBeforeResizePath)
            return ResizeResult(name: name.rawValue, action: .reverted, flavor: try Self.flavorInForce(of: name),
                                limits: running ? try Self.liveLimits(name, bus: bus) : nil, pending: nil)
        }
    }

    /// Under the image's name lock, with the machine's existence checked and whether it runs.
    private func withResizeLock<T: Sendable>(_ name: MachineName,
                                             _ body: @escaping @Sendable (BusConnection, _ running: Bool) throws -> T) async throws -> T {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            return try body(bus, try machined.machinePathIfRunning(name) != nil)
        }
    }

    // MARK: - Blocking helpers

    static func flavorName(of name: MachineName) throws(NspawnError) -> String? {
        try AtomicFile.read(name.flavorDropInPath).flatMap(Flavor.name(inDropIn:))
    }

    static func flavorInForce(of name: MachineName) throws(NspawnError) -> Flavor? {
        try AtomicFile.read(name.flavorDropInPath).flatMap(Flavor.init(dropIn:))
    }

    /// The resize of `name` waiting for its confirmation, from its timer unit.
    static func pendingResize(of name: MachineName) throws(NspawnError) -> PendingResize? {
        try AtomicFile.read(name.resizeTimerPath, limit: 64 * 1024).flatMap(PendingResize.init(timerText:))
    }

    /// Writes the drop-in, drops live copies of older limits, reloads, and applies the limits
    /// live when the machine runs.
    static func applyFlavor(_ flavor: Flavor, to name: MachineName, live: Bool, bus: BusConnection) throws(NspawnError) {
        // The file system's limit first: it is the step that may be refused, and refused it changed nothing.
        try changeDiskLimit(from: flavorInForce(of: name)?.diskMax, to: flavor.diskMax, of: name, bus: bus)
        try writeFlavor(flavor, to: name)
        let systemd = SystemdManager(bus: bus)
        try systemd.reload()
        if live { try systemd.setUnitProperties(name.serviceUnit, runtime: true, flavor.unitProperties) }
    }

    /// The drop-in, without the live copies of older limits, which would shadow it until reboot.
    static func writeFlavor(_ flavor: Flavor, to name: MachineName) throws(NspawnError) {
        try AtomicFile.write(name.flavorDropInPath, flavor.dropIn())
        for path in name.controlDropIns { try AtomicFile.remove(path) }
    }

    /// Puts a flavor drop-in back as it was (nil: none). The reload makes systemd apply the unit's
    /// limits from its files to the running machine, the ones the drop-in no longer sets included.
    static func restoreFlavor(_ dropIn: [UInt8]?, of name: MachineName, live: Bool, bus: BusConnection) throws(NspawnError) {
        if let dropIn {
            try AtomicFile.write(name.flavorDropInPath, bytes: dropIn)
        } else {
            try AtomicFile.remove(name.flavorDropInPath)
            rmdir(name.dropInDirectory)
        }
        for path in name.controlDropIns { try AtomicFile.remove(path) }
        rmdir(name.controlDropInDirectory)
        try SystemdManager(bus: bus).reload()
    }

    /// The timer that confirms `pending` with nothing of ours running, and the service it
    /// starts; systemd reads them at the caller's reload.
    static func writeConfirmTimer(_ pending: PendingResize, of name: MachineName) throws(NspawnError) {
        try AtomicFile.write(name.resizeServicePath, PendingResize.serviceText(machine: name, nspawnctl: NspawnctlProgram.path))
        try AtomicFile.write(name.resizeTimerPath, pending.timerText(machine: name))
    }

    /// Stops and disables the confirm timer and removes it and its service; none is fine.
    static func stopConfirmTimer(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        guard access(name.resizeTimerPath, F_OK) == 0 || access(name.resizeServicePath, F_OK) == 0 else { return }
        let systemd = SystemdManager(bus: bus)
        if let state = try systemd.unitStates([name.resizeTimerUnit])[name.resizeTimerUnit], state.active != "inactive" {
            try systemd.stopUnit(name.resizeTimerUnit)
        }
        _ = try systemd.disableUnitFiles([name.resizeTimerUnit])
        try AtomicFile.remove(name.resizeTimerPath)
        try AtomicFile.remove(name.resizeServicePath)
    }

    /// `stopConfirmTimer`, and a reload so systemd forgets the units at once.
    static func removeConfirmTimer(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        guard access(name.resizeTimerPath, F_OK) == 0 || access(name.resizeServicePath, F_OK) == 0 else { return }
        try stopConfirmTimer(of: name, bus: bus)
        try SystemdManager(bus: bus).reload()
    }

    static func liveLimits(_ name: MachineName, bus: BusConnection) throws(NspawnError) -> LiveLimits {
        let p = try SystemdManager(bus: bus).unitProperties(name.serviceUnit, interface: "org.freedesktop.systemd1.Service")
        return LiveLimits(memoryMax: knownSize(p["MemoryMax"]?.uint64), cpuQuotaPerSecUSec: knownSize(p["CPUQuotaPerSecUSec"]?.uint64),
                          tasksMax: knownSize(p["TasksMax"]?.uint64), ioWeight: knownSize(p["IOWeight"]?.uint64),
                          memoryCurrent: knownSize(p["MemoryCurrent"]?.uint64))
    }

    /// The flavor drop-in (and its live copies), a pending resize's saved drop-in; the
    /// directories go only when empty.
    static func removeUnitFiles(of name: MachineName) throws(NspawnError) {
        try AtomicFile.remove(name.restartDropInPath)
        try AtomicFile.remove(name.flavorDropInPath)
        try AtomicFile.remove(name.flavorBeforeResizePath)
        for path in name.controlDropIns { try AtomicFile.remove(path) }
        rmdir(name.dropInDirectory)
        rmdir(name.controlDropInDirectory)
    }
}
