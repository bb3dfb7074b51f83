import ArgumentParser
import NspawnAPI
import NspawnKit

struct Reboot: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        abstract: "Reboot machines (systemd's reboot request, or a unit restart for other payloads).")

    @OptionGroup var output: OutputOptions

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let manager = try output.service
        try await runAction(on: machines, output: output, result: "rebooting") { try await manager.reboot($0) }
    }
}
