import ArgumentParser
import NspawnAPI
import NspawnKit
import SystemPackage
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

    @Flag(help: "Send only the files that changed since the last copy there (whole if there is none); the copy there must be stopped.")
    var refresh = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "ssh://[USER@]HOST[:PORT][/NAME]", transform: parseCopyTarget)
    var target: CopyTarget

    func run() async throws {
        let request = CopyMachineRequest(target: target, snapshots: snapshots, force: force, refresh: refresh, interactive: isatty(0) == 1)
        try await copyMachine(name, request, output: output)
    }
}

/// The target's side of `copy-machine --refresh`, run there over ssh: the delta comes on stdin,
/// answers go to stdout. It becomes the images helper, which does the work as root.
struct ReceiveMachine: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "receive-machine", abstract: "Receive a copy-machine --refresh (run by it over ssh).",
                                                    shouldDisplay: false)

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() throws {
        let helper = ImagesHelperProgram.path
        let arguments = [helper, "refresh-receive", "--json", "--", name.rawValue]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        execv(helper, &argv)
        throw NspawnError.system("cannot run '\(helper)'", Errno(rawValue: errno))
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
    printOut(output.json ? Renderer.json(result) : Renderer.copyMachineText(result, refreshAsked: request.refresh))
}

extension Renderer {
    static func copyMachineText(_ r: CopyMachineResult, refreshAsked: Bool = false) -> String {
        let verb = r.moved ? "moved" : "copied"
        let how = r.fromSnapshot ? " from a snapshot taken first (it was running)" : ""
        let target = r.targetName == r.name ? r.host : "\(r.host) as '\(r.targetName)'"
        if let refresh = r.refresh {
            return """
                refreshed '\(r.name)' on \(target)\(how) by file delta: \(refresh.sent) of \(refresh.sent + refresh.kept) files sent \
                (\(humanSize(UInt64(refresh.sentBytes))) of data, \(humanSize(r.bytesSent)) in all), \(refresh.kept) kept, in \(secondsText(r.seconds))
                  checked there: every entry's owner, mode, size, time, link and xattrs, and the sha256 of each file sent
                """
        }
        let whole = refreshAsked ? " (no copy there yet, so all of it)" : ""
        var lines = ["\(verb) '\(r.name)' to \(target)\(how)\(whole): \(humanSize(r.bytesSent)) sent in \(secondsText(r.seconds))"]
        lines.append("  checked there: \(r.verifiedOnTarget.joined(separator: ", "))\(r.replacedOnTarget ? "; replaced the machine there" : "")")
        if !r.snapshots.isEmpty { lines.append("  snapshots: \(r.snapshots.joined(separator: ", "))") }
        for part in r.parts { lines.append("  \(part.name): \(part.files) files, \(humanSize(part.bytes)), sha256 \(part.sha256)") }
        if r.moved { lines.append(r.startedOnTarget ? "  running there; removed here" : "  removed here") }
        return lines.joined(separator: "\n")
    }
}
