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

    var request: CopyRequest { CopyRequest(source: source, destination: destination, replace: replace) }
}

let copyDiscussion = """
    Works on running and stopped machines alike, on the machine's root file system on disk: \
    what the guest mounted at run time (a tmpfs /tmp or /run, bind mounts) is not reached. \
    Paths in the machine resolve inside its root, so a guest symlink cannot lead outside it. \
    Modes, owners (as the guest sees them, also with user namespacing), times, extended \
    attributes, ACLs, symlinks, hardlinks and device nodes are kept. The copy appears whole or \
    not at all. Runs on this host only, as root.
    """

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
        report(try await output.service.copyTo(arguments.name, arguments.request), output: output)
    }
}

struct CopyFrom: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "copy-from", abstract: "Copy a file or directory from a machine to this host.", discussion: copyDiscussion)

    @OptionGroup var output: OutputOptions
    @OptionGroup var arguments: CopyArguments

    func run() async throws {
        report(try await output.service.copyFrom(arguments.name, arguments.request), output: output)
    }
}
