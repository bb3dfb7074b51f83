import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What one run of `nspawnctl health-check` found.
public struct HealthCheckResult: Sendable, Codable, Equatable {
    public var name: String
    public var health: MachineHealth
    /// The status before this check, when it changed.
    public var changedFrom: MachineHealth.Status?
    /// The machine's unit was restarted because it turned unhealthy.
    public var restarted: Bool
}

extension MachineManager {
    /// Puts `check` in force whole (a manifest's), or removes the machine's check for nil.
    public func setHealthCheck(_ name: MachineName, _ check: HealthCheck?) async throws {
        try check?.validate()
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            try Self.applyHealthCheck(check, to: name, running: machined.machinePathIfRunning(name) != nil, bus: bus)
        }
    }

    /// Runs the machine's check once and records the result; what its timer runs. A machine
    /// that turns unhealthy is restarted when its check says so.
    /// - Throws: `.noSuchImage` without a check, `.notRunning` for a stopped machine (nothing
    ///   is recorded then); a check that cannot be started inside is a failed check, not an error.
    public func runHealthCheck(_ name: MachineName) async throws -> HealthCheckResult {
        guard let check = try Self.healthCheck(of: name) else {
            throw NspawnError.invalidArgument("machine '\(name)' has no health check ('nspawnctl config \(name) --health-cmd CMD' adds one)")
        }
        let (outcome, output): (MachineHealth.Outcome, String)
        do {
            let process = try await exec(name, ExecSpec(command: check.command))
            (outcome, output) = try await OSThread.run { () throws(NspawnError) in
                defer { process.close() }
                return try Self.collect(process, timeout: check.timeoutSeconds)
            }
        } catch NspawnError.notRunning(let machine) {
            throw NspawnError.notRunning(machine)
        } catch {
            (outcome, output) = (.exited(126), "\(error)")
        }
        let now = Date()
        let before = try Self.recordedHealth(of: name) ?? MachineHealth(since: now)
        let after = before.recording(outcome, output: output, check: check, at: now)
        try Self.writeHealth(after, of: name)
        let changed = after.status != before.status
        var restarted = false
        if changed, after.status == .unhealthy, check.restartOnUnhealthy {
            try await withBus { bus in try SystemdManager(bus: bus).restartUnit(name.serviceUnit) }
            restarted = true
        }
        return HealthCheckResult(name: name.rawValue, health: after, changedFrom: changed ? before.status : nil, restarted: restarted)
    }

    /// A new run of the machine: `starting`, its start period from now. Its unit runs this
    /// before every start.
    public func resetHealth(_ name: MachineName) throws {
        try Self.writeHealth(MachineHealth(since: Date()), of: name)
    }

    // MARK: - Blocking helpers

    /// The check the machine's health service records; nil when it has none.
    static func healthCheck(of name: MachineName) throws(NspawnError) -> HealthCheck? {
        try AtomicFile.read(name.healthServicePath, limit: 64 * 1024).flatMap(HealthCheck.init(serviceText:))
    }

    static func recordedHealth(of name: MachineName) throws(NspawnError) -> MachineHealth? {
        guard let bytes = try AtomicFile.readBytes(name.healthStatePath, limit: 64 * 1024) else { return nil }
        return try? WireJSON.decoder().decode(MachineHealth.self, from: Data(bytes))
    }

    static func writeHealth(_ health: MachineHealth, of name: MachineName) throws(NspawnError) {
        let bytes: Data
        do {
            bytes = try WireJSON.encoder(pretty: false).encode(health)
        } catch {
            throw .failed("cannot encode the health of machine '\(name)': \(error)")
        }
        try AtomicFile.write(name.healthStatePath, bytes: Array(bytes))
    }

    /// The health of a running machine with a check: what its checks recorded in this run, or
    /// `starting` before the first. Nil for a stopped machine or one without a check.
    static func currentHealth(of name: MachineName, running: Bool) -> MachineHealth? {
        guard running, access(name.healthServicePath, F_OK) == 0 else { return nil }
        return (try? recordedHealth(of: name)) ?? MachineHealth(since: nil)
    }

    /// Writes the units and the drop-in (or removes them for nil), reloads systemd, and for a
    /// running machine starts the timer again so a new interval holds at once.
    static func applyHealthCheck(_ check: HealthCheck?, to name: MachineName, running: Bool, bus: BusConnection) throws(NspawnError) {
        let systemd = SystemdManager(bus: bus)
        guard let check else {
            try removeHealthCheck(of: name, bus: bus)
            return
        }
        let nspawnctl = NspawnctlProgram.path
        try AtomicFile.write(name.healthServicePath, try check.serviceText(machine: name, nspawnctl: nspawnctl))
        try AtomicFile.write(name.healthTimerPath, check.timerText(machine: name))
        try AtomicFile.write(name.healthDropInPath, try HealthCheck.dropIn(machine: name, nspawnctl: nspawnctl))
        try systemd.reload()
        if running { try systemd.restartUnit(name.healthTimerUnit) }
    }

    /// Stops the timer, removes the units, the drop-in and the recorded health; none is fine.
    static func removeHealthCheck(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        let paths = [name.healthTimerPath, name.healthServicePath, name.healthDropInPath]
        guard paths.contains(where: { access($0, F_OK) == 0 }) else { return }
        let systemd = SystemdManager(bus: bus)
        if let state = try systemd.unitStates([name.healthTimerUnit])[name.healthTimerUnit], state.active != "inactive" {
            try systemd.stopUnit(name.healthTimerUnit)
        }
        for path in paths { try AtomicFile.remove(path) }
        rmdir(name.dropInDirectory)
        try AtomicFile.remove(name.healthStatePath)
        try systemd.reload()
    }

    /// Reads the command's output until it ends or `timeout` runs out (then kills it); keeps
    /// the last 4 KiB, stdout then stderr.
    static func collect(_ process: any GuestProcess, timeout: Double) throws(NspawnError) -> (MachineHealth.Outcome, String) {
        let limit = 4096
        var streams = [process.output] + (process.errorOutput.map { [$0] } ?? [])
        var kept = Array(repeating: [UInt8](), count: streams.count)
        let descriptors = streams
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var timedOut = false
        var buffer = [UInt8](repeating: 0, count: 16384)
        while !streams.isEmpty {
            let left = deadline - ContinuousClock.now
            if left <= .zero {
                timedOut = true
                break
            }
            var fds = streams.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            let milliseconds = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            let ready = poll(&fds, nfds_t(fds.count), milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw .system("cannot wait for the health check's output", .last)
            }
            var ended: [Int32] = []
            for entry in fds where entry.revents != 0 {
                guard let index = descriptors.firstIndex(where: { $0.rawValue == entry.fd }) else { continue }
                // EOF or a read error both end this stream; the exit status still tells.
                let count = (try? buffer.withUnsafeMutableBytes { try descriptors[index].read(into: $0) }) ?? 0
                guard count > 0 else {
                    ended.append(entry.fd)
                    continue
                }
                kept[index] += buffer[..<count]
                if kept[index].count > limit { kept[index].removeFirst(kept[index].count - limit) }
            }
            streams.removeAll { ended.contains($0.rawValue) }
        }
        if timedOut { try? process.signal(.kill) }
        let exit = try process.wait()
        var text = String(decoding: kept.joined(), as: UTF8.self).trimmedWhitespace
        if text.utf8.count > limit { text = String(decoding: Array(text.utf8.suffix(limit)), as: UTF8.self) }
        if timedOut {
            return (.timedOut, (text.isEmpty ? "" : text + "\n") + "the health check did not finish within \(RestartPolicy.span(timeout)) and was killed")
        }
        return (.exited(exit.shellStatus), text)
    }
}
