import ArgumentParser
import NspawnAPI
import NspawnKit

struct Export: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a whole machine into one archive: its root and what it has on the host.",
        discussion: """
            The archive (.tar.zst; .tar.gz, .tar.xz or .tar by the name) holds the root, the \
            settings file, the flavor's drop-in, restart policy, health check, snapshot schedule, \
            the host's socket unit of an exposure (its guest side is in the root), enablement, and \
            with --snapshots the snapshots, with a digest of each part; 'import NAME FILE' restores \
            it all. A running machine is exported from a snapshot taken first (crash-consistent), \
            and the output says so. FILE must not exist; it appears only once whole, mode 0600.
            """)

    @OptionGroup var output: OutputOptions

    @Flag(help: "Include the machine's snapshots.")
    var snapshots = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "The archive to write, or - for standard output.")
    var file: String

    func run() async throws {
        let result = try await output.service.export(name, ExportRequest(file: file, snapshots: snapshots ? true : nil))
        // With -, the archive is standard output: the report goes to standard error.
        let report = output.json ? Renderer.json(result) : Renderer.exportText(result)
        if file == "-" { writeStandardError(report + "\n") } else { printOut(report) }
    }
}

extension Renderer {
    static func exportText(_ r: ExportResult) -> String {
        let size = r.archiveBytes.map { ", \(humanSize($0))" } ?? ""
        let how = r.fromSnapshot ? "from a snapshot taken first (it was running)" : "stopped"
        var lines = ["exported '\(r.name)' to \(r.file) (format \(r.format), \(r.compression)\(size)) \(how) in \(secondsText(r.seconds))"]
        lines.append("  host side: \(r.hostState.isEmpty ? "nothing" : r.hostState.joined(separator: ", "))")
        if !r.snapshots.isEmpty { lines.append("  snapshots: \(r.snapshots.joined(separator: ", "))") }
        for part in r.parts { lines.append("  \(part.name): \(part.files) files, \(humanSize(part.bytes)), sha256 \(part.sha256)") }
        return lines.joined(separator: "\n")
    }
}
