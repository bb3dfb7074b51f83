import ArgumentParser
import NspawnKit

extension KillWhom: ExpressibleByArgument {}

struct Kill: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(abstract: "Send a signal to machines' processes.")

    @OptionGroup var output: OutputOptions

    @Option(name: .shortAndLong, help: "Signal name or number (TERM, SIGHUP, 9, RTMIN+4).",
            transform: { try UnixSignal(parsing: $0) })
    var signal: UnixSignal = .term

    @Option(help: "Signal only the leader, or all processes.")
    var killWhom: KillWhom = .all

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = output.machines
        let (signal, whom) = (signal, killWhom)
        try await runAction(on: machines, output: output, result: "signalled \(signal)") {
            try await manager.kill($0, signal: signal, whom: whom)
        }
    }
}
