import ArgumentParser
import NspawnAPI
import NspawnCLI
import NspawnImages
import NspawnKit

/// `nspawnctl-images`: `import` and `bootstrap` on the direct path, which nspawnctl execs
/// (and nspawnd runs as its import child). The same commands and options as nspawnctl's.
public enum NspawnctlImages {
    struct Root: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "nspawnctl",
            abstract: "Import and bootstrap images (run by nspawnctl and nspawnd; see 'nspawnctl import --help').",
            subcommands: [Import.self, Bootstrap.self])
    }

    public static func main(_ argv: [String] = CommandLine.arguments) async -> Never {
        let (programName, arguments) = ImagesHelper.invocation(argv)
        ImagesHelper.takeName(argv)
        await NspawnCommand.run(Root.self, programName: programName, arguments: arguments) { command in
            switch command {
            case let command as Import: try await command.runHere()
            case let command as Bootstrap: try await command.runHere()
            default:
                var command = command
                try command.run()
            }
        }
    }
}

extension Import {
    func runHere() async throws {
        guard case .direct = try output.route else { return try await run() }
        let options = ImportOptions(checksum: verify.checksum, signature: verify.signature, keyring: verify.keyring,
                                    force: force)
        try await runImport(name: name, source: ImageSource(source), options: options, output: output, quiet: progress.quiet)
    }
}

extension Bootstrap {
    func runHere() async throws {
        guard case .direct = try output.route else { return try await run() }
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

/// Runs an import with signal-driven cancellation and the chosen progress display, then prints the result.
func runImport(name: MachineName, source: ImageSource, options: ImportOptions, output: OutputOptions, quiet: Bool,
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
