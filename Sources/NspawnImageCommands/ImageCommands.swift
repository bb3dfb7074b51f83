import ArgumentParser
import NspawnCLI
import NspawnImages
import NspawnKit
import NspawnProvisioning
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `nspawnctl-images`: the imports and manifests that need libcurl, libarchive or the YAML
/// parser, run as a child of nspawnctl (its service's direct path) and nspawnd. Its command
/// lines are built by `ImportJob` and `ManifestJob`; it reports typed JSON: events and its
/// error on stderr (`HelperEvent`, `ErrorBody`), the result on stdout.
public enum NspawnctlImages {
    struct Root: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: ImagesHelperProgram.executableName,
            abstract: "Imports, bootstraps, plans and applies for nspawnctl and nspawnd, as their child (see 'nspawnctl import --help').",
            subcommands: [ImportImage.self, BootstrapImage.self, RemoteImages.self, PlanManifest.self, ApplyManifest.self, ExportMachine.self, RefreshSend.self, RefreshReceive.self])
    }

    public static func main(_ argv: [String] = CommandLine.arguments) async -> Never {
        ChildProcess.endWithParent()
        // A parent that is gone closes the pipes it read: the next report must fail with EPIPE,
        // not kill this process before its SIGTERM handling removes what it wrote.
        signal(SIGPIPE, SIG_IGN)
        await NspawnCommand.run(Root.self, programName: "nspawnctl", arguments: Array(argv.dropFirst())) { command in
            guard var command = command as? any HelperCommand else {
                var command = command
                return try command.run()
            }
            guard command.output.json, command.output.host == nil, !command.output.api else {
                throw NspawnError.invalidArgument("\(ImagesHelperProgram.executableName) reports in JSON on this host only: run it with --json, or use nspawnctl")
            }
            try await command.run()
        }
    }
}

protocol HelperCommand: AsyncParsableCommand, JSONCapable {}

/// Prints one JSON object on a line of stderr, as the parent reads them.
func emit(_ event: HelperEvent) {
    writeStandardError(Renderer.json(event, compact: true) + "\n")
}

/// Runs an import with signal-driven cancellation (SIGTERM from the parent, or its death)
/// and progress events, then prints the result.
func runImport(name: MachineName, source: NspawnKit.ImageSource, options: ImportOptions, importer: ImageImporter = ImageImporter()) async throws {
    let cancellation = ImportCancellation()
    let signals = CancelOnSignals(cancellation)
    defer { signals.restore() }
    let result = try await importer.importImage(name, from: source, options: options, cancellation: cancellation) {
        emit(.progress($0))
    }
    printOut(Renderer.json(result))
}

/// `export`: the archive goes to FILE, or for `-` to descriptor 3, which the parent passes (its own stdout).
struct ExportMachine: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write a machine's archive.")

    @OptionGroup var output: OutputOptions
    @Flag var snapshots = false
    @Argument(transform: parseMachineName) var name: MachineName
    @Argument var file: String

    func run() async throws {
        let cancellation = ImportCancellation()
        let signals = CancelOnSignals(cancellation)
        defer { signals.restore() }
        let target = file == "-" ? ArchiveOutput(descriptor: FileDescriptor(rawValue: 3), label: "standard output")
                                 : try ArchiveOutput(path: file)
        let name = name
        let withSnapshots = snapshots
        let result = try await OSThread.run {
            let result = try MachineArchive.export(name, to: target.descriptor, label: target.label, compression: ArchiveCompression(forName: file),
                                                   withSnapshots: withSnapshots, isCancelled: { cancellation.isCancelled })
            try target.commit()
            return result
        }
        printOut(Renderer.json(result))
    }
}

/// `copy-machine --refresh` here: the delta of NAME's root to the receiver at the other end of
/// descriptor 3 (ssh's stdin and stdout), which the parent passes.
struct RefreshSend: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "refresh-send", abstract: "Send a machine's changed files.")

    @OptionGroup var output: OutputOptions
    @Option var label: String
    @Argument(transform: parseMachineName) var name: MachineName

    func run() async throws {
        let (name, label) = (name, label)
        let cancellation = ImportCancellation()
        let signals = CancelOnSignals(cancellation)
        defer { signals.restore() }
        let stream = FileDescriptor(rawValue: 3)
        // A read waiting on the target ends at once; the error path then removes the snapshot.
        cancellation.onCancel { _ = try? stream.shutdownSocket(.both) }
        let sent = try await OSThread.run {
            try RefreshSender.run(name, stream: stream, label: label, isCancelled: { cancellation.isCancelled })
        }
        printOut(Renderer.json(sent))
    }
}

