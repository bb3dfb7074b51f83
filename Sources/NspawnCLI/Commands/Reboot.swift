import ArgumentParser
import NspawnKit

struct Reboot: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        abstract: "Reboot machines (systemd's reboot request, or a unit restart for other payloads).")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine names.", transform: parseMachineName)
    var names: [MachineName]

    func validate() throws {
        if names.isEmpty { throw ValidationError("give at least one machine name") }
    }

    func run() async throws {
        let manager = MachineManager()
        try await fanOut(try uniqueNames(names)) { try await manager.reboot($0) }
        if output.json { printOut(Renderer.json(names.map { ActionResult(name: $0.rawValue, result: "rebooting") })) }
    }
}
