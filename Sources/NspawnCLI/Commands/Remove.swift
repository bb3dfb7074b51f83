import ArgumentParser
import NspawnAPI
import NspawnKit

struct Remove: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove images with their settings; refuses running machines unless --force.",
        aliases: ["rm"])

    @OptionGroup var output: OutputOptions

    @Flag(name: .shortAndLong, help: "Stop a running machine first.")
    var force = false

    @Option(help: "With --force, seconds to wait for a clean shutdown (default 90).", transform: parseSeconds)
    var timeout: Double?

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        let request = RemoveRequest(force: force ? true : nil, timeout: timeout)
        try await runAction(on: machines, output: output, result: "removed") {
            try await manager.remove($0, request)
        }
    }
}
