import NspawnAPI
import NspawnKit
import NspawnProvisioning

/// What the manifest routes call: the provisioner on this host, its images imported by the
/// daemon's import child. Tests put a recorder in its place.
public struct ManifestEngine: Sendable {
    public var plan: @Sendable (Manifest, _ prune: Bool) async throws -> ProvisionPlan
    public var apply: @Sendable (Manifest, ApplyOptions, _ progress: @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport

    public init(plan: @escaping @Sendable (Manifest, Bool) async throws -> ProvisionPlan,
                apply: @escaping @Sendable (Manifest, ApplyOptions, @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport) {
        self.plan = plan
        self.apply = apply
    }

    public static func library(importer: ImagesHelper) -> ManifestEngine {
        let provisioner = Provisioner(images: images(importer))
        return ManifestEngine(plan: { try await provisioner.plan($0, prune: $1) },
                              apply: { try await provisioner.apply($0, options: $1, progress: $2) })
    }

    /// Recipe, URL and file images come from `nspawnctl-images`, as `POST /v1/images` imports
    /// do; a file is a path on this host.
    static func images(_ importer: ImagesHelper) -> ImageProvider {
        importer.manifestImages
    }
}

extension Router {
    /// The manifests routes' bodies may be this large, for a peer the route admits.
    static let manifestRoutes: Set<Endpoint> = [.planManifest, .applyManifest]

    /// Parsed off the cooperative pool (a manifest may be megabytes; flavors are read from
    /// disk). A refusal names the file, line and key.
    func parseManifest(_ text: String, file: String?) async throws -> Manifest {
        let file = file ?? "-"
        return try await OSThread.run { () throws(NspawnError) in try ManifestParser(file: file).parse(text) }
    }

    func planManifest(_ body: PlanRequest) async throws -> APIResponse {
        try body.validate()
        let manifest = try await parseManifest(body.manifest, file: body.file)
        return .json(try await manifests.plan(manifest, body.prune ?? false))
    }

    /// Validates and parses the manifest whole, then starts the apply and answers 202 with
    /// the operation; a refused manifest is a 400 and nothing starts.
    func startApply(_ body: ApplyRequest) async throws -> APIResponse {
        try body.validate()
        let manifest = try await parseManifest(body.manifest, file: body.file)
        let (engine, options) = (manifests, ApplyOptions(prune: body.prune ?? false, keepGoing: body.keepGoing ?? false))
        let operation = try await operations.startApply(name: manifest.name, source: manifest.file) { progress in
            try await engine.apply(manifest, options, progress)
        }
        var response = APIResponse.json(operation, status: 202)
        response.headers.append(("Location", Endpoint.getOperation.path(operation.id)))
        return response
    }
}
