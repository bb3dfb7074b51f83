import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import NspawnKit
import SystemPackage

/// The `nspawnctl` command tree.
public struct Nspawnctl: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "nspawnctl",
        abstract: "Manage systemd-nspawn containers through systemd-machined and systemd.",
        discussion: """
            Exit codes: 0 success, 1 failure, 2 invalid input, 3 not found, \
            4 permission denied, 5 conflict (already exists, running, not running), \
            6 verification failed (checksum, signature, ssh host key), 7 nspawnd unreachable, \
            8 nspawnd speaks another API level, 130 cancelled by a signal. \
            exec and shell exit with the command's status instead, and 125 when nspawnctl fails \
            (see 'nspawnctl exec --help').
            """,
        version: "nspawnctl \(NspawnctlVersion.current)",
        subcommands: [
            List.self, Status.self, Start.self, Stop.self, Reboot.self, Terminate.self, Kill.self,
            Enable.self, Disable.self, Remove.self, Rename.self, Clone.self, ReadOnly.self,
            Import.self, Bootstrap.self, Create.self, Config.self, Expose.self, Unexpose.self, Resize.self, Rebuild.self, Events.self,
            Exec.self, Shell.self, DialStdio.self, Logs.self, Stats.self,
            CopyTo.self, CopyFrom.self, Snapshot.self, Snapshots.self, Restore.self, SnapshotRemove.self, SnapshotScheduleCommand.self, Export.self, CopyMachine.self, MoveMachine.self, ReceiveMachine.self,
            Images.self, Plan.self, Apply.self, Version.self, Hook.self, HealthCheckRun.self,
        ]
    )

    public init() {}
}

/// Several names failed in one fan-out command; each failure was already reported.
struct PartialFailure: Error {
    var failures: [(name: String, error: NspawnError)]

    var exitStatus: ExitStatus {
        let statuses = Set(failures.map { ExitStatus($0.error.category) })
        return statuses.count == 1 ? statuses.first! : .failure
    }
}

/// Commands whose errors should be printed as JSON when `--json` was given.
package protocol JSONCapable {
    var output: OutputOptions { get }
}

public enum NspawnCommand {
    /// Parses `argv` (honouring argv[0] aliases), runs the command and exits with a documented status.
    public static func run(_ argv: [String] = CommandLine.arguments) async -> Never {
        let (programName, arguments) = Invocation.resolve(argv)
        await run(Nspawnctl.self, programName: programName, arguments: arguments) { command in
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        }
    }

    /// Parses `arguments` as `Root`'s command line, runs the command with `perform`, reports
    /// errors (as JSON with `--json`) and exits with a documented status. `nspawnctl-images`
    /// shares this with its own root and its own `perform`.
    package static func run<Root: ParsableCommand>(
        _ root: Root.Type, programName: String, arguments: [String],
        perform: (inout ParsableCommand) async throws -> Void
    ) async -> Never {
        var json = false
        // A command line that does not parse has no options to ask; --json before any "--"
        // still wants its refusal as JSON.
        let wantsJSON = arguments.prefix { $0 != "--" }.contains("--json")
        // exec and shell pass the command's status through; their own failures must not look like one.
        let guest = GuestCommand.isGuestCommand(arguments)
        do {
            var command = try Root.parseAsRoot(arguments)
            json = (command as? JSONCapable)?.output.json ?? false
            try await perform(&command)
            exit(ExitStatus.success.rawValue)
        } catch let ended as GuestExit {
            exit(ended.status)
        } catch let error as NspawnError {
            report(error, programName: programName, json: json)
            exit(guest ? GuestCommand.exitStatus(for: error) : ExitStatus(error.category).rawValue)
        } catch let error as PartialFailure {
            for failure in error.failures {
                report(failure.error, programName: programName, json: json)
            }
            exit(error.exitStatus.rawValue)
        } catch {
            let code = Root.exitCode(for: error)
            let message = Root.fullMessage(for: error)
            if code == .success {
                print(message)
                exit(0)
            }
            if wantsJSON && !guest {
                report(.invalidArgument(Root.message(for: error)), programName: programName, json: true)
            } else {
                writeStandardError(message + "\n")
            }
            if guest { exit(GuestCommand.ownFailure) }
            // Usage mistakes are invalid input, like a bad machine name.
            exit(code == .validationFailure ? ExitStatus.invalidInput.rawValue : code.rawValue)
        }
    }

    static func report(_ error: NspawnError, programName: String, json: Bool) {
        if json {
            let body = ErrorBody(error)
            // One compact object per line, so several failures stay parseable as JSON lines.
            writeStandardError(Renderer.json(body, compact: true) + "\n")
        } else {
            writeStandardError("\(programName): \(error.description)\n")
        }
    }
}

package func writeStandardError(_ text: String) {
    // Nothing is left to tell when stderr itself fails.
    try? FileDescriptor.standardError.writeFully(Array(text.utf8))
}

package func printOut(_ text: String) {
    if let sink = PrintedOutput.sink { sink(text) } else { print(text) }
}

/// Tests read what a command prints here instead of from the process's stdout, which tests
/// running beside them share.
package enum PrintedOutput {
    @TaskLocal package static var sink: (@Sendable (String) -> Void)?
}
