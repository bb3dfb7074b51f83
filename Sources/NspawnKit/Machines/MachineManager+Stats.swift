extension MachineManager {
    /// One sample of each running machine named, or of every running container when none is
    /// named; in name order. A named machine that is not running is refused.
    public func stats(_ names: [MachineName]) async throws -> [MachineStats] {
        try await withBus { bus in try Self.stats(names, bus: bus) }
    }

    /// The machine's numbers now; nil when its leader ended while they were read (they may be
    /// another process's then).
    static func sample(_ name: String, _ properties: MachineProperties) -> MachineStats? {
        var stats = MachineStats(name: name, sampledUsec: MachineStats.monotonicUsec())
        let now = LogTime.now()
        if let started = properties.timestamp, started > 0, now > started { stats.uptimeSeconds = Double(now - started) / 1_000_000 }
        stats.health = currentHealth(of: MachineName(unchecked: name), running: true)?.status
        guard let leader = try? MachineProbe.Leader(MachineProbe.Request(name: name, properties: properties)),
              let unit = properties.unit, let cgroup = CgroupStats.unitCgroup(leader.cgroupFile, unit: unit) else { return stats }
        CgroupStats.read(into: &stats, cgroup: cgroup)
        if let network = CgroupStats.network(ofLeader: leader.pid) {
            stats.networkReceiveBytes = network.received
            stats.networkTransmitBytes = network.transmitted
        }
        return leader.isAlive ? stats : nil
    }

    static func stats(_ names: [MachineName], bus: BusConnection) throws(NspawnError) -> [MachineStats] {
        let machined = Machined(bus: bus)
        let listed = try machined.listMachines().filter { $0.machineClass == "container" }
        var chosen = listed
        if !names.isEmpty {
            let byName = Dictionary(listed.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            chosen = []
            for name in names {
                guard let machine = byName[name.rawValue] else {
                    throw try machined.imageExists(name) ? .notRunning(name.rawValue) : .noSuchImage(name.rawValue)
                }
                if !chosen.contains(machine) { chosen.append(machine) }
            }
        }
        let answers: [Result<[BusValue], BusError>]
        do {
            answers = try bus.callAll(chosen.map { Machined.propertiesCall(path: $0.path, interface: Machined.machineInterface) })
        } catch {
            throw .bus(error, context: "read the properties of running machines")
        }
        var samples: [MachineStats] = []
        for (machine, answer) in zip(chosen, answers) {
            // A machine that stopped meanwhile is left out, as if it had not been running.
            guard case .success(let reply) = answer, let values = reply.first?.stringKeyedDictionary,
                  let stats = sample(machine.name, MachineProperties(values)) else { continue }
            samples.append(stats)
        }
        return samples.sorted { $0.name < $1.name }
    }
}
