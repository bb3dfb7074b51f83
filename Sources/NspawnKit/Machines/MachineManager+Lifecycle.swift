import FoundationEssentials
extension MachineManager {
    // MARK: Lifecycle

    /// Starts the machine as `systemd-nspawn@NAME.service` and waits for the start job.
    /// Starting a running machine is not an error.
    public func start(_ name: MachineName) async throws {
        let began = Date()
        do {
            try await startMachine(name)
        } catch let error as NspawnError {
            throw Hooks.explainStart(error, machine: name, since: began)
        }
    }

    private func startMachine(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let (path, imageExists) = try machined.machineAndImage(name)
            if let path {
                // Running under some other unit (a hand-started nspawn): nothing to do.
                // Our own unit is started anyway, which also overrides a pending stop,
                // and so is one that stopped since GetMachine.
                if let properties = try machined.machinePropertiesIfRunning(name, path: path),
                   properties.unit != name.serviceUnit && properties.state != "closing" { return }
            } else {
                guard imageExists else { throw NspawnError.noSuchImage(name.rawValue) }
            }
            let systemd = SystemdManager(bus: bus)
            // A start by hand is a fresh try: the start limit that stopped a crash loop (and the
            // failed state) would refuse it otherwise.
            try systemd.resetFailedUnit(name.serviceUnit)
            try systemd.startUnit(name.serviceUnit)
        }
    }

    /// Starts several machines side by side over one bus connection: every start job is queued
    /// before any is waited for, so systemd runs them concurrently. Returns each failure beside
    /// its machine's name, in the order given; an empty result means all of them run.
    public func start(_ names: [MachineName]) async -> [(name: MachineName, error: NspawnError)] {
        do {
            // One machine needs two lookups, not machined's whole list of images.
            if names.count == 1 {
                try await start(names[0])
                return []
            }
            let began = Date()
            return try await withBus { bus in try Self.startAll(names, bus: bus) }
                .map { ($0.name, Hooks.explainStart($0.error, machine: $0.name, since: began)) }
        } catch {
            // No bus: every machine failed for the same reason.
            let cause = error as? NspawnError ?? .failed("cannot start machines: \(error)")
            return names.map { ($0, cause) }
        }
    }

    /// Stops a machine whatever its payload, and returns only once machined no longer lists it.
    ///
    /// Sends systemd's power-off request to a systemd leader and SIGTERM to any other,
    /// waits up to `timeout`, then terminates the machine, and finally kills it.
    public func stop(_ name: MachineName, timeout: Duration) async throws {
        try await withBus { bus in try self.stop(name, timeout: timeout, bus: bus) }
    }

    /// Reboots a systemd payload with its own reboot request; restarts the unit of any other.
    public func reboot(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let properties = try Self.runningMachine(name, machined: machined)
            if Self.leaderRunsSystemd(properties.leader) {
                try machined.killMachine(name, whom: .leader, signal: .interrupt)
            } else if properties.unit == name.serviceUnit {
                try SystemdManager(bus: bus).restartUnit(name.serviceUnit)
            } else {
                throw NspawnError.busy(name.rawValue, reason: "its payload is not systemd and it does not run as \(name.serviceUnit), so it cannot be rebooted; stop and start it instead")
            }
        }
    }

    /// Nova's hard reboot: terminates the machine at once, then starts it as its own unit.
    public func resetPower(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let properties = try Self.runningMachine(name, machined: machined)
            try self.terminate(name, properties: properties, bus: bus)
            try SystemdManager(bus: bus).startUnit(name.serviceUnit)
        }
    }

    /// Terminates the machine at once (no clean shutdown) and waits until it is gone.
    public func terminate(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let properties = try Self.runningMachine(name, machined: machined)
            try self.terminate(name, properties: properties, bus: bus)
        }
    }

    func terminate(_ name: MachineName, properties: MachineProperties, bus: BusConnection) throws {
        let removal = try Self.subscribeMachineRemoved(bus)
        do {
            try Machined(bus: bus).terminateMachine(name)
        } catch NspawnError.noSuchMachine {
            // It went away on its own between the check and the call: terminated all the same.
        }
        guard try Self.waitUntilGone(name, removal: removal, timeout: terminateGrace, bus: bus) else {
            throw NspawnError.timedOut("terminating machine '\(name)'", waitedSeconds: terminateGrace.seconds)
        }
        try finishStop(of: name, unit: properties.unit, bus: bus)
    }

    public func kill(_ name: MachineName, signal: UnixSignal, whom: KillWhom) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            _ = try Self.runningMachine(name, machined: machined)
            try machined.killMachine(name, whom: whom, signal: signal)
        }
    }

    // MARK: Boot-time enablement

    public func enable(_ name: MachineName) async throws -> [UnitFileChange] {
        try await withBus { bus in
            guard try Machined(bus: bus).imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            let systemd = SystemdManager(bus: bus)
            // machines.target is what pulls enabled machines in at boot; enable it alongside.
            let changes = try systemd.enableUnitFiles([name.serviceUnit, "machines.target"])
            try systemd.reload()
            return changes
        }
    }

    public func disable(_ name: MachineName) async throws -> [UnitFileChange] {
        try await withBus { bus in
            let systemd = SystemdManager(bus: bus)
            let changes = try systemd.disableUnitFiles([name.serviceUnit])
            try systemd.reload()
            return changes
        }
    }

    // MARK: - Blocking implementations

    static func startAll(_ names: [MachineName], bus: BusConnection) throws(NspawnError) -> [(name: MachineName, error: NspawnError)] {
        let machined = Machined(bus: bus)
        let running = Dictionary(try machined.listMachines().map { ($0.name, $0.path) }, uniquingKeysWith: { first, _ in first })
        let images = Set(try machined.listImages().map(\.name))
        var failures: [MachineName: NspawnError] = [:]

        // A machine running under some other unit (a hand-started nspawn) is left alone, as by
        // start(_:); our own unit is started anyway, which also overrides a pending stop.
        let runningNames = names.filter { running[$0.rawValue] != nil }
        let answers: [Result<[BusValue], BusError>]
        do {
            answers = try bus.callAll(runningNames.map { Machined.propertiesCall(path: running[$0.rawValue]!, interface: Machined.machineInterface) })
        } catch {
            throw .bus(error, context: "read the properties of running machines")
        }
        var alreadyRunning = Set<MachineName>()
        for (name, answer) in zip(runningNames, answers) {
            // A machine that went away meanwhile is simply started.
            guard case .success(let reply) = answer, let values = reply.first?.stringKeyedDictionary else { continue }
            let properties = MachineProperties(values)
            if properties.unit != name.serviceUnit && properties.state != "closing" { alreadyRunning.insert(name) }
        }
        var toStart: [MachineName] = []
        for name in names where !alreadyRunning.contains(name) {
            if running[name.rawValue] == nil && !images.contains(name.rawValue) {
                failures[name] = .noSuchImage(name.rawValue)
            } else {
                toStart.append(name)
            }
        }
        // As start(_:) does, each a fresh try past a start limit; all in flight at once.
        _ = try? bus.callAll(toStart.map { SystemdManager.call("ResetFailedUnit", [.string($0.serviceUnit)]) })
        for (name, result) in zip(toStart, try SystemdManager(bus: bus).runJobs("StartUnit", units: toStart.map(\.serviceUnit), mode: "replace")) {
            if let error = result { failures[name] = error }
        }
        return names.compactMap { name in failures[name].map { (name, $0) } }
    }

    func stop(_ name: MachineName, timeout: Duration, bus: BusConnection) throws {
        let machined = Machined(bus: bus)
        let properties = try Self.runningMachine(name, machined: machined)
        let removal = try Self.subscribeMachineRemoved(bus)
        let request: UnixSignal = Self.leaderRunsSystemd(properties.leader) ? .powerOff : .term
        // Each step ends the wait as soon as the machine is gone; the next one is harsher.
        // Terminating makes systemd-nspawn send the leader its KillSignal=; one the leader does
        // not catch (an image's StopSignal= for a PID 1 without a handler) is dropped by the
        // kernel, so then the leader alone is killed at once. Not the whole unit: its pre-stop
        // hook may still run.
        let leaderHearsTerminate = Self.leaderCatches(properties.leader, Self.nspawnKillSignal(of: name))
        var steps: [(Duration, () throws -> Void)] = [
            (terminateGrace, {
                try machined.terminateMachine(name)
                if !leaderHearsTerminate { try machined.killMachine(name, whom: .leader, signal: .kill) }
            }),
            (terminateGrace, { try machined.killMachine(name, whom: .all, signal: .kill) }),
        ]
        // The kernel drops a signal with no handler for a namespace's init, so waiting for a
        // leader that does not catch the request could only ever time out.
        if Self.leaderCatches(properties.leader, request) {
            steps.insert((timeout, { try machined.killMachine(name, whom: .leader, signal: request) }), at: 0)
        }
        for (wait, action) in steps {
            var gone = false
            do {
                try action()
            } catch NspawnError.noSuchMachine {
                gone = true
            }
            if try gone || Self.waitUntilGone(name, removal: removal, timeout: wait, bus: bus) {
                try finishStop(of: name, unit: properties.unit, bus: bus)
                return
            }
        }
        throw NspawnError.timedOut("stopping machine '\(name)'", waitedSeconds: timeout.seconds + 2 * terminateGrace.seconds)
    }

    /// machined forgets a machine before systemd-nspawn has exited and released the image's
    /// lock, so a stop is over only when the machine's unit is: a start right after it would
    /// otherwise find the image busy. A machine stopped on request is not a failure either:
    /// killing a payload that ignored its shutdown request leaves the unit "failed", which would
    /// count towards systemd's start limit. Only our own unit's failure is cleared.
    func finishStop(of name: MachineName, unit: String?, bus: BusConnection) throws {
        guard let unit else { return }
        let systemd = SystemdManager(bus: bus)
        guard try systemd.waitUntilStopped(unit, timeout: terminateGrace) else {
            throw NspawnError.timedOut("machine '\(name)' is gone but its unit \(unit) still runs", waitedSeconds: terminateGrace.seconds)
        }
        if unit == name.serviceUnit { try systemd.resetFailedUnit(unit) }
    }

    /// The running machine's properties; "not running" also when it stopped between the two lookups.
    static func runningMachine(_ name: MachineName, machined: Machined) throws -> MachineProperties {
        if let path = try machined.machinePathIfRunning(name),
           let properties = try machined.machinePropertiesIfRunning(name, path: path) {
            return properties
        }
        if try machined.imageExists(name) { throw NspawnError.notRunning(name.rawValue) }
        throw NspawnError.noSuchImage(name.rawValue)
    }

    static func subscribeMachineRemoved(_ bus: BusConnection) throws -> SignalSubscription {
        do {
            return try bus.subscribe(match: "type='signal',sender='\(Machined.destination)',path='\(Machined.managerPath)',interface='\(Machined.managerInterface)',member='MachineRemoved'")
        } catch {
            throw NspawnError.bus(error, context: "subscribe to machine signals")
        }
    }

    /// Waits for MachineRemoved for `name`, checking once first in case it already went.
    static func waitUntilGone(_ name: MachineName, removal: SignalSubscription, timeout: Duration, bus: BusConnection) throws -> Bool {
        if try Machined(bus: bus).machinePathIfRunning(name) == nil { return true }
        do {
            let signal = try bus.waitForSignal(on: removal, timeout: timeout) { $0.arguments.first?.string == name.rawValue }
            if signal != nil { return true }
        } catch {
            throw NspawnError.bus(error, context: "waiting for machine '\(name)' to stop")
        }
        return try Machined(bus: bus).machinePathIfRunning(name) == nil
    }

    /// Whether the machine's leader may be systemd, which wants SIGRTMIN+4 to power off and
    /// takes SIGTERM as "re-execute". When /proc cannot tell (hidepid, another PID namespace)
    /// assume systemd, as machinectl does; other payloads are then still terminated after the timeout.
    static func leaderRunsSystemd(_ leader: UInt32?) -> Bool {
        guard let leader, leader > 0, let comm = try? AtomicFile.read("/proc/\(leader)/comm", limit: 4096) else { return true }
        return comm == "systemd\n"
    }

    /// What systemd-nspawn sends the leader when it is terminated: KillSignal= from the
    /// settings, else SIGRTMIN+3 (an init's halt request) for a boot and SIGKILL for a payload.
    static func nspawnKillSignal(of name: MachineName) -> UnixSignal {
        let settings = (try? loadSettings(name))?.settings
        if let text = settings?.value(.killSignal), let signal = try? UnixSignal(parsing: text) { return signal }
        let boot = settings?.boot ?? true
        return boot ? ((try? UnixSignal(parsing: "SIGRTMIN+3")) ?? .kill) : .kill
    }

    /// Whether the leader can act on `signal`: it has a handler for it (SigCgt) or blocks it
    /// to read it from a signalfd, as systemd does (SigBlk; the kernel queues a blocked signal
    /// even for a namespace's init). When /proc cannot tell, assume it can, so the clean
    /// shutdown still gets its wait.
    static func leaderCatches(_ leader: UInt32?, _ signal: UnixSignal) -> Bool {
        // SIGKILL needs no handler: the kernel delivers it to a namespace's init from outside.
        if signal == .kill { return true }
        guard let leader, leader > 0, let status = try? AtomicFile.read("/proc/\(leader)/status", limit: 64 * 1024),
              let handled = handledSignals(procStatus: status) else { return true }
        return handled.contains(signal.number)
    }

    /// The signals in the SigCgt and SigBlk masks of a /proc/PID/status text (hex, bit N-1 for signal N).
    static func handledSignals(procStatus: String) -> Set<Int32>? {
        var handled = Set<Int32>()
        for field in ["SigCgt:", "SigBlk:"] {
            guard let line = procStatus.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
                  let mask = UInt64(String(line.dropFirst(field.count).filter { !$0.isWhitespace }), radix: 16) else { return nil }
            handled.formUnion((1...64).filter { mask & (UInt64(1) << UInt64($0 - 1)) != 0 }.map(Int32.init))
        }
        return handled
    }

    static func dropEnablement(of name: MachineName, bus: BusConnection) throws {
        let systemd = SystemdManager(bus: bus)
        if SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit)) {
            _ = try systemd.disableUnitFiles([name.serviceUnit])
            try systemd.reload()
        }
    }
}
