import ArgumentParser
import NspawnKit

struct Terminate: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        abstract: "Terminate machines at once, without a clean shutdown, and wait until they are gone.")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine names.", transform: parseMachineName)
    var names: [MachineName]

    func validate() throws {
        if names.isEmpty { throw ValidationError("give at least one machine name") }
    }

    func run() async throws {
        let manager = MachineManager()
        try await fanOut(try uniqueNames(names)) { try await manager.terminate($0) }
        if output.json { printOut(Renderer.json(names.map { ActionResult(name: $0.rawValue, result: "terminated") })) }
    }
}
