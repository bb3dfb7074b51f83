import ArgumentParser
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

struct Logs: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Show a machine's journal, merged with the host's entries about its unit.",
        discussion: """
            A machine that boots systemd shows its own journal (read from its root, or from the \
            host's /var/log/journal/MACHINE-ID when linked); a plain payload shows its output as \
            the host's journal holds it for systemd-nspawn@NAME.service. Both come merged in time \
            order with what systemd said about the unit (start, stop, failures). Times take \
            journalctl's forms: '2026-12-06 10:00', '@1765000000', 'today', '-1h'. With --json, \
            one object per line: time, realtime_usec, source (machine or host), priority, unit, \
            identifier, pid, message.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Flag(name: .shortAndLong, help: "Keep printing new entries until interrupted (the last 10 first, unless -n says).")
    var follow = false

    @Option(name: [.customShort("n"), .long], help: ArgumentHelp("Show the last N entries.", valueName: "N"))
    var lines: Int?

    @Option(name: [.customShort("S"), .long], help: ArgumentHelp("Entries from this time on.", valueName: "TIME"))
    var since: String?

    @Option(name: [.customShort("U"), .long], help: ArgumentHelp("Entries up to this time.", valueName: "TIME"))
    var until: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Only this priority and more urgent ones: emerg, alert, crit, err, warning, notice, info, debug or 0-7.",
                                                    valueName: "PRIORITY"))
    var priority: String?

    @Flag(name: .shortAndLong, help: "Only the machine's current run (or its last one since the host booted).")
    var boot = false

    /// journalctl's refusals: the daemon reads these windows as empty, or as a follow that ends.
    func validate() throws {
        if follow && until != nil { throw ValidationError("--until ends the window, so it cannot be followed; give -f or --until, not both") }
        if let since, let until, let from = try? LogTime.parse(since, now: LogTime.now()), let to = try? LogTime.parse(until, now: LogTime.now()), from > to {
            throw ValidationError("--since (\(since)) is after --until (\(until))")
        }
    }

    func run() async throws {
        let request = LogRequest(lines: lines, since: since, until: until, priority: priority, boot: boot ? true : nil, follow: follow ? true : nil)
        let json = output.json
        let machine = name.rawValue
        for try await batch in try await output.service.logs(name, request) where !batch.isEmpty {
            let lines = batch.map { json ? Renderer.json($0, compact: true) : Renderer.logLine($0, machine: machine) }
            printOut(lines.joined(separator: "\n"))
            fflush(nil)
        }
    }
}
