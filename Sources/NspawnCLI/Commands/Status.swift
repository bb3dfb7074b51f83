import ArgumentParser
import NspawnAPI
import NspawnKit

struct Status: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show one machine or image in detail.")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() async throws {
        let status = try await output.service.status(name)
        printOut(output.json ? Renderer.json(status) : Renderer.statusText(status))
    }
}
