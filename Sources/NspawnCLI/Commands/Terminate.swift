import ArgumentParser
import NspawnAPI
import NspawnKit

struct Terminate: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "terminate",
        abstract: "Terminate machines at once, without a clean shutdown, and wait until they are gone.")

    @OptionGroup var output: OutputOptions

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        try await runAction(on: machines, output: output, result: "terminated") { try await manager.terminate($0) }
    }
}
