import ArgumentParser
import NspawnAPI
import NspawnKit

struct Enable: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Start machines at boot (with machines.target).")

    @OptionGroup var output: OutputOptions

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let service = try output.service
        try await changeEnablement(machines.names, output: output) { try await service.enable($0) }
    }
}

struct Disable: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Stop starting machines at boot.")

    @OptionGroup var output: OutputOptions

    @OptionGroup var machines: MachineNames

    func run() async throws {
        let service = try output.service
        try await changeEnablement(machines.names, output: output) { try await service.disable($0) }
    }
}

/// Unit-file changes touch shared symlinks (machines.target.wants), so names go one at a time.
private func changeEnablement(
    _ names: [MachineName], output: OutputOptions,
    _ change: (MachineName) async throws -> [UnitFileChange]
) async throws {
    var all: [UnitFileChange] = []
    var failures: [(name: String, error: NspawnError)] = []
    for name in names {
        do {
            all += try await change(name)
        } catch let error as NspawnError {
            failures.append((name.rawValue, error))
        }
    }
    if output.json {
        // When every name failed there is no result to print, only the errors.
        if failures.count < names.count { printOut(Renderer.json(all)) }
    } else {
        for change in all {
            switch change.type {
            case "symlink": writeStandardError("Created symlink \(change.path) → \(change.source).\n")
            case "unlink": writeStandardError("Removed \"\(change.path)\".\n")
            default: writeStandardError("\(change.type) \(change.path) \(change.source)\n")
            }
        }
    }
    if !failures.isEmpty { throw PartialFailure(failures: failures) }
}
