import FoundationEssentials
import NspawnKit

/// The OCI image spec's JSON documents, as far as an import reads them. Docker's v2 schema 2
/// manifests and manifest lists have the same shape under other media types.
enum OCIMediaType {
    static let index = "application/vnd.oci.image.index.v1+json"
    static let manifest = "application/vnd.oci.image.manifest.v1+json"
    static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

    static let indexes: Set<String> = [index, dockerManifestList]
    static let manifests: Set<String> = [manifest, dockerManifest]
}

struct OCIPlatform: Codable, Equatable, Sendable {
    var architecture: String
    var os: String
    var variant: String?

    /// This host, in the spec's (Go's) words.
    static var host: OCIPlatform {
        #if arch(x86_64)
        OCIPlatform(architecture: "amd64", os: "linux")
        #elseif arch(arm64)
        OCIPlatform(architecture: "arm64", os: "linux", variant: "v8")
        #else
        OCIPlatform(architecture: "unknown", os: "linux")
        #endif
    }

    var text: String { "\(os)/\(architecture)" + (variant.map { "/\($0)" } ?? "") }

    func matches(_ other: OCIPlatform?) -> Bool {
        guard let other else { return false }
        guard other.os == os, other.architecture == architecture else { return false }
        // arm64 images often leave the variant out; a stated one must agree.
        return other.variant == nil || variant == nil || other.variant == variant
    }
}

struct OCIDescriptor: Codable, Equatable, Sendable {
    var mediaType: String?
    var digest: String
    var size: Int64
    var platform: OCIPlatform?
    var annotations: [String: String]?

    /// The tag in an image layout's index.json.
    var referenceName: String? { annotations?["org.opencontainers.image.ref.name"] }
}

struct OCIIndex: Codable, Sendable {
    var schemaVersion: Int?
    var mediaType: String?
    var manifests: [OCIDescriptor]
}

struct OCIManifest: Codable, Sendable {
    var schemaVersion: Int?
    var mediaType: String?
    var config: OCIDescriptor
    var layers: [OCIDescriptor]
}

/// The image configuration: how the image means to be run.
struct OCIImageConfig: Codable, Sendable {
    struct RunConfig: Codable, Sendable {
        var User: String?
        var Env: [String]?
        var Entrypoint: [String]?
        var Cmd: [String]?
        var WorkingDir: String?
        var StopSignal: String?
        var ExposedPorts: [String: EmptyObject]?
        var Volumes: [String: EmptyObject]?
        var Healthcheck: Healthcheck?
    }
    struct Healthcheck: Codable, Sendable {
        var Test: [String]?
    }
    struct RootFS: Codable, Sendable {
        var type: String?
        var diff_ids: [String]?
    }
    struct EmptyObject: Codable, Sendable {}

    var architecture: String?
    var os: String?
    var variant: String?
    var config: RunConfig?
    var rootfs: RootFS?
}

/// One image of a `docker save` archive's manifest.json.
struct DockerArchiveImage: Codable, Sendable {
    var Config: String
    var RepoTags: [String]?
    var Layers: [String]
}

/// A digest as the spec writes it ("sha256:" and 64 lowercase hex digits); other algorithms
/// are refused, so a digest is also a safe file name under blobs/sha256/.
struct OCIDigest: Equatable, Hashable, Sendable, CustomStringConvertible {
    let hex: String

    init(_ text: String, source: String) throws(NspawnError) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0] == "sha256", parts[1].utf8.count == 64,
              parts[1].utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw .badArchive(source: source, entry: nil, reason: "unsupported digest '\(text.escapedForMessage)': expected sha256: and 64 lowercase hex digits")
        }
        hex = String(parts[1])
    }

    var description: String { "sha256:\(hex)" }
}
