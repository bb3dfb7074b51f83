import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    // MARK: Views

    /// Machines and images merged by name, sorted. Hidden names (".host") only with `includeHidden`.
    public func list(includeHidden: Bool = false) async throws -> [MachineSummary] {
        let cache = detailsCache
        return try await withBus { bus in try Self.list(bus: bus, includeHidden: includeHidden, cache: cache) }
    }

    public func status(_ name: MachineName) async throws -> MachineStatus {
        try await withBus { bus in try Self.status(name, bus: bus) }
    }

    // MARK: - Blocking implementations

    static func list(bus: BusConnection, includeHidden: Bool, cache: MachineDetailsCache? = nil) throws -> [MachineSummary] {
        let machined = Machined(bus: bus)
        let visible: (String) -> Bool = { includeHidden || !$0.hasPrefix(".") }
        let machines = try machined.listMachines().filter { visible($0.name) }
        let images = try machined.listImages().filter { visible($0.name) }
        let imagesByName = Dictionary(images.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let machinesByName = Dictionary(machines.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let names = Set(machines.map(\.name)).union(images.map(\.name)).sorted()

        // One pipelined batch: per running machine its properties (the leader), per stopped image
        // its os-release, per name its unit file state. What only a look inside a running machine
        // tells (os-release, addresses) comes next: from the cache, from our own probe of the
        // leader, and only what neither knows from machined, in a second batch.
        enum Question { case properties(String), machineOS(String), addresses(String), imageOS(String), unitFileState(String), socketStates }
        let mightBeEnabled = SystemdManager.enablementCandidates()
        let exposedNames = Set(names.filter { access(MachineName(unchecked: $0).socketUnitPath, F_OK) == 0 })
        var questions: [Question] = []
        var calls: [MethodCall] = []
        func ask(_ question: Question, _ call: MethodCall) {
            questions.append(question)
            calls.append(call)
        }
        let cached = cache?.fresh() ?? [:]
        // os-release of stopped images found in the cache, by name.
        var cachedImageOS: [String: String?] = [:]
        for name in names {
            if let machine = machinesByName[name] {
                ask(.properties(name), Machined.propertiesCall(path: machine.path, interface: Machined.machineInterface))
            } else if let image = imagesByName[name], let os = cache?.imageOS(name, modified: image.modified) {
                cachedImageOS[name] = os
            } else if let image = imagesByName[name], let os = MachineProbe.imageOSRelease(type: image.type, path: image.path) {
                cachedImageOS[name] = os
                cache?.storeImageOS(name, modified: image.modified, os: os)
            } else {
                ask(.imageOS(name), Machined.managerCall("GetImageOSRelease", [.string(name)]))
            }
            if mightBeEnabled?.contains(name) ?? true {
                ask(.unitFileState(name), SystemdManager.call("GetUnitFileState", [.string(MachineName(unchecked: name).serviceUnit)]))
            }
        }
        if !exposedNames.isEmpty {
            let sockets = exposedNames.sorted().map { MachineName(unchecked: $0).socketUnit }
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
            rows[name]?.pendingResize = try? pendingResize(of: MachineName(unchecked: name))
            // ListImages gives the object path, not the file's; nspawnctl imports into the store.
            if let image, image.type == "directory" || image.type == "subvolume" {
                rows[name]?.oci = OCIOrigin.read(imagePath: "\(ImageStore.system.directory)/\(name)")
            }
        }
        var properties: [String: MachineProperties] = [:]
        var fetchedOS = Set<String>()
        var fetchedAddresses = Set<String>()
        func record(_ question: Question, _ reply: [BusValue]) {
            switch question {
            case .properties(let name):
                let machine = MachineProperties(reply.first?.stringKeyedDictionary ?? [:])
                rows[name]?.state = MachineState(machinedState: machine.state)
                properties[name] = machine
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
                    guard let name = MachineUnits.machineName(ofUnit: unit, suffix: ".socket") else { continue }
                    if rows[name]?.state == .stopped { rows[name]?.state = .listening }
                }
            }
        }
        // A machine without os-release or a private network is normal: the field stays empty.
        // A failure is not cached, so a timeout under load does not blank a machine for a minute.
        // A machine that stopped since ListMachines has lost its object: it is listed as
        // stopped when its image stays, and not at all otherwise.
        var vanished = Set<String>()
        func settle(_ question: Question, _ answer: Result<[BusValue], BusError>) {
            switch (question, answer) {
            case (_, .success(let reply)): record(question, reply)
            case (.properties(let name), .failure(let error)) where Machined.isVanishedObject(error): vanished.insert(name)
            default: break
            }
        }
        for (question, answer) in zip(questions, answers) { settle(question, answer) }
        for (name, os) in cachedImageOS { rows[name]?.os = os }
        for name in vanished {
            if imagesByName[name] == nil {
                rows[name] = nil
            } else {
                rows[name]?.state = .stopped
                rows[name]?.machineClass = nil
            }
        }

        // Cached details count only for the same leader; a machine restarted since is looked at again.
        let running = machinesByName.keys.filter { !vanished.contains($0) }.sorted()
        for name in running { rows[name]?.health = currentHealth(of: MachineName(unchecked: name), running: true) }
        var wantsOS = Set<String>()
        var wantsAddresses = Set<String>()
        for name in running {
            let leader = properties[name]?.leader
            let entry = cached[name].flatMap { leader != nil && $0.leader == leader ? $0 : nil }
            if let os = entry?.os { rows[name]?.os = os } else { wantsOS.insert(name) }
            if let addresses = entry?.addresses { rows[name]?.addresses = addresses } else { wantsAddresses.insert(name) }
        }
        let probed = MachineProbe.probe(running.compactMap { name in
            guard wantsOS.contains(name) || wantsAddresses.contains(name), let machine = properties[name] else { return nil }
            return MachineProbe.Request(name: name, properties: machine,
                                        wantsOS: wantsOS.contains(name), wantsAddresses: wantsAddresses.contains(name))
        })
        let start = questions.count
        for name in running {
            if wantsOS.contains(name) {
                if let os = probed[name]?.os {
                    rows[name]?.os = os
                    fetchedOS.insert(name)
                } else {
                    ask(.machineOS(name), Machined.managerCall("GetMachineOSRelease", [.string(name)]))
                }
            }
            if wantsAddresses.contains(name) {
                if let addresses = probed[name]?.addresses {
                    rows[name]?.addresses = addresses
                    fetchedAddresses.insert(name)
                } else {
                    ask(.addresses(name), Machined.managerCall("GetMachineAddresses", [.string(name)]))
                }
            }
        }
        if questions.count > start {
            let more = (try? bus.callAll(Array(calls[start...]))) ?? []
            for (question, answer) in zip(questions[start...], more) { settle(question, answer) }
        }
        if let cache {
            for name in running {
                guard let leader = properties[name]?.leader else { continue }
                if fetchedOS.contains(name) { cache.storeOS(name, leader: leader, rows[name]?.os) }
                if fetchedAddresses.contains(name) { cache.storeAddresses(name, leader: leader, rows[name]?.addresses ?? []) }
            }
            cache.forget(except: Set(machinesByName.keys))
        }
        return names.compactMap { rows[$0] }
    }

    static func status(_ name: MachineName, bus: BusConnection) throws -> MachineStatus {
        let machined = Machined(bus: bus)
        // A machine that stops (or an image that goes) while this runs reads as stopped (or
        // absent), never as a failed call: each lookup below may find its object gone.
        let machinePath = try machined.machinePathIfRunning(name)
        let machine = try machinePath.map { path throws(NspawnError) in try machined.machinePropertiesIfRunning(name, path: path) } ?? nil
        let imagePath = try machined.imagePathIfExists(name)
        let image = try imagePath.map { path throws(NspawnError) in try machined.imagePropertiesIfExists(name, path: path) } ?? nil
        if machine == nil && image == nil { throw NspawnError.noSuchImage(name.rawValue) }

        var status = MachineStatus(name: name.rawValue, state: .stopped, os: nil, addresses: [], enabled: false)
        if let p = machine {
            status.state = MachineState(machinedState: p.state)
            status.machine = .init(machineClass: p.machineClass, leader: p.leader, rootDirectory: p.rootDirectory,
                                   unit: p.unit, service: p.service, since: Date(epochMicroseconds: p.timestamp),
                                   networkInterfaces: p.networkInterfaces)
            // Our own look at the leader first; machined for what it could not tell.
            let probed = MachineProbe.probe([MachineProbe.Request(name: name.rawValue, properties: p)])[name.rawValue]
            status.os = probed?.os ?? (try? osDisplayName(machined.machineOSRelease(name)))
            status.addresses = probed?.addresses ?? (try? machined.machineAddresses(name)) ?? []
            status.stats = sample(name.rawValue, p)
        }
        if let p = image {
            status.image = .init(type: p.type, path: p.path, readOnly: p.readOnly,
                                 created: Date(epochMicroseconds: p.created), modified: Date(epochMicroseconds: p.modified),
                                 usage: knownSize(p.usage), limit: knownSize(p.limit))
            status.disk = diskUsage(of: name, image: p)
            if p.type == "directory" || p.type == "subvolume", let path = p.path { status.oci = OCIOrigin.read(imagePath: path) }
            // Snapshots that cannot be read leave the rest of the status standing.
            status.snapshots = p.path.flatMap { try? SnapshotStore(machine: name, imagePath: $0).list() }
            status.snapshotSchedule = try? snapshotSchedule(of: name)
            if status.os == nil, machine == nil, let os = MachineProbe.imageOSRelease(type: p.type, path: p.path) {
                status.os = os
            } else if status.os == nil {
                let reply = try? bus.call(Machined.managerCall("GetImageOSRelease", [.string(name.rawValue)]))
                status.os = reply.flatMap { osDisplayName(Machined.osRelease(from: $0)) }
            }
        }
        let systemd = SystemdManager(bus: bus)
        status.enabled = SystemdManager.isEnabled(try systemd.unitFileState(name.serviceUnit))
        status.exposed = try exposedAddresses(of: name)
        if !status.exposed.isEmpty {
            let socketUnit = name.socketUnit
            status.socketState = try systemd.unitStates([socketUnit])[socketUnit]?.sub
            if status.state == .stopped && status.socketState == "listening" { status.state = .listening }
        }
        if let service = try? systemd.unitProperties(name.serviceUnit, interface: "org.freedesktop.systemd1.Service") {
            status.restarts = service["NRestarts"]?.uint64.map { Int($0) }
            status.unitResult = service["Result"]?.string.flatMap { $0 == "success" ? nil : $0 }
        }
        status.restart = try restartPolicy(of: name)
        if let policy = status.restart, policy.mode != .no, status.unitResult != nil,
           try systemd.unitStates([name.serviceUnit])[name.serviceUnit]?.active == "failed" {
            status.startLimitHit = true
        }
        status.healthCheck = try healthCheck(of: name)
        status.health = currentHealth(of: name, running: machine != nil)
        status.flavor = try flavorName(of: name)
        status.pendingResize = try pendingResize(of: name)
        if status.flavor != nil || machine != nil {
            status.limits = try? liveLimits(name, bus: bus)
        }
        return status
    }
}
