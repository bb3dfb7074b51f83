import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// What one run of the snapshot timer did.
public struct ScheduledSnapshotRun: Sendable, Codable, Equatable {
    public var name: String
    /// The snapshot taken; nil when none was due (no schedule, or the machine is stopped).
    public var taken: SnapshotInfo?
    /// Why none was taken, when the schedule wanted one.
    public var skipped: String?
    /// Snapshots removed: expired, or beyond what the schedule keeps.
    public var removed: [String]
}

extension MachineManager {
    /// Puts `schedule` in force whole (a manifest's), or removes it for nil.
    public func setSnapshotSchedule(_ name: MachineName, _ schedule: SnapshotSchedule?) async throws {
        try schedule?.validate(machine: name.rawValue)
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            try Self.applySnapshotSchedule(schedule, to: name, machined: machined, bus: bus)
        }
    }

    /// What the machine's snapshot timer runs: a snapshot `auto-TIME` when the schedule has one
    /// due and the machine runs (a stopped machine's root does not change), then the removal
    /// of expired snapshots and of the schedule's own beyond what it keeps.
    public func runSnapshotSchedule(_ name: MachineName) async throws -> ScheduledSnapshotRun {
        guard let recorded = try Self.recordedSnapshotSchedule(of: name) else {
            throw NspawnError.invalidArgument("machine '\(name)' has no snapshot schedule ('nspawnctl snapshot-schedule \(name) --every SPAN --keep N' adds one)")
        }
        return try await withBus { bus in
            var run = ScheduledSnapshotRun(name: name.rawValue, removed: [])
            let lock: FileLock
            do {
                lock = try ImageStore.system.lockName(name)
            } catch NspawnError.busy(_, let reason) {
                // The next run catches up; a failed unit would only alarm.
                run.skipped = "machine '\(name)' is busy: \(reason)"
                return run
            }
            defer { withExtendedLifetime(lock) {} }
            let machined = Machined(bus: bus)
            let root = try MachineRoot.open(name, machined: machined, writable: false)
            let store = SnapshotStore(machine: name, imagePath: root.path)
            if recorded != nil {
                if try machined.machinePathIfRunning(name) == nil {
                    run.skipped = "machine '\(name)' is not running"
                } else {
                    let snapshot = "auto-\(Self.defaultSnapshotName())"
                    if (try? store.find(snapshot)) != nil {
                        run.skipped = "snapshot '\(snapshot)' exists"
                    } else {
                        run.taken = try Self.takeSnapshot(snapshot, of: root, in: store, expires: nil, scheduled: true)
                    }
                }
            }
            let candidates = try store.list().map {
                SnapshotSchedule.Candidate(name: $0.name, created: $0.created ?? .distantPast, scheduled: $0.scheduled, expires: $0.expires)
            }
            let doomed = SnapshotSchedule.doomed(candidates, schedule: recorded, now: Date())
            for snapshot in doomed {
                try store.remove(snapshot)
                run.removed.append(snapshot)
            }
            // The listing and the schedule in hand say what the timer needs next.
            let nextExpiry = candidates.filter { !doomed.contains($0.name) }.compactMap(\.expires).min()
            try Self.writeSnapshotTimer(recorded, of: name, nextExpiry: nextExpiry, bus: bus)
            return run
        }
    }

    // MARK: - Blocking helpers

    /// The schedule the machine's snapshot service records: nil without a service,
    /// `.some(nil)` for a service that only removes expired snapshots.
    static func recordedSnapshotSchedule(of name: MachineName) throws(NspawnError) -> SnapshotSchedule?? {
        try AtomicFile.read(name.snapshotServicePath, limit: 64 * 1024).flatMap(SnapshotSchedule.recorded(inServiceText:))
    }

    static func snapshotSchedule(of name: MachineName) throws(NspawnError) -> SnapshotSchedule? {
        try recordedSnapshotSchedule(of: name) ?? nil
    }

    static func applySnapshotSchedule(_ schedule: SnapshotSchedule?, to name: MachineName, machined: Machined, bus: BusConnection) throws {
        let expiry = try snapshotStore(of: name, machined: machined).flatMap { (store) throws(NspawnError) in try nextExpiry(in: store) }
        try writeSnapshotTimer(schedule, of: name, nextExpiry: expiry, bus: bus)
    }

    /// Writes the timer again for the snapshots there are now, keeping the schedule.
    static func syncSnapshotTimer(of name: MachineName, store: SnapshotStore, bus: BusConnection) throws(NspawnError) {
        try writeSnapshotTimer(try snapshotSchedule(of: name), of: name, nextExpiry: try nextExpiry(in: store), bus: bus)
    }

    static func nextExpiry(in store: SnapshotStore) throws(NspawnError) -> Date? {
        try store.list().compactMap(\.expires).min()
    }

    /// Writes the service and the timer (only what changed), enables and restarts the timer;
    /// with neither a schedule nor a snapshot to expire, removes them.
    static func writeSnapshotTimer(_ schedule: SnapshotSchedule?, of name: MachineName, nextExpiry: Date?, bus: BusConnection) throws(NspawnError) {
        guard schedule != nil || nextExpiry != nil else {
            try removeSnapshotSchedule(of: name, bus: bus)
            return
        }
        let service = try SnapshotSchedule.serviceText(schedule, machine: name, nspawnctl: NspawnctlProgram.path)
        let timer = SnapshotSchedule.timerText(schedule, nextExpiry: nextExpiry, machine: name)
        let writtenService = try AtomicFile.read(name.snapshotServicePath, limit: 64 * 1024)
        let writtenTimer = try AtomicFile.read(name.snapshotTimerPath, limit: 64 * 1024)
        guard writtenService != service || writtenTimer != timer else { return }
        try AtomicFile.write(name.snapshotServicePath, service)
        try AtomicFile.write(name.snapshotTimerPath, timer)
        let systemd = SystemdManager(bus: bus)
        try systemd.reload()
        _ = try systemd.enableUnitFiles([name.snapshotTimerUnit])
        try systemd.restartUnit(name.snapshotTimerUnit)
    }

    /// Stops and disables the timer and removes both units; none is fine. Snapshots stay.
    static func removeSnapshotSchedule(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        guard access(name.snapshotTimerPath, F_OK) == 0 || access(name.snapshotServicePath, F_OK) == 0 else { return }
        let systemd = SystemdManager(bus: bus)
        if let state = try systemd.unitStates([name.snapshotTimerUnit])[name.snapshotTimerUnit], state.active != "inactive" {
            try systemd.stopUnit(name.snapshotTimerUnit)
        }
        _ = try systemd.disableUnitFiles([name.snapshotTimerUnit])
        try AtomicFile.remove(name.snapshotTimerPath)
        try AtomicFile.remove(name.snapshotServicePath)
        try systemd.reload()
    }

    /// Enablement and state that match the timer file there is (or is not), after its files
    /// were put back as they were.
    static func settleSnapshotTimer(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        let systemd = SystemdManager(bus: bus)
        if access(name.snapshotTimerPath, F_OK) == 0 {
            _ = try systemd.enableUnitFiles([name.snapshotTimerUnit])
            try systemd.restartUnit(name.snapshotTimerUnit)
        } else {
            if let state = try systemd.unitStates([name.snapshotTimerUnit])[name.snapshotTimerUnit], state.active != "inactive" {
                try systemd.stopUnit(name.snapshotTimerUnit)
            }
            // EnableUnitFiles' link, which outlives the file it points to.
            let link = "\(MachineUnits.unitDirectory)/timers.target.wants/\(name.snapshotTimerUnit)"
            if unlink(link) != 0 && errno != ENOENT { throw .system("cannot remove '\(link)'", .last) }
        }
    }
}
