import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import NspawnAPI
import NspawnKit
import SystemPackage

package struct ManifestOptions: ParsableArguments {
    @Option(name: [.customShort("f"), .long], help: ArgumentHelp("The manifest (YAML); '-' reads stdin.", valueName: "FILE"))
    package var file: String

    @Flag(help: "Also remove machines an earlier apply of this manifest created and that it no longer lists.")
    package var prune = false

    package init() {}

    /// The manifest's text and the name errors give it (an absolute path, or `-`).
    package func read() throws -> (text: String, file: String) {
        if file == "-" {
            let bytes: [UInt8]
            do throws(Errno) {
                bytes = try FileDescriptor.standardInput.readAll(limit: ManifestLimits.maximumSize)
            } catch .fileTooLarge {
                throw NspawnError.invalidArgument("the manifest on stdin is larger than \(ManifestLimits.maximumSize) bytes")
            } catch {
                throw NspawnError.system("cannot read the manifest on stdin", error)
            }
            return (String(decoding: bytes, as: UTF8.self), "-")
        }
        let path = file.hasPrefix("/") ? file : Self.currentDirectory() + "/" + file
        let text = try ManifestLimits.readFile(path)
        return (text, path)
    }

    static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The manifest's text is read here and goes to the service: to `nspawnctl-images` on the
/// direct path (it links the YAML parser), or to nspawnd, which parses, plans and applies it
/// on its host, so flavors and `image: {file: PATH}` are that host's.
package struct Plan: AsyncParsableCommand, JSONCapable {
    package static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what 'apply' would change for a manifest, per machine and per field.",
        discussion: """
            Lines start with + (add), ~ (change, old → new) or - (remove). Nothing is changed. \
            --explain MACHINE shows each value of that machine and the layer it came from \
            (defaults, a profile, or the machine).
            """)

    @OptionGroup package var output: OutputOptions
    @OptionGroup package var manifest: ManifestOptions

    @Option(help: "Show where each value of this machine came from.", transform: parseMachineName)
    package var explain: MachineName?

    package init() {}

    package func run() async throws {
        let (text, file) = try manifest.read()
        let request = PlanRequest(manifest: text, file: file, prune: manifest.prune ? true : nil)
        guard let explain else {
            return ProvisionOutput.show(try await output.service.plan(request), json: output.json)
        }
        let lines = try await output.service.explain(request, machine: explain)
        if output.json { printOut(Renderer.json(lines)) } else { lines.forEach { printOut("\($0.field): \($0.value)  (\($0.origin))") } }
    }
}

package struct Apply: AsyncParsableCommand, JSONCapable {
    package static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Converge the host's machines to a manifest.",
        discussion: """
            Order per machine: image, settings, flavor, enablement, files, exposure, state, packages, \
            commands, wait. A second apply with nothing to do changes nothing. When a machine's step \
            fails, its host-side changes are put back (a machine this apply created is removed), and \
            later machines are skipped unless --keep-going. Exit status 1 when any machine failed; the \
            report (--json too) says which.
            """)

    @OptionGroup package var output: OutputOptions
    @OptionGroup package var manifest: ManifestOptions

    @Flag(help: "Go on with the other machines when one fails.")
    package var keepGoing = false

    package init() {}

    package func run() async throws {
        let (text, file) = try manifest.read()
        let request = ApplyRequest(manifest: text, file: file, prune: manifest.prune ? true : nil, keepGoing: keepGoing ? true : nil)
        let json = output.json
        let report = try await output.service.apply(request) { event in
            ProvisionOutput.progress(event, json: json)
            fflush(nil)
        }
        try ProvisionOutput.finish(report, json: json)
    }
}

/// What plan and apply print, the same on the direct path and through nspawnd.
package enum ProvisionOutput {
    package static func show(_ plan: ProvisionPlan, json: Bool) {
        if json {
            printOut(Renderer.json(plan))
            return
        }
        for machine in plan.machines {
            for change in machine.changes { printOut(change.line(machine: machine.name)) }
        }
        printOut("plan: \(plan.changes) \(plan.changes == 1 ? "change" : "changes") in \(plan.machines.filter { !$0.changes.isEmpty }.count) of \(plan.machines.count) machines")
    }

    /// With --json the report says it all; otherwise a machine's failure is an error message too.
    package static func progress(_ event: ApplyEvent, json: Bool) {
        if json { return }
        if event.isFailure { writeStandardError("nspawnctl: \(event.text)\n") } else { printOut(event.text) }
    }

    /// The report, then exit status 1 when any machine failed.
    package static func finish(_ report: ApplyReport, json: Bool) throws {
        if json {
            printOut(Renderer.json(report))
        } else {
            for machine in report.machines where machine.result == .skipped { printOut("skipped \(machine.name)") }
            printOut("apply: \(report.changes) \(report.changes == 1 ? "change" : "changes"), \(report.failed) failed")
        }
        if report.failed > 0 { throw GuestExit(status: ExitStatus.failure.rawValue) }
    }
}
