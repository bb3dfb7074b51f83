#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    // MARK: Flavor

    /// Applies a flavor's drop-in and, when the machine runs, its limits live.
    public func resize(_ name: MachineName, flavor: Flavor) async throws -> LiveLimits? {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let running = try machined.machinePathIfRunning(name) != nil
            try Self.applyFlavor(flavor, to: name, live: running, bus: bus)
            return running ? try Self.liveLimits(name, bus: bus) : nil
        }
    }

    // MARK: - Blocking helpers

    static func flavorName(of name: MachineName) throws(NspawnError) -> String? {
        try AtomicFile.read(name.flavorDropInPath).flatMap(Flavor.name(inDropIn:))
    }

    /// Writes the drop-in, drops live copies of older limits, reloads, and applies the limits
    /// live when the machine runs.
    static func applyFlavor(_ flavor: Flavor, to name: MachineName, live: Bool, bus: BusConnection) throws(NspawnError) {
        try AtomicFile.write(name.flavorDropInPath, flavor.dropIn())
        // Runtime properties from an earlier resize would shadow the new drop-in until reboot.
        for path in name.controlDropIns { try AtomicFile.remove(path) }
        let systemd = SystemdManager(bus: bus)
        try systemd.reload()
        if live { try systemd.setUnitProperties(name.serviceUnit, runtime: true, flavor.unitProperties) }
    }

    static func liveLimits(_ name: MachineName, bus: BusConnection) throws(NspawnError) -> LiveLimits {
        let p = try SystemdManager(bus: bus).unitProperties(name.serviceUnit, interface: "org.freedesktop.systemd1.Service")
        return LiveLimits(memoryMax: knownSize(p["MemoryMax"]?.uint64), cpuQuotaPerSecUSec: knownSize(p["CPUQuotaPerSecUSec"]?.uint64),
                          tasksMax: knownSize(p["TasksMax"]?.uint64), ioWeight: knownSize(p["IOWeight"]?.uint64),
                          memoryCurrent: knownSize(p["MemoryCurrent"]?.uint64))
    }

    /// The flavor drop-in (and its live copies); the directory goes only when empty.
    static func removeUnitFiles(of name: MachineName) throws(NspawnError) {
        try AtomicFile.remove(name.flavorDropInPath)
        for path in name.controlDropIns { try AtomicFile.remove(path) }
        rmdir(name.dropInDirectory)
        rmdir(name.controlDropInDirectory)
    }
}
