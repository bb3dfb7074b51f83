import ArgumentParser
import NspawnAPI
import NspawnKit

extension KillWhom: ExpressibleByArgument {}

struct Kill: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Send a signal to machines' processes.")

    @OptionGroup var output: OutputOptions

    @Option(name: .shortAndLong, help: "Signal name or number (TERM, SIGHUP, 9, RTMIN+4; default TERM).",
            transform: { text in try KillRequest(signal: text).validate(); return text })
    var signal: String?

    @Option(help: "Signal only the leader, or all processes (default all).")
    var killWhom: KillWhom?

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        let request = KillRequest(signal: signal, whom: killWhom)
        let signal = try UnixSignal(parsing: signal ?? KillRequest.defaultSignal)
        try await runAction(on: machines, output: output, result: "signalled \(signal)") {
            try await manager.kill($0, request)
        }
    }
}
