import ArgumentParser
import NspawnKit

/// Run by systemd, not by people: nspawnctl's drop-in on systemd-nspawn@.service
/// (units/nspawnctl-hooks.conf) runs it around every start and stop.
struct Hook: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook",
        abstract: "Run a machine's start or stop hooks from /etc/nspawnctl/hooks (systemd-nspawn@.service does).",
        discussion: """
            Exits 1 when a hook fails, naming it, with its status and its last lines; a failed \
            pre-start hook keeps the machine from starting. Post hooks' failures are warnings.
            """,
        shouldDisplay: false)

    @Argument(help: "pre-start, post-start, pre-stop or post-stop.", transform: parseUnitHookEvent)
    var event: HookEvent

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() throws {
        for failure in try Hooks().runForUnit(event, machine: name) {
            writeStandardError("nspawnctl: warning: machine '\(name)': \(failure.description)\n")
        }
    }
}

func parseUnitHookEvent(_ text: String) throws -> HookEvent {
    let events: [HookEvent] = [.preStart, .postStart, .preStop, .postStop]
    guard let event = events.first(where: { $0.rawValue == text }) else {
        throw NspawnError.invalidArgument("invalid hook event '\(text.escapedForMessage)': expected \(events.map(\.rawValue).joined(separator: ", "))")
    }
    return event
}