/// The other end: `nspawnctl receive-machine NAME` on the target runs this with the stream as
/// its stdin and stdout. Its result and any error go into the stream for the sender.
struct RefreshReceive: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "refresh-receive", abstract: "Receive a refresh of a machine.")

    @OptionGroup var output: OutputOptions
    @Argument(transform: parseMachineName) var name: MachineName

    func run() async throws {
        let name = name
        let cancellation = ImportCancellation()
        let signals = CancelOnSignals(cancellation)
        defer { signals.restore() }
        _ = try await OSThread.run { () throws(NspawnError) in
            let receiver = RefreshReceiver(store: .system, machined: Machined(bus: try connectSystemBus()),
                                           isCancelled: { cancellation.isCancelled })
            return try receiver.run(name, input: .standardInput, output: .standardOutput)
        }
    }
}

struct ImportImage: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "import", abstract: "Import a tarball (a file, an http(s) URL, or '-').")

    @OptionGroup var output: OutputOptions
    @OptionGroup var verify: VerifyOptions
    @Flag var force = false
    @Option var remote: String?
    @Argument(transform: parseMachineName) var name: MachineName
    @Argument var source: String

    func run() async throws {
        var options = ImportOptions(checksum: verify.checksum, signature: verify.signature, keyring: verify.keyring, force: force)
        options.remote = remote
        try await runImport(name: name, source: NspawnKit.ImageSource(source), options: options)
    }
}

struct RemoteImages: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "remote", abstract: "List an image server's images.")

    @OptionGroup var output: OutputOptions
    @Option var remote: String?
    @Argument var filter: String?

    func run() async throws {
        printOut(Renderer.json(try ImageServerListing.rows(remote: remote, filter: filter)))
    }
}

struct BootstrapImage: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "bootstrap", abstract: "Create an image from a recipe.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var verify: VerifyOptions
    @Option var mirror: String?
    @Option var tarball: String?
    @Flag var noVerify = false
    @Flag var force = false
    @Argument var recipe: String
    @Argument(transform: parseMachineName) var name: MachineName?

    func run() async throws {
        let recipe = try Recipe.load(recipe)
        let importer = ImageImporter()
        let name = try name ?? importer.store.nextFreeName()
        let request = Bootstrapper.Request(
            recipe: recipe, name: name, mirror: mirror, tarball: tarball, signature: verify.signature,
            keyring: verify.keyring, checksum: verify.checksum, verify: !noVerify, force: force)
        let (source, options) = try Bootstrapper(importer: importer).plan(request)
        try await runImport(name: name, source: source, options: options, importer: importer)
    }
}

/// The manifest's text is this process's stdin; `--manifest-name` is the name its errors
/// give it and where its relative paths start.
struct ManifestInput: ParsableArguments {
    @Option var manifestName: String
    @Flag var prune = false

    func parse() throws -> Manifest {
        let bytes: [UInt8]
        do throws(Errno) {
            bytes = try FileDescriptor.standardInput.readAll(limit: ManifestLimits.maximumSize)
        } catch {
            throw NspawnError.system("cannot read the manifest '\(manifestName)' from nspawnctl", error)
        }
        return try ManifestParser(file: manifestName).parse(String(decoding: bytes, as: UTF8.self))
    }
}

struct PlanManifest: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Plan a manifest read from stdin.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var manifest: ManifestInput
    @Option(transform: parseMachineName) var explain: MachineName?

    func run() async throws {
        let parsed = try manifest.parse()
        if let explain {
            printOut(Renderer.json(try Explanation.lines(parsed, machine: explain)))
        } else {
            printOut(Renderer.json(try await Provisioner(images: ImagesHelper().manifestImages).plan(parsed, prune: manifest.prune)))
        }
    }
}

struct ApplyManifest: HelperCommand {
    static let configuration = CommandConfiguration(commandName: "apply", abstract: "Apply a manifest read from stdin.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var manifest: ManifestInput
    @Flag var keepGoing = false

    func run() async throws {
        let parsed = try manifest.parse()
        let options = ApplyOptions(prune: manifest.prune, keepGoing: keepGoing)
        let report = try await Provisioner(images: ImagesHelper().manifestImages).apply(parsed, options: options) { emit(.apply($0)) }
        printOut(Renderer.json(report))
    }
}
