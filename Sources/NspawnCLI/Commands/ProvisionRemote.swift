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
        ProvisionOutput.show(try await client.plan(PlanRequest(manifest: text, file: file, prune: manifest.prune ? true : nil)), json: output.json)
    }
}

extension Apply {
    /// Starts the apply as an operation and follows it, printing its progress lines as they
    /// come; if this process ends, the apply goes on in the daemon.
    func applyThroughDaemon(_ client: APIClient, text: String, file: String) async throws {
        let request = ApplyRequest(manifest: text, file: file, prune: manifest.prune ? true : nil, keepGoing: keepGoing ? true : nil)
        let operation = try await client.startApply(request)
        let json = output.json
        let report = try await client.followApply(operation) { event in
            ProvisionOutput.progress(event, json: json)
            fflush(nil)
        }
        try ProvisionOutput.finish(report, json: json)
    }
}
