import ArgumentParser
import NspawnKit

struct Stop: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        abstract: "Stop machines, whatever their payload, and wait until they are gone.",
        discussion: """
            Asks a systemd payload to power off (SIGRTMIN+4) and any other payload to terminate (SIGTERM). \
            After --timeout seconds the machine is terminated, and then killed.
            """)

    @OptionGroup var output: OutputOptions

    @Option(help: "Seconds to wait for a clean shutdown before terminating.", transform: parseSeconds)
    var timeout: Duration = .seconds(90)

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = output.machines
        let timeout = timeout
        try await runAction(on: machines, output: output, result: "stopped") { try await manager.stop($0, timeout: timeout) }
    }
}
