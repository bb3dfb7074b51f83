import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The lifecycle operations behind `nspawnctl` and the daemon.
///
/// machined and systemd are the only source of truth: nothing here caches which machines exist.
/// Every method opens its own bus connection on a worker thread, so calls may run concurrently.
/// Methods throw `NspawnError`.
public struct MachineManager: Sendable {
    /// How long `terminate` and the escalation steps of `stop` wait for a machine to go away.
    public var terminateGrace: Duration
    /// Remembers what machined must fork into a container to learn (os-release, addresses)
    /// for a long-running caller such as the daemon; nil asks every time.
    public var detailsCache: MachineDetailsCache?

    public init(terminateGrace: Duration = .seconds(30), detailsCache: MachineDetailsCache? = nil) {
        self.terminateGrace = terminateGrace
        self.detailsCache = detailsCache
    }

    // MARK: Views

    /// Machines and images merged by name, sorted. Hidden names (".host") only with `includeHidden`.
    public func list(includeHidden: Bool = false) async throws -> [MachineSummary] {
        let cache = detailsCache
        return try await withBus { bus in try Self.list(bus: bus, includeHidden: includeHidden, cache: cache) }
    }

    public func status(_ name: MachineName) async throws -> MachineStatus {
        try await withBus { bus in try Self.status(name, bus: bus) }
    }

    // MARK: Lifecycle

    /// Starts the machine as `systemd-nspawn@NAME.service` and waits for the start job.
    /// Starting a running machine is not an error.
    public func start(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            if let path = try machined.machinePathIfRunning(name) {
                // Running under some other unit (a hand-started nspawn): nothing to do.
                // Our own unit is started anyway, which also overrides a pending stop.
                let properties = try machined.machineProperties(name, path: path)
                if properties.unit != name.serviceUnit && properties.state != "closing" { return }
            } else {
                guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            }
            try SystemdManager(bus: bus).startUnit(name.serviceUnit)
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

    /// Terminates the machine at once (no clean shutdown) and waits until it is gone.
    public func terminate(_ name: MachineName) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let properties = try Self.runningMachine(name, machined: machined)
            let removal = try Self.subscribeMachineRemoved(bus)
            do {
                try machined.terminateMachine(name)
            } catch NspawnError.noSuchMachine {
                // It went away on its own between the check and the call: terminated all the same.
            }
            guard try Self.waitUntilGone(name, removal: removal, timeout: terminateGrace, bus: bus) else {
                throw NspawnError.timedOut("terminating machine '\(name)'", waitedSeconds: terminateGrace.seconds)
            }
            try Self.clearFailure(of: name, unit: properties.unit, bus: bus)
        }
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

    // MARK: Images

