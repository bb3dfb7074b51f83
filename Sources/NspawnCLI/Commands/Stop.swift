import ArgumentParser
import NspawnAPI
import NspawnKit

struct Stop: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop machines, whatever their payload, and wait until they are gone.",
        discussion: """
            Asks a systemd payload to power off (SIGRTMIN+4) and any other payload to terminate (SIGTERM). \
            After --timeout seconds the machine is terminated, and then killed.
            """)

    @OptionGroup var output: OutputOptions

    @Option(help: "Seconds to wait for a clean shutdown before terminating (default 90, at most 86400).", transform: parseSeconds)
    var timeout: Double?

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        let request = StopRequest(timeout: timeout)
        try await runAction(on: machines, output: output, result: "stopped") { try await manager.stop($0, request) }
    }
}
