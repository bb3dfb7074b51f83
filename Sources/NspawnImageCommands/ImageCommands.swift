import ArgumentParser
import NspawnAPI
import NspawnCLI
import NspawnImages
import NspawnKit
import NspawnProvisioning

/// `nspawnctl-images`: `import`, `bootstrap`, `plan` and `apply` on the direct path, which
/// nspawnctl execs (and nspawnd runs as its import child). The same commands and options as
/// nspawnctl's.
public enum NspawnctlImages {
    struct Root: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "nspawnctl",
            abstract: "Import and bootstrap images, plan and apply manifests (run by nspawnctl and nspawnd; see 'nspawnctl import --help').",
            subcommands: [Import.self, Bootstrap.self, Plan.self, Apply.self])
    }

    public static func main(_ argv: [String] = CommandLine.arguments) async -> Never {
        let (programName, arguments) = ImagesHelper.invocation(argv)
        ImagesHelper.takeName(argv)
        await NspawnCommand.run(Root.self, programName: programName, arguments: arguments) { command in
            // nspawnctl decided the route before it ran this; here the work is done, never sent on
            // (plan --explain reads the manifest here whatever the route: it changes nothing).
            let explaining = (command as? Plan)?.explain != nil
            if !explaining, let routed = command as? JSONCapable, case .daemon = try routed.output.route {
                throw NspawnError.invalidArgument("\(ImagesHelperProgram.executableName) works on this host only; nspawnctl sends --api and --host requests itself")
            }
            switch command {
            case let command as Import: try await command.runHere()
            case let command as Bootstrap: try await command.runHere()
            case let command as Plan: try await command.runHere()
            case let command as Apply: try await command.runHere()
            default:
                var command = command
                try command.run()
            }
        }
    }
}

extension Import {
    func runHere() async throws {
        let options = ImportOptions(checksum: verify.checksum, signature: verify.signature, keyring: verify.keyring,
                                    force: force)
        try await runImport(name: name, source: NspawnKit.ImageSource(source), options: options, output: output, quiet: progress.quiet)
    }
}

extension Bootstrap {
    func runHere() async throws {
        let recipe = try Recipe.load(recipe)
        let importer = ImageImporter()
        let name = try name ?? importer.store.nextFreeName()
        let request = Bootstrapper.Request(
            recipe: recipe, name: name, mirror: mirror, tarball: tarball, signature: verify.signature,
            keyring: verify.keyring, checksum: verify.checksum, verify: !noVerify, force: force)
        let (source, options) = try Bootstrapper(importer: importer).plan(request)
        try await runImport(name: name, source: source, options: options, output: output, quiet: progress.quiet,
                            importer: importer)
    }
}

extension Plan {
    func runHere() async throws {
        let (text, file) = try manifest.read()
        let parsed = try ManifestParser(file: file).parse(text)
        if let explain {
            let lines = try Explanation.lines(parsed, machine: explain)
            if output.json { printOut(Renderer.json(lines)) } else { lines.forEach { printOut("\($0.field): \($0.value)  (\($0.origin))") } }
            return
        }
        ProvisionOutput.show(try await Provisioner(images: helperImages).plan(parsed, prune: manifest.prune), json: output.json)
    }
}

extension Apply {
    func runHere() async throws {
        let (text, file) = try manifest.read()
        let parsed = try ManifestParser(file: file).parse(text)
        let json = output.json
        let report = try await Provisioner(images: helperImages).apply(parsed, options: ApplyOptions(prune: manifest.prune, keepGoing: keepGoing)) { event in
            ProvisionOutput.progress(event, json: json)
        }
        try ProvisionOutput.finish(report, json: json)
    }
}

/// A manifest's images other than clones: this executable again, as a child, as for `import`.
let helperImages: ImageProvider = { source, name in
    guard let job = ImportJob(source) else { return }
    let child = try ChildProcess.spawn([ImagesHelperProgram.path] + job.arguments(name: name, output: .quiet),
                                       stdout: .standardError, stderr: .standardError)
    let termination = await OSThread.run { child.wait() }
    guard termination.succeeded else {
        throw NspawnError.failed("machine '\(name)': the \(source) failed (\(ImagesHelperProgram.executableName) \(termination))")
    }
}

/// Runs an import with signal-driven cancellation and the chosen progress display, then prints the result.
func runImport(name: MachineName, source: NspawnKit.ImageSource, options: ImportOptions, output: OutputOptions, quiet: Bool,
               importer: ImageImporter = ImageImporter()) async throws {
    let cancellation = ImportCancellation()
    let signals = CancelOnSignals(cancellation)
    defer { signals.restore() }
    let display = ProgressDisplay(json: output.json, quiet: quiet)
    let result = try await importer.importImage(name, from: source, options: options, cancellation: cancellation) {
        display.show($0)
    }
    display.finish()
    report(result, output: output, quiet: quiet)
}
