import ArgumentParser
import NspawnKit

struct Shell: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "shell",
        abstract: "Open an interactive login shell in a running machine.",
        discussion: """
            The shell runs on a pseudo-terminal whose size follows this one; in a guest that boots \
            systemd it is a login session opened by systemd-machined. nspawnctl exits with the \
            shell's status; 125 when nspawnctl itself fails, 5 when the machine is not running.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "The machine.", transform: parseMachineName)
    var name: MachineName

    @Option(name: .shortAndLong, help: "Log in as this guest user: a name or a numeric uid (default root).")
    var user: String?

    var spec: ExecSpec {
        ExecSpec(command: [], user: user, interactive: true, tty: true,
                 terminal: GuestCommand.callerTerminal, size: GuestAttach.terminalSize())
    }

    func validate() throws {
        do { try spec.validate() } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        try await GuestCommand.run(name, spec, output: output)
    }
}
