import ArgumentParser
import NspawnAPI
import NspawnKit

struct List: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List machines and images together.",
        aliases: ["list"])

    @OptionGroup var output: OutputOptions

    @Flag(name: .shortAndLong, help: "Include hidden names such as .host.")
    var all = false

    func run() async throws {
        let machines = try await output.service.list(ListRequest(all: all ? true : nil))
        printOut(output.json ? Renderer.json(machines) : Renderer.listTable(machines))
    }
}
