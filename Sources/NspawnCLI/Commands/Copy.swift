import ArgumentParser
import NspawnAPI
import NspawnKit

/// The options `copy-to` and `copy-from` share.
struct CopyArguments: ParsableArguments {
    @Flag(help: "Replace an existing destination atomically (a directory is swapped in, then the old one removed).")
    var replace = false

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "Path to copy.")
    var source: String

    @Argument(help: "Full path of the copy (default: the same path as SOURCE).")
    var destination: String?

    func validate() throws {
        if source.isEmpty { throw ValidationError("SOURCE must not be empty") }
        if destination?.isEmpty == true { throw ValidationError("DESTINATION must not be empty") }
    }
}

let copyDiscussion = """
    Works on running and stopped machines alike, on the machine's root file system on disk: \
    what the guest mounted at run time (a tmpfs /tmp or /run, bind mounts) is not reached. \
    Paths in the machine resolve inside its root, so a guest symlink cannot lead outside it. \
    Modes, owners (as the guest sees them, also with user namespacing), times, extended \
    attributes, ACLs, symlinks, hardlinks and device nodes are kept. The copy appears whole or \
    not at all. Runs on this host only, as root.
    """

/// Copying moves file contents between this host and the machine's; through nspawnd (or to
/// another host) that would need a stream of its own, so it is refused.
func copyRefusedThroughDaemon(_ verb: String) -> NspawnError {
    .invalidArgument("\(verb) works on the local host only: it copies files between this host and the machine's root, so run it as root without --api or --host")
}

func report(_ result: CopyResult, output: OutputOptions) {
    if output.json {
        printOut(Renderer.json(result))
        return
    }
    let method = result.method.map { " by \($0)" } ?? ""
    let shift = result.idShift.map { ", owners shifted by \($0)" } ?? ""
    writeStandardError("copied \(result.source) to \(result.destination)\(result.replaced ? " (replaced)" : ""): "
        + "\(result.files) files, \(result.directories) directories, \(result.symlinks) symlinks, \(result.hardlinks) hardlinks, "
        + "\(Renderer.humanSize(result.bytes))\(method)\(shift)\n")
}

struct CopyTo: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "copy-to", abstract: "Copy a file or directory from this host into a machine.", discussion: copyDiscussion)

    @OptionGroup var output: OutputOptions
    @OptionGroup var arguments: CopyArguments

    func run() async throws {
        guard case .direct = try output.route else { throw copyRefusedThroughDaemon("copy-to") }
        report(try await MachineManager().copyTo(arguments.name, source: arguments.source, destination: arguments.destination,
                                                 replace: arguments.replace), output: output)
    }
}

struct CopyFrom: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "copy-from", abstract: "Copy a file or directory from a machine to this host.", discussion: copyDiscussion)

    @OptionGroup var output: OutputOptions
    @OptionGroup var arguments: CopyArguments

    func run() async throws {
        guard case .direct = try output.route else { throw copyRefusedThroughDaemon("copy-from") }
        report(try await MachineManager().copyFrom(arguments.name, source: arguments.source, destination: arguments.destination,
                                                   replace: arguments.replace), output: output)
    }
}
