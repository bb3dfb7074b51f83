import NspawnKit

/// Manifests are parsed, planned and applied in `nspawnctl-images`, which links the YAML
/// parser; the text goes to its stdin and its report comes back typed.
extension LocalService {
    public func plan(_ request: PlanRequest) async throws -> ProvisionPlan {
        try request.validate()
        return try await images.manifest(.plan(prune: request.prune ?? false), text: request.manifest, file: request.file ?? "-").get()
    }

    public func explain(_ request: PlanRequest, machine: MachineName) async throws -> [ExplanationLine] {
        try request.validate()
        return try await images.manifest(.explain(machine: machine), text: request.manifest, file: request.file ?? "-").get()
    }

    public func apply(_ request: ApplyRequest, progress: @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport {
        try request.validate()
        let job = ManifestJob.apply(prune: request.prune ?? false, keepGoing: request.keepGoing ?? false)
        return try await images.manifest(job, text: request.manifest, file: request.file ?? "-", events: progress).get()
    }
}
