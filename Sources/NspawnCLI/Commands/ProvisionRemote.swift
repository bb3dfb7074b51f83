#if canImport(Glibc)
import Glibc
#endif
import NspawnAPI
import NspawnKit

// `plan` and `apply` through nspawnd (--api, not root, or -H ssh://…): the manifest's text
// travels in the request and the daemon parses, plans and applies it on its host, so flavors
// and `image: {file: PATH}` are that host's. Output and exit status are the direct path's.

extension Plan {
    func planThroughDaemon(_ client: APIClient, text: String, file: String) async throws {
        let plan = try await client.plan(PlanRequest(manifest: text, file: file, prune: manifest.prune ? true : nil))
        if output.json {
            printOut(Renderer.json(plan))
            return
        }
        for machine in plan.machines {
            for change in machine.changes { printOut(change.line(machine: machine.name)) }
        }
        printOut("plan: \(plan.changes) \(plan.changes == 1 ? "change" : "changes") in \(plan.machines.filter { !$0.changes.isEmpty }.count) of \(plan.machines.count) machines")
    }
}

extension Apply {
    /// Starts the apply as an operation and follows it, printing its progress lines as they
    /// come; if this process ends, the apply goes on in the daemon.
    func applyThroughDaemon(_ client: APIClient, text: String, file: String) async throws {
        let request = ApplyRequest(manifest: text, file: file, prune: manifest.prune ? true : nil, keepGoing: keepGoing ? true : nil)
        let operation = try await client.startApply(request)
        let json = output.json
        let report = try await client.followApply(operation) { line in
            // As the direct path: with --json the report says it all; otherwise a failure is an error message too.
            if json { return }
            if line.hasPrefix("! ") { writeStandardError("nspawnctl: \(line.dropFirst(2))\n") } else { printOut(line) }
            fflush(nil)
        }
        if json {
            printOut(Renderer.json(report))
        } else {
            for machine in report.machines where machine.result == .skipped { printOut("skipped \(machine.name)") }
            printOut("apply: \(report.changes) \(report.changes == 1 ? "change" : "changes"), \(report.failed) failed")
        }
        if report.failed > 0 { throw GuestExit(status: ExitStatus.failure.rawValue) }
    }
}
