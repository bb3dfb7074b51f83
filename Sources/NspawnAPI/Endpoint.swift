import FoundationEssentials
import NspawnKit

/// The API level both sides speak; every response says it in `Nspawnd-Api`, and a client
/// refuses an answer in another.
public enum APILevel {
    public static let current = "v1"
    public static let header = "Nspawnd-Api"
}

/// What a peer may do. Ordered: each role includes the ones below it.
public enum Role: Int, Sendable, Comparable, CustomStringConvertible {
    /// Only `GET /v1/version`.
    case none
    /// Reading, and the lifecycle of machines: start, stop, reboot, terminate, kill.
    case `operator`
    /// Everything: images, settings, exposure, enablement, creation.
    case admin

    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .none: "anyone"
        case .operator: "group nspawn"
        case .admin: "root"
        }
    }
}

/// Every route of the API: method, path, and the role it needs. The router dispatches on it,
/// the client builds its paths from it, and a test holds it against units/openapi.yaml.
public enum Endpoint: String, CaseIterable, Sendable {
    case version
    case listMachines, getMachine, createMachine
    case start, stop, reboot, terminate, kill
    case enable, disable
    case getConfig, configure, expose, unexpose, resize, confirmResize, revertResize, rebuild
    case exec
    case listImages, importImage, removeImage, cloneImage, renameImage, setReadOnly
    case getOperation, cancelOperation
    case events
    case logs
    case stats
    case metrics
    case listFlavors
    case listSnapshots, createSnapshot, removeSnapshot, restore
    case planManifest, applyManifest

    public var method: String {
        switch self {
        case .version, .listMachines, .getMachine, .getConfig, .listImages, .getOperation, .events, .listSnapshots, .logs, .stats, .metrics,
             .listFlavors: "GET"
        case .removeImage, .cancelOperation, .removeSnapshot: "DELETE"
        default: "POST"
        }
    }

    /// The path with `{name}` and `{id}` placeholders, as units/openapi.yaml writes it.
    public var template: String {
        switch self {
        case .version: "/v1/version"
        case .listMachines, .createMachine: "/v1/machines"
        case .getMachine: "/v1/machines/{name}"
        case .start, .stop, .reboot, .terminate, .kill, .enable, .disable, .expose, .unexpose, .resize, .rebuild, .restore, .exec, .logs:
            "/v1/machines/{name}/\(rawValue)"
        case .listSnapshots, .createSnapshot, .removeSnapshot: "/v1/machines/{name}/snapshots"
        case .confirmResize: "/v1/machines/{name}/resize/confirm"
        case .revertResize: "/v1/machines/{name}/resize/revert"
        case .getConfig, .configure: "/v1/machines/{name}/config"
        case .listImages, .importImage: "/v1/images"
        case .removeImage: "/v1/images/{name}"
        case .cloneImage: "/v1/images/{name}/clone"
        case .renameImage: "/v1/images/{name}/rename"
        case .setReadOnly: "/v1/images/{name}/read-only"
        case .getOperation, .cancelOperation: "/v1/operations/{id}"
        case .events: "/v1/events"
        case .stats: "/v1/stats"
        case .metrics: "/v1/metrics"
        case .listFlavors: "/v1/flavors"
        case .planManifest: "/v1/manifests/plan"
        case .applyManifest: "/v1/manifests/apply"
        }
    }

    public var role: Role {
        switch self {
        case .version: .none
        // Logs are the nspawn group's to read, as `journalctl -M` is the adm and systemd-journal groups'.
        case .listMachines, .getMachine, .getConfig, .listImages, .getOperation, .events, .listSnapshots, .logs, .stats, .metrics, .listFlavors,
             .start, .stop, .reboot, .terminate, .kill: .operator
        case .createMachine, .enable, .disable, .configure, .expose, .unexpose, .resize, .confirmResize, .revertResize, .rebuild,
             .importImage, .removeImage, .cloneImage, .renameImage, .setReadOnly, .cancelOperation,
             .createSnapshot, .removeSnapshot, .restore: .admin
        // A command in a machine runs as any guest user, root included: root's alone. A plan
        // runs a manifest's `unless` guards and package queries in machines, so it is too.
        case .exec, .planManifest, .applyManifest: .admin
        }
    }

    /// What a refusal says the caller lacks, in words a user acts on.
    public var purpose: String {
        switch self {
        case .enable, .disable: "changing what starts at boot"
        case .configure, .resize, .confirmResize, .revertResize: "changing settings"
        case .expose, .unexpose: "changing exposure"
        case .createMachine: "creating machines"
        case .rebuild: "rebuilding machines"
        case .importImage: "importing images"
        case .removeImage, .cloneImage, .renameImage, .setReadOnly: "changing images"
        case .cancelOperation: "cancelling imports"
        case .createSnapshot, .removeSnapshot: "changing snapshots"
        case .restore: "restoring snapshots"
        case .exec: "running commands in machines"
        case .planManifest: "planning manifests (it runs their guard commands in machines)"
        case .applyManifest: "applying manifests"
        default: "this"
        }
    }

    /// The concrete path for `parameter` (a machine name or an operation id).
    public func path(_ parameter: String? = nil) -> String {
        guard let parameter else { return template }
        return template.replacing("{name}", with: parameter).replacing("{id}", with: parameter)
    }

    /// The endpoint, and its path parameter, that `method` on `path` reaches.
    public static func match(method: String, path: String) -> Match {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        var allowed: [String] = []
        for endpoint in allCases {
            let pattern = endpoint.template.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            guard pattern.count == segments.count else { continue }
            var parameter: String?
            let fits = zip(pattern, segments).allSatisfy { expected, actual in
                if expected.hasPrefix("{") { parameter = actual; return !actual.isEmpty }
                return expected == actual
            }
            guard fits else { continue }
            if endpoint.method == method { return .found(endpoint, parameter) }
            if !allowed.contains(endpoint.method) { allowed.append(endpoint.method) }
        }
        return allowed.isEmpty ? .unknown : .methodNotAllowed(allowed: allowed)
    }

    public enum Match: Equatable, Sendable {
        case found(Endpoint, String?)
        case methodNotAllowed(allowed: [String])
        case unknown
    }
}

/// Errors on the wire: a category travels as an HTTP status and the error body's code, and
/// comes back as the same category, so exit codes match whichever way a verb went.
public enum ErrorMapping {
    public static func httpStatus(_ category: NspawnError.Category) -> Int {
        switch category {
        case .invalidInput: 400
        case .permissionDenied: 403
        case .notFound: 404
        case .conflict: 409
        case .verificationFailed: 422
        case .cancelled: 409
        case .failure: 500
        case .unreachable: 502
        case .unsupportedAPI: 501
        }
    }

    /// The category an error response stands for: the body's code when it has one we know,
    /// else what the status means.
    public static func error(status: Int, body: [UInt8], from peer: String) -> NspawnError {
        if let decoded = try? WireJSON.decoder().decode(ErrorBody.self, from: Data(body)) {
            return decoded.nspawnError
        }
        let category: NspawnError.Category = switch status {
        case 400, 405, 413, 415: .invalidInput
        case 401, 403: .permissionDenied
        case 404: .notFound
        case 409: .conflict
        case 422: .verificationFailed
        default: .failure
        }
        return .remote(category, message: "\(peer) answered HTTP \(status) without an error body", busError: nil)
    }
}