    /// Removes the image, its settings and its boot-time enablement.
    /// A running machine is refused unless `force`, which stops it first.
    public func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            guard try machined.imageExists(name) else { throw NspawnError.noSuchImage(name.rawValue) }
            if try machined.machinePathIfRunning(name) != nil {
                guard force else { throw NspawnError.busy(name.rawValue, reason: "it is running; stop it first or use --force") }
                try self.stop(name, timeout: stopTimeout, bus: bus)
            }
            try machined.removeImage(name)
            // Only once the image is gone, so a failed removal leaves start-at-boot, the
            // listening socket and the flavor as they were.
            try Self.dropEnablement(of: name, bus: bus)
            try Self.removeHostSocket(name, bus: bus)
            if access(MachineFiles.flavorPath(name), F_OK) == 0 {
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
            if access(SocketActivation.hostSocketPath(name), F_OK) == 0 {
                throw NspawnError.busy(name.rawValue, reason: "it is exposed; its socket units name it, so run 'nspawnctl unexpose \(name)' before renaming")
            }
            if access(MachineFiles.dropInDirectory(newName), F_OK) == 0 {
                throw NspawnError.busy(newName.rawValue, reason: "'\(MachineFiles.dropInDirectory(newName))' is left from an earlier machine of that name; remove it first")
            }
            let systemd = SystemdManager(bus: bus)
            let wasEnabled = SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit))
            try machined.renameImage(name, to: newName)
            // The flavor goes with the machine; live copies from an old resize do not.
            for path in MachineFiles.controlDropIns(name) { try AtomicFile.remove(path) }
            rmdir("/run/systemd/system.control/\(name.serviceUnit).d")
            if access(MachineFiles.dropInDirectory(name), F_OK) == 0 {
                if Glibc.rename(MachineFiles.dropInDirectory(name), MachineFiles.dropInDirectory(newName)) != 0 {
                    throw NspawnError.system("cannot move '\(MachineFiles.dropInDirectory(name))' to '\(MachineFiles.dropInDirectory(newName))'", .last)
                }
                try systemd.reload()
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

    // MARK: - Blocking implementations

    func withBus<T: Sendable>(_ body: @escaping @Sendable (BusConnection) throws -> T) async throws -> T {
        try await BusWork.run {
            try body(try connectSystemBus())
        }
    }

    func stop(_ name: MachineName, timeout: Duration, bus: BusConnection) throws {
        let machined = Machined(bus: bus)
        let properties = try Self.runningMachine(name, machined: machined)
        let removal = try Self.subscribeMachineRemoved(bus)
        let request: UnixSignal = Self.leaderRunsSystemd(properties.leader) ? .powerOff : .term
        // Each step ends the wait as soon as the machine is gone; the next one is harsher.
        let steps: [(Duration, () throws -> Void)] = [
            (timeout, { try machined.killMachine(name, whom: .leader, signal: request) }),
            (terminateGrace, { try machined.terminateMachine(name) }),
            (terminateGrace, { try machined.killMachine(name, whom: .all, signal: .kill) }),
        ]
        for (wait, action) in steps {
            var gone = false
            do {
                try action()
            } catch NspawnError.noSuchMachine {
                gone = true
            }
            if try gone || Self.waitUntilGone(name, removal: removal, timeout: wait, bus: bus) {
                try Self.clearFailure(of: name, unit: properties.unit, bus: bus)
                return
            }
        }
        throw NspawnError.timedOut("stopping machine '\(name)'", waitedSeconds: timeout.seconds + 2 * terminateGrace.seconds)
    }

    /// A machine stopped on request is not a failure: killing a payload that ignored its
    /// shutdown request leaves the unit "failed", which would count towards systemd's start
    /// limit and make the next start fail. Only our own unit is touched.
    static func clearFailure(of name: MachineName, unit: String?, bus: BusConnection) throws {
        guard unit == name.serviceUnit else { return }
        let systemd = SystemdManager(bus: bus)
        systemd.waitUntilSettled(name.serviceUnit)
        try systemd.resetFailedUnit(name.serviceUnit)
    }

    static func runningMachine(_ name: MachineName, machined: Machined) throws -> MachineProperties {
        guard let path = try machined.machinePathIfRunning(name) else {
            if try machined.imageExists(name) { throw NspawnError.notRunning(name.rawValue) }
            throw NspawnError.noSuchImage(name.rawValue)
        }
        return try machined.machineProperties(name, path: path)
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
        guard let leader, leader > 0, let comm = readSmallFile(FilePath("/proc/\(leader)/comm")) else { return true }
        return comm == "systemd\n"
    }

    static func dropEnablement(of name: MachineName, bus: BusConnection) throws {
        let systemd = SystemdManager(bus: bus)
        if SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit)) {
            _ = try systemd.disableUnitFiles([name.serviceUnit])
            try systemd.reload()
        }
    }

    static func list(bus: BusConnection, includeHidden: Bool, cache: MachineDetailsCache? = nil) throws -> [MachineSummary] {
        let machined = Machined(bus: bus)
        let visible: (String) -> Bool = { includeHidden || !$0.hasPrefix(".") }
        let machines = try machined.listMachines().filter { visible($0.name) }
        let images = try machined.listImages().filter { visible($0.name) }
        let imagesByName = Dictionary(images.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let machinesByName = Dictionary(machines.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let names = Set(machines.map(\.name)).union(images.map(\.name)).sorted()

        // One pipelined batch: per running machine its properties, os-release and addresses;
        // per stopped image its os-release; per name its unit file state.
        enum Question { case properties(String), machineOS(String), addresses(String), imageOS(String), unitFileState(String), socketStates }
        let mightBeEnabled = SystemdManager.enablementCandidates()
        let exposedNames = Set(names.filter { access(SocketActivation.hostSocketPath(MachineName(unchecked: $0)), F_OK) == 0 })
        var questions: [Question] = []
        var calls: [MethodCall] = []
        func ask(_ question: Question, _ call: MethodCall) {
            questions.append(question)
            calls.append(call)
        }
        let cached = cache?.fresh() ?? [:]
        // os-release of stopped images found in the cache, by name.
        var cachedImageOS: [String: String?] = [:]
        func askOS(_ name: String) { ask(.machineOS(name), Machined.managerCall("GetMachineOSRelease", [.string(name)])) }
        func askAddresses(_ name: String) { ask(.addresses(name), Machined.managerCall("GetMachineAddresses", [.string(name)])) }
        for name in names {
            if let machine = machinesByName[name] {
                ask(.properties(name), Machined.propertiesCall(path: machine.path, interface: Machined.machineInterface))
                if cached[name]?.os == nil { askOS(name) }
                if cached[name]?.addresses == nil { askAddresses(name) }
            } else if let image = imagesByName[name], let os = cache?.imageOS(name, modified: image.modified) {
                cachedImageOS[name] = os
            } else {
                ask(.imageOS(name), Machined.managerCall("GetImageOSRelease", [.string(name)]))
            }
            if mightBeEnabled?.contains(name) ?? true {
                ask(.unitFileState(name), SystemdManager.call("GetUnitFileState", [.string("systemd-nspawn@\(name).service")]))
            }
        }
        if !exposedNames.isEmpty {
            let sockets = exposedNames.sorted().map { "systemd-nspawn@\($0).socket" }
            questions.append(.socketStates)
            calls.append(SystemdManager.call("ListUnitsByNames", [.strings(sockets)]))
        }
        let answers: [Result<[BusValue], BusError>]
        do {
            answers = try bus.callAll(calls)
        } catch {
            throw NspawnError.bus(error, context: "list machines")
        }

        var rows: [String: MachineSummary] = [:]
        for name in names {
            let image = imagesByName[name]
            rows[name] = MachineSummary(
                name: name,
                state: machinesByName[name] == nil ? .stopped : .running,
                usage: knownSize(image?.usage),
                readOnly: image?.readOnly,
                machineClass: machinesByName[name]?.machineClass,
                imageType: image?.type)
            if exposedNames.contains(name) {
                rows[name]?.exposed = (try? exposedAddresses(of: MachineName(unchecked: name))) ?? []
            }
        }
        var leaders: [String: UInt32] = [:]
        var fetchedOS = Set<String>()
        var fetchedAddresses = Set<String>()
        func record(_ question: Question, _ reply: [BusValue]) {
            switch question {
            case .properties(let name):
                let properties = MachineProperties(reply.first?.stringKeyedDictionary ?? [:])
                rows[name]?.state = MachineState(machinedState: properties.state)
                leaders[name] = properties.leader
            case .machineOS(let name), .imageOS(let name):
                rows[name]?.os = osDisplayName(Machined.osRelease(from: reply))
                if case .machineOS = question { fetchedOS.insert(name) }
                if case .imageOS = question, let image = imagesByName[name] {
                    cache?.storeImageOS(name, modified: image.modified, os: rows[name]?.os)
                }
            case .addresses(let name):
                rows[name]?.addresses = Machined.addresses(from: reply)
                fetchedAddresses.insert(name)
            case .unitFileState(let name):
                rows[name]?.enabled = SystemdManager.isEnabled(reply.first?.string)
            case .socketStates:
                for (unit, state) in SystemdManager.unitStates(from: reply) where state.active == "active" {
                    let name = String(unit.dropFirst("systemd-nspawn@".count).dropLast(".socket".count))
                    if rows[name]?.state == .stopped { rows[name]?.state = .listening }
                }
            }
        }
        // A machine without os-release or a private network is normal: the field stays empty.
        // A failure is not cached, so a timeout under load does not blank a machine for a minute.
        func settle(_ question: Question, _ answer: Result<[BusValue], BusError>) {
            if case .success(let reply) = answer { record(question, reply) }
        }
        for (question, answer) in zip(questions, answers) { settle(question, answer) }
        for (name, os) in cachedImageOS { rows[name]?.os = os }
        if let cache {
            // Cached details count only for the same leader; a machine restarted since is asked again.
            var stale: [String] = []
            for (name, entry) in cached where machinesByName[name] != nil {
                if leaders[name] != nil, leaders[name] == entry.leader {
                    if let os = entry.os { rows[name]?.os = os }
                    if let addresses = entry.addresses { rows[name]?.addresses = addresses }
                } else {
                    stale.append(name)
                }
            }
            if !stale.isEmpty {
                let start = questions.count
                for name in stale {
                    if !fetchedOS.contains(name) { askOS(name) }
                    if !fetchedAddresses.contains(name) { askAddresses(name) }
                }
                let more = (try? bus.callAll(Array(calls[start...]))) ?? []
                for (question, answer) in zip(questions[start...], more) { settle(question, answer) }
            }
            for name in machinesByName.keys {
                guard let leader = leaders[name] else { continue }
                if fetchedOS.contains(name) { cache.storeOS(name, leader: leader, rows[name]?.os) }
                if fetchedAddresses.contains(name) { cache.storeAddresses(name, leader: leader, rows[name]?.addresses ?? []) }
            }
            cache.forget(except: Set(machinesByName.keys))
        }
        return names.compactMap { rows[$0] }
    }

    static func status(_ name: MachineName, bus: BusConnection) throws -> MachineStatus {
        let machined = Machined(bus: bus)
        let machinePath = try machined.machinePathIfRunning(name)
        let imagePath = try machined.imagePathIfExists(name)
        if machinePath == nil && imagePath == nil { throw NspawnError.noSuchImage(name.rawValue) }

        var status = MachineStatus(name: name.rawValue, state: .stopped, os: nil, addresses: [], enabled: false)
        if let machinePath {
            let p = try machined.machineProperties(name, path: machinePath)
            status.state = MachineState(machinedState: p.state)
            status.machine = .init(machineClass: p.machineClass, leader: p.leader, rootDirectory: p.rootDirectory,
                                   unit: p.unit, service: p.service, since: Date(epochMicroseconds: p.timestamp),
                                   networkInterfaces: p.networkInterfaces)
            status.os = try? osDisplayName(machined.machineOSRelease(name))
            status.addresses = (try? machined.machineAddresses(name)) ?? []
        }
        if let imagePath {
            let p = try machined.imageProperties(name, path: imagePath)
            status.image = .init(type: p.type, path: p.path, readOnly: p.readOnly,
                                 created: Date(epochMicroseconds: p.created), modified: Date(epochMicroseconds: p.modified),
                                 usage: knownSize(p.usage), limit: knownSize(p.limit))
            if status.os == nil {
                let reply = try? bus.call(Machined.managerCall("GetImageOSRelease", [.string(name.rawValue)]))
                status.os = reply.flatMap { osDisplayName(Machined.osRelease(from: $0)) }
            }
        }
        let systemd = SystemdManager(bus: bus)
        status.enabled = SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit))
        status.exposed = try exposedAddresses(of: name)
        if !status.exposed.isEmpty {
            let socketUnit = SocketActivation.hostSocketUnit(name)
            status.socketState = try systemd.unitStates([socketUnit])[socketUnit]?.sub
            if status.state == .stopped && status.socketState == "listening" { status.state = .listening }
        }
        status.flavor = try flavorName(of: name)
        if status.flavor != nil || machinePath != nil {
            status.limits = try? liveLimits(name, bus: bus)
        }
        return status
    }
}

package func connectSystemBus() throws(NspawnError) -> BusConnection {
    do {
        return try BusConnection.system()
    } catch {
        if error.errno == Errno.permissionDenied.rawValue || error.errno == Errno.notPermitted.rawValue {
            throw .permissionDenied("connect to the system bus", cause: error)
        }
        throw .bus(error, context: "cannot connect to the system bus")
    }
}

extension Duration {
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Reads a small file such as one under /proc, or nil if it cannot be read.
func readSmallFile(_ path: FilePath, limit: Int = 64 * 1024) -> String? {
    guard let fd = try? FileDescriptor.open(path, .readOnly, options: .closeOnExec) else { return nil }
    defer { try? fd.close() }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count < limit {
        guard let n = try? chunk.withUnsafeMutableBytes({ try fd.read(into: $0, retryOnInterrupt: true) }), n > 0 else { break }
        bytes.append(contentsOf: chunk[..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
