import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import NspawnKit

struct Exec: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a running machine.",
        discussion: """
            stdin, stdout and stderr stay separate (merged on the terminal with -t); without -i \
            the command reads /dev/null. nspawnctl exits with the command's status, 128+N if a \
            signal N killed it. Its own failures use codes a command rarely does: 125 nspawnctl \
            failed (bad usage, no such machine, ...), 126 the command cannot be executed, 127 no \
            such command, and 5 when the machine is not running.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "The machine.", transform: parseMachineName)
    var name: MachineName

    @Option(name: .shortAndLong, help: "Run as this guest user: a name or a numeric uid (default root).")
    var user: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Set an environment variable; may be repeated.", valueName: "NAME=VALUE"))
    var env: [String] = []

    @Option(name: .shortAndLong, help: "Working directory inside the machine (default the user's home, or /).")
    var workdir: String?

    @Flag(name: .shortAndLong, help: "Pass stdin to the command.")
    var interactive = false

    @Flag(name: .shortAndLong, help: "Run the command on a pseudo-terminal.")
    var tty = false

    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command and its arguments, after --.", valueName: "command"))
    var command: [String] = []

    var spec: ExecSpec {
        ExecSpec(command: command, user: user, environment: env, workingDirectory: workdir, interactive: interactive,
                 tty: tty, terminal: tty ? GuestCommand.callerTerminal : nil, size: tty ? GuestAttach.terminalSize() : nil)
    }

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the command to run after '--'") }
        do { try spec.validate() } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        try await GuestCommand.run(name, spec, output: output)
    }
}

/// What `exec` and `shell` share: where the command runs, and the exit codes that keep
/// nspawnctl's own failures apart from the command's status.
enum GuestCommand {
    static let verbs: Set<String> = ["exec", "shell"]

    /// nspawnctl itself failed: bad usage, no such machine, no permission...
    static let ownFailure: Int32 = 125

    /// Whether these arguments (after argv[0]) run `exec` or `shell`.
    static func isGuestCommand(_ arguments: [String]) -> Bool {
        arguments.first.map(verbs.contains) ?? false
    }

    /// 5 for a machine that is not running, as everywhere in nspawnctl; 125 for the rest.
    /// Through nspawnd "not running" arrives as a conflict, the only one exec answers.
    static func exitStatus(for error: NspawnError) -> Int32 {
        switch error {
        case .notRunning, .remote(.conflict, _, _): ExitStatus.conflict.rawValue
        default: ownFailure
        }
    }

    static var callerTerminal: String? {
        getenv("TERM").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Starts the command, relays its streams and ends with its status (`GuestExit`).
    static func run(_ name: MachineName, _ spec: ExecSpec, output: OutputOptions) async throws {
        // The library here, or nspawnd's exec stream (--api, --host, not root): the same process either way.
        let process = try await output.service.exec(name, spec)
        let outcome = try await GuestAttach(process: process, interactive: spec.interactive, tty: spec.tty).run()
        throw GuestExit(status: outcome.shellStatus)
    }
}

/// The command in the machine has ended: nspawnctl exits with its status.
struct GuestExit: Error {
    var status: Int32
}
