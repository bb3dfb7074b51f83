import ArgumentParser
import NspawnAPI
import NspawnKit

struct SnapshotScheduleCommand: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "snapshot-schedule",
        abstract: "Take a machine's snapshots on a schedule, keeping only the newest.",
        discussion: """
            A host timer (nspawnctl-snapshots-NAME.timer, enabled in timers.target) takes the \
            snapshot auto-TIME every SPAN while the machine runs, with no nspawnctl or nspawnd \
            running, then removes the schedule's snapshots beyond what --keep, --keep-daily and \
            --keep-weekly keep (the newest N; the newest of each of the last N days or weeks, in \
            the host's time zone), and any snapshot whose --expire time has passed. Snapshots \
            taken by hand are only removed when they expire. Options replace the whole schedule; \
            with none, the schedule is shown.
            """)

    @OptionGroup var output: OutputOptions

    @Option(help: ArgumentHelp("Take a snapshot this often, such as 1h.", valueName: "SPAN"))
    var every: String?

    @Option(help: ArgumentHelp("Keep the newest N scheduled snapshots.", valueName: "N"))
    var keep: Int?

    @Option(help: ArgumentHelp("Keep the newest scheduled snapshot of each of the last N days.", valueName: "N"))
    var keepDaily: Int?

    @Option(help: ArgumentHelp("Keep the newest scheduled snapshot of each of the last N weeks.", valueName: "N"))
    var keepWeekly: Int?

    @Flag(help: "Remove the schedule; its snapshots stay.")
    var none = false

    @Flag(help: .hidden)
    var run = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    var change: SettingsChange {
        SettingsChange(snapshotEvery: every, snapshotKeep: keep, snapshotKeepDaily: keepDaily, snapshotKeepWeekly: keepWeekly,
                       noSnapshotSchedule: none ? true : nil)
    }

    func validate() throws {
        if run && !change.isEmpty { throw ValidationError("--run takes no other option") }
    }

    func run() async throws {
        if run {
            try await runOnce()
            return
        }
        let change = change
        try change.validate()
        let service = try output.service
        let config = change.isEmpty ? try await service.config(name) : try await service.configure(name, change)
        if output.json {
            printOut(Renderer.json(SnapshotScheduleView(name: config.name, schedule: config.snapshotSchedule)))
        } else {
            printOut(config.snapshotSchedule.map { "machine '\(name)': snapshots \($0.text)" } ?? "machine '\(name)' has no snapshot schedule")
        }
    }

    /// What the timer runs: one scheduled snapshot and the pruning after it.
    private func runOnce() async throws {
        let result = try await MachineManager().runSnapshotSchedule(name)
        if output.json {
            printOut(Renderer.json(result))
            return
        }
        if let taken = result.taken { printOut("took snapshot '\(taken.name)' of '\(name)' by \(taken.method.rawValue)") }
        if let skipped = result.skipped { printOut("no snapshot taken: \(skipped)") }
        if !result.removed.isEmpty { printOut("removed snapshots of '\(name)': \(result.removed.joined(separator: ", "))") }
    }
}

/// `snapshot-schedule --json`: the machine and its schedule (null: none).
struct SnapshotScheduleView: Codable {
    var name: String
    var schedule: SnapshotSchedule?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(schedule, forKey: .schedule)
    }
}
