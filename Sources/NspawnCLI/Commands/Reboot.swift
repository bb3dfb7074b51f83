import ArgumentParser
import NspawnAPI
import NspawnKit

struct Reboot: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "reboot",
        abstract: "Reboot machines (systemd's reboot request, or a unit restart for other payloads).",
        discussion: "--hard resets the power instead: the machine is terminated at once, then started again.")

    @OptionGroup var output: OutputOptions

    @Flag(help: "Terminate and start again, without the guest's clean reboot.")
    var hard = false

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        let request = RebootRequest(hard: hard ? true : nil)
        try await runAction(on: machines, output: output, result: hard ? "reset" : "rebooting") { try await manager.reboot($0, request) }
    }
}
