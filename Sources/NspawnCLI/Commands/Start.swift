import ArgumentParser
import NspawnAPI
import NspawnKit

struct Start: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Start machines as systemd-nspawn@NAME.service and wait until they run.")

    @OptionGroup var output: OutputOptions

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        let statuses = StatusCollector()
        let json = output.json
        let failures = await manager.start(machines.names)
        // Only scripts asking for JSON pay for the status queries.
        if json {
            let started = machines.names.filter { name in !failures.contains { $0.name == name } }
            try await fanOut(started) { name in await statuses.add(try await manager.status(name)) }
        }
        if !failures.isEmpty { throw PartialFailure(failures: failures.map { ($0.name.rawValue, $0.error) }) }
        if output.json { printOut(Renderer.json(await statuses.sorted(by: machines.names))) }
    }
}

actor StatusCollector {
    private var statuses: [MachineStatus] = []

    func add(_ status: MachineStatus) { statuses.append(status) }

    func sorted(by names: [MachineName]) -> [MachineStatus] {
        names.compactMap { name in statuses.first { $0.name == name.rawValue } }
    }
}
