import ArgumentParser
import NspawnKit

/// Run by systemd, not by people: a machine's health timer runs it at every interval, and the
/// machine's drop-in runs it with --reset before every start.
struct HealthCheckRun: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "health-check",
        abstract: "Run a machine's health check once and record the result (its timer does).",
        discussion: """
            Records the verdict in /run/nspawnctl/health/NAME.json and prints a line when it \
            changes. Exits 0 whatever the check found, and as any command does when it could not \
            run it (5 for a machine that is not running).
            """,
        shouldDisplay: false)

    @OptionGroup var output: OutputOptions

    @Flag(help: "Start a new run: the health is 'starting' and the start period begins now.")
    var reset = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() async throws {
        let manager = MachineManager()
        if reset {
            try manager.resetHealth(name)
            return
        }
        let result = try await manager.runHealthCheck(name)
        if output.json {
            printOut(Renderer.json(result))
            return
        }
        let health = result.health
        if let before = result.changedFrom {
            printOut("machine '\(name)' is \(health.text), was \(before.rawValue)" + (result.restarted ? "; restarted it" : ""))
        } else if health.lastExitCode != 0 {
            printOut("machine '\(name)' is \(health.status.rawValue); its check failed (\(health.lastFailure)), \(health.failingStreak) in a row")
        }
    }
}
