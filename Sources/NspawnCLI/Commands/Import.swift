import ArgumentParser
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import NspawnAPI
import NspawnKit

package struct ProgressOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "No progress bar.")
    package var quiet = false

    package init() {}
}

package struct VerifyOptions: ParsableArguments {
    @Option(help: "Expected digest of the tarball, checked while streaming (sha256:HEX).")
    package var checksum: String?

    @Option(help: "Detached OpenPGP signature of the tarball (file or URL), checked with gpgv.")
    package var signature: String?

    @Option(help: "Keyring (binary OpenPGP keys) to check --signature against.")
    package var keyring: String?

    package init() {}
}

package struct Import: AsyncParsableCommand, JSONCapable {
    package static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a root file system tarball as an image.",
        discussion: """
            SOURCE is a file, an http(s) URL (streamed) or '-' for stdin. Compression (zstd, gzip, xz, \
            bzip2 or none) is detected from the content; one top directory wrapping the root is stripped. \
            An archive 'export' wrote restores the whole machine (settings, flavor, exposure, \
            enablement, snapshots) once every part matches its digest. Nothing is visible until \
            the image is complete.
            """)

    @OptionGroup package var output: OutputOptions
    @OptionGroup package var progress: ProgressOptions
    @OptionGroup package var verify: VerifyOptions

    @Flag(name: .shortAndLong, help: "Replace an existing image atomically (never one of a running machine).")
    package var force = false

    @Option(help: ArgumentHelp("The image server an images: SOURCE comes from (default: /etc/nspawnctl/image-server.conf, else images.linuxcontainers.org).", valueName: "URL"))
    package var remote: String?

    @Argument(help: "Name of the new image.", transform: parseMachineName)
    package var name: MachineName

    @Argument(help: "Tarball: a path, an http(s) URL, or '-' for stdin; or an OCI image: docker://[REGISTRY/]REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE (FILE may be '-'); or an image server's images:DISTRIBUTION/RELEASE[/VARIANT].")
    package var source: String

    package init() {}

    package func validate() throws {
        if source.isEmpty { throw ValidationError("SOURCE must not be empty") }
        let parsed = ImageSource(source)
        switch parsed {
        case .oci(let oci):
            do throws(NspawnError) { _ = try oci.registryReference() } catch { throw ValidationError(error.description) }
        case .stream(let path):
            do throws(NspawnError) { _ = try StreamReference(parsing: path) } catch { throw ValidationError(error.description) }
            if verify.checksum != nil || verify.signature != nil {
                throw ValidationError("--checksum and --signature do not apply to images: sources: the tarball is checked against the sha256 the image server's catalog gives")
            }
        default:
            break
        }
        if remote != nil, parsed != .stream(String(source.dropFirst(StreamReference.prefix.count))) {
            throw ValidationError("--remote names the image server of an images: SOURCE")
        }
    }

    package func run() async throws {
        let job: ImportJob = if case .url = ImageSource(source) {
            .url(source, checksum: verify.checksum, signature: verify.signature, keyring: verify.keyring, force: force)
        } else if case .stream = ImageSource(source) {
            .stream(source, remote: remote, force: force)
        } else {
            .file(source, checksum: verify.checksum, signature: verify.signature, keyring: verify.keyring, force: force)
        }
        try await runImport(name, job, output: output, quiet: progress.quiet)
    }
}

/// An import wherever the service runs it: the same progress, result and exit codes, and
/// SIGINT, SIGTERM or SIGHUP cancel it (what it wrote is removed).
func runImport(_ name: MachineName?, _ job: ImportJob, output: OutputOptions, quiet: Bool) async throws {
    let service = try output.service
    let cancellation = ImportCancellation()
    let signals = CancelOnSignals(cancellation)
    defer { signals.restore() }
    let display = ProgressDisplay(json: output.json, quiet: quiet)
    let result = try await service.importImage(name, job, cancellation: cancellation) { display.show($0) }
    display.finish()
    report(result, output: output, quiet: quiet)
}

package func report(_ result: ImportResult, output: OutputOptions, quiet: Bool) {
    if output.json {
        printOut(Renderer.json(result))
    } else if !quiet, result.unchanged == true {
        writeStandardError("image '\(result.name)' is already \(result.source) (sha256:\(result.sha256)); nothing changed\n")
    } else if !quiet, let image = result.image {
        let digest = image.manifestDigest.map { ", \($0)" } ?? ""
        var lines = ["imported '\(result.name)' into \(result.path): \(image.platform)\(digest), \(image.layers) layers, "
                     + "\(result.entries) entries from \(Renderer.humanSize(UInt64(result.sourceBytes))), every digest checked"]
        lines.append(image.settingsWritten ? "settings from its config: /etc/systemd/nspawn/\(result.name).nspawn"
                                           : "kept the existing /etc/systemd/nspawn/\(result.name).nspawn; its config was not applied")
        lines += image.unmapped.map { "not applied: \($0)" }
        writeStandardError(lines.joined(separator: "\n") + "\n")
    } else if !quiet {
        if let stream = result.stream {
            writeStandardError("\(result.source) is \(stream.product) version \(stream.version): \(stream.url)\n")
        }
        let stripped = result.strippedDirectory.map { ", stripped '\($0)/'" } ?? ""
        let checks = result.verified.isEmpty ? "not verified" : "verified: " + result.verified.joined(separator: ", ")
        writeStandardError("imported '\(result.name)' into \(result.path): \(result.entries) entries from \(Renderer.humanSize(UInt64(result.sourceBytes)))"
            + " (\(result.compression.isEmpty ? "uncompressed" : result.compression.joined(separator: "+")))\(stripped), \(checks)\n")
    }
    if !quiet, let machine = result.machine {
        writeStandardError("restored machine '\(machine.archivedName)' exported from \(machine.sourceHost.isEmpty ? "?" : machine.sourceHost)"
            + " at \(Renderer.timestamp(machine.exported)): \(machine.hostState.isEmpty ? "no host-side state" : machine.hostState.joined(separator: ", "))"
            + (machine.snapshots.isEmpty ? "" : "; snapshots \(machine.snapshots.joined(separator: ", "))") + "\n")
    }
}

