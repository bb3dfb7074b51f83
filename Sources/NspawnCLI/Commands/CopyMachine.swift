import ArgumentParser
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

private let copyMachineDiscussion = """
    TARGET is ssh://[USER@]HOST[:PORT][/NAME]: the machine is streamed as an export archive \
    into 'nspawnctl import NAME -' on HOST, over ssh with your own configuration (keys, \
    known_hosts, ~/.ssh/config), as --host uses it, so nspawnctl must be installed there and \
    USER must be root there. HOST checks every part's digest before it installs anything, \
    and installs all of it or nothing. A running machine is copied from a snapshot taken first.
    """

struct CopyMachine: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "copy-machine", abstract: "Copy a whole machine to another host over ssh.",
        discussion: copyMachineDiscussion + " The machine here is left as it is.")

    @OptionGroup var output: OutputOptions

    @Flag(help: "Copy the machine's snapshots too.")
    var snapshots = false

    @Flag(help: "Replace a machine of that name on the target.")
    var force = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "ssh://[USER@]HOST[:PORT][/NAME]", transform: parseCopyTarget)
    var target: CopyTarget

    func run() async throws {
        let request = CopyMachineRequest(target: target, snapshots: snapshots, force: force, interactive: isatty(0) == 1)
        try await copyMachine(name, request, output: output)
    }
}

struct MoveMachine: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "move-machine", abstract: "Move a whole machine, with its snapshots, to another host over ssh.",
        discussion: copyMachineDiscussion + """
             A running machine is stopped first and started on HOST. It is removed here only \
            once HOST has it (and runs it); a move that fails or is killed leaves it here, \
            whole, and a failed one starts it again if it ran.
            """)

    @OptionGroup var output: OutputOptions

    @Flag(help: "Replace a machine of that name on the target.")
    var force = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "ssh://[USER@]HOST[:PORT][/NAME]", transform: parseCopyTarget)
    var target: CopyTarget

    func run() async throws {
        let request = CopyMachineRequest(target: target, force: force, move: true, interactive: isatty(0) == 1)
        try await copyMachine(name, request, output: output)
    }
}

func parseCopyTarget(_ text: String) throws -> CopyTarget {
    do { return try CopyTarget(parsing: text) } catch { throw ValidationError(error.description) }
}

private func copyMachine(_ name: MachineName, _ request: CopyMachineRequest, output: OutputOptions) async throws {
    // Progress only for a person watching: scripts read the result.
    let showsProgress = !output.json && isatty(2) == 1
    let result = try await output.service.copyMachine(name, request) { bytes in
        if showsProgress { writeStandardError("\r\(request.move ? "moving" : "copying") '\(name.rawValue)': \(humanSize(bytes)) sent\u{1B}[K") }
    }
    if showsProgress { writeStandardError("\n") }
    printOut(output.json ? Renderer.json(result) : Renderer.copyMachineText(result))
}

extension Renderer {
    static func copyMachineText(_ r: CopyMachineResult) -> String {
        let verb = r.moved ? "moved" : "copied"
        let how = r.fromSnapshot ? " from a snapshot taken first (it was running)" : ""
        let target = r.targetName == r.name ? r.host : "\(r.host) as '\(r.targetName)'"
        var lines = ["\(verb) '\(r.name)' to \(target)\(how): \(humanSize(r.bytesSent)) sent in \(secondsText(r.seconds))"]
        lines.append("  checked there: \(r.verifiedOnTarget.joined(separator: ", "))\(r.replacedOnTarget ? "; replaced the machine there" : "")")
        if !r.snapshots.isEmpty { lines.append("  snapshots: \(r.snapshots.joined(separator: ", "))") }
        for part in r.parts { lines.append("  \(part.name): \(part.files) files, \(humanSize(part.bytes)), sha256 \(part.sha256)") }
        if r.moved { lines.append(r.startedOnTarget ? "  running there; removed here" : "  removed here") }
        return lines.joined(separator: "\n")
    }
}
