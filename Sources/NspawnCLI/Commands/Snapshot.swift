import ArgumentParser
import NspawnAPI
import NspawnKit

struct Snapshot: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Take a read-only snapshot of a machine's root file system.",
        discussion: """
            A btrfs snapshot where the root is a btrfs subvolume, else a copy (with reflinks where the \
            file system has them), marked immutable; the output says which. A running machine's \
            snapshot is crash-consistent: what a power cut at that moment would have left on disk.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "Snapshot name (default: the UTC time, such as 20261201-173000).")
    var snapshot: String?

    @Option(help: ArgumentHelp("Remove the snapshot after this long, such as 7d (the machine's snapshot timer does).", valueName: "SPAN"))
    var expire: String?

    func validate() throws {
        if let snapshot { try checkSnapshotName(snapshot) }
        do { try SnapshotRequest(expire: expire).validate() } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        let result = try await output.service.snapshot(name, SnapshotRequest(name: snapshot, expire: expire))
        if output.json {
            printOut(Renderer.json(result))
        } else {
            let size = result.snapshot.size.map { ", \(Renderer.humanSize($0))" } ?? ""
            let expiry = result.snapshot.expires.map { ", expires \(Renderer.timestamp($0))" } ?? ""
            printOut("snapshot '\(result.snapshot.name)' of '\(name)' taken by \(result.method.rawValue) in \(secondsText(result.seconds))\(size)\(expiry)")
        }
    }
}

struct Snapshots: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "snapshots", abstract: "List a machine's snapshots, oldest first.",
        discussion: """
            EXPIRES is when the snapshot timer removes a snapshot, 'by schedule' for one the \
            schedule's retention removes; 'snapshot-schedule NAME' and 'status NAME' show the schedule.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() async throws {
        let snapshots = try await output.service.snapshots(name)
        printOut(output.json ? Renderer.json(snapshots) : Renderer.snapshotTable(snapshots))
    }
}

struct Restore: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Replace a stopped machine's root file system with a snapshot of it.",
        discussion: """
            Only the root file system is replaced, in one atomic swap; settings, flavor, exposure \
            and enablement stay as they are. The snapshot itself is kept.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "Snapshot name.")
    var snapshot: String

    func validate() throws { try checkSnapshotName(snapshot) }

    func run() async throws {
        let result = try await output.service.restore(name, RestoreRequest(snapshot: snapshot))
        if output.json {
            printOut(Renderer.json(result))
        } else {
            printOut("restored '\(name)' from snapshot '\(snapshot)' by \(result.method.rawValue) in \(secondsText(result.seconds))")
        }
    }
}

struct SnapshotRemove: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "snapshot-remove", abstract: "Remove a machine's snapshot.")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "Snapshot name.")
    var snapshot: String

    func validate() throws { try checkSnapshotName(snapshot) }

    func run() async throws {
        try await output.service.removeSnapshot(name, SnapshotRemoveRequest(snapshot: snapshot))
        if output.json { printOut(Renderer.json(ActionResult(name: name.rawValue, result: "snapshot '\(snapshot)' removed"))) }
    }
}

/// A bad snapshot name is a usage error (exit 2), found before any work.
func checkSnapshotName(_ name: String) throws {
    do { try SnapshotInfo.check(name) } catch { throw ValidationError(error.description) }
}

func secondsText(_ seconds: Double) -> String {
    "\((seconds * 100).rounded() / 100)s"
}

extension Renderer {
    static func snapshotTable(_ snapshots: [SnapshotInfo]) -> String {
        table(headers: ["NAME", "CREATED", "METHOD", "SIZE", "EXPIRES"], rows: snapshots.map {
            [$0.name, $0.created.map(timestamp) ?? "-", $0.method.rawValue, $0.size.map(humanSize) ?? "-",
             $0.expires.map(timestamp) ?? ($0.scheduled ? "by schedule" : "-")]
        })
    }

    /// The status line for snapshots: names with when and how each was taken.
    static func snapshotsText(_ snapshots: [SnapshotInfo]) -> String {
        snapshots.map { "\($0.name) (\($0.created.map(timestamp) ?? "?"), \($0.method.rawValue))" }.joined(separator: ", ")
    }
}