/// SIGINT, SIGTERM and SIGHUP cancel the import, which then cleans up and fails with exit 130.
package final class CancelOnSignals: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    package init(_ cancellation: ImportCancellation) {
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { cancellation.cancel() }
            source.resume()
            sources.append(source)
        }
    }

    package func restore() {
        for source in sources { source.cancel() }
        for number in [SIGINT, SIGTERM, SIGHUP] { signal(number, SIG_DFL) }
    }
}

/// A progress bar on a terminal's stderr, JSON lines with --json, nothing otherwise.
package final class ProgressDisplay: @unchecked Sendable {
    enum Mode { case bar, jsonLines, silent }
    let mode: Mode
    private var drewBar = false

    package init(json: Bool, quiet: Bool) {
        if quiet { mode = .silent } else if json { mode = .jsonLines } else if isatty(2) == 1 { mode = .bar } else { mode = .silent }
    }

    struct Event: Encodable {
        var event = "progress"
        var progress: ImportProgress
    }

    package func show(_ progress: ImportProgress) {
        switch mode {
        case .silent: return
        case .jsonLines: writeStandardError(Renderer.json(Event(progress: progress), compact: true) + "\n")
        case .bar:
            drewBar = true
            writeStandardError("\r\u{1B}[K" + Self.bar(progress))
        }
    }

    package func finish() {
        if drewBar { writeStandardError("\r\u{1B}[K") }
    }

    static func bar(_ p: ImportProgress) -> String {
        let done = Renderer.humanSize(UInt64(max(0, p.bytes)))
        let rate = Renderer.humanSize(UInt64(max(0, p.bytesPerSecond))) + "/s"
        var line = "\(p.phase.rawValue.rightPadded(to: 10)) "
        if let layer = p.layer, let layers = p.layers { line += "layer \(layer)/\(layers) " }
        if let total = p.totalBytes, total > 0 {
            let fraction = min(1, Double(p.bytes) / Double(total))
            let filled = Int(fraction * 30)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled) + "] "
            line += "\(Int(fraction * 100))% \(done)/\(Renderer.humanSize(UInt64(total)))"
        } else {
            line += done
        }
        line += " \(rate) \(p.entries) files"
        if let eta = p.etaSeconds, p.phase == .download || p.phase == .extract { line += " ETA \(Int(eta.rounded()))s" }
        return line
    }
}

package struct Bootstrap: AsyncParsableCommand, JSONCapable {
    package static let configuration = CommandConfiguration(
        commandName: "bootstrap",
        abstract: "Create an image from a distribution recipe (images/*.recipe): download, verify, set up.",
        discussion: """
            Recipes verify by default; --no-verify must be said explicitly. With no NAME, the next free \
            childNN is used. Recipes are read from \(Recipe.searchDirectories.joined(separator: ", ")).
            """)

    @OptionGroup package var output: OutputOptions
    @OptionGroup package var progress: ProgressOptions
    @OptionGroup package var verify: VerifyOptions

    @Option(help: "Mirror URL replacing the recipe's default.")
    package var mirror: String?

    @Option(help: "A local tarball in place of the download (offline use).")
    package var tarball: String?

    @Flag(help: "Skip the recipe's signature or checksum verification.")
    package var noVerify = false

    @Flag(name: .shortAndLong, help: "Replace an existing image atomically (never one of a running machine).")
    package var force = false

    @Argument(help: "Recipe name (archlinux, alpine, ubuntu, or any in the recipe directories) or path.")
    package var recipe: String

    @Argument(help: "Name of the new image (default: the next free childNN).", transform: parseMachineName)
    package var name: MachineName?

    package init() {}

    package func validate() throws {
        if noVerify && (verify.signature != nil || verify.checksum != nil) {
            throw ValidationError("--no-verify contradicts --signature and --checksum")
        }
    }

    package func run() async throws {
        let job = ImportJob.recipe(recipe, mirror: mirror, tarball: tarball, checksum: verify.checksum, signature: verify.signature,
                                   keyring: verify.keyring, verify: !noVerify, force: force)
        try await runImport(name, job, output: output, quiet: progress.quiet)
    }
}
