import NspawnKit

/// The limits of a manifest sent to nspawnd: its text as `nspawnctl apply -f` reads a file, and
/// the name its messages give it.
public enum ManifestRequestLimits {
    /// The manifest's text, in UTF-8 bytes (the CLI's own limit on a file).
    public static let maximumTextSize = 4 * 1024 * 1024
    /// The request body: the text JSON-escaped, which at worst (every byte a control
    /// character, `\u0001`) is six times as long, with room for the other fields.
    public static let maximumBodySize = 6 * maximumTextSize + 64 * 1024
    /// The file name, in bytes.
    public static let maximumFileSize = 4096

    static func check(_ manifest: String, file: String?) throws(NspawnError) {
        guard manifest.utf8.count <= maximumTextSize else {
            throw .invalidArgument("the manifest is larger than \(maximumTextSize) bytes")
        }
        if let file {
            guard !file.isEmpty, file.utf8.count <= maximumFileSize,
                  !file.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                throw .invalidArgument("invalid file '\(file.escapedForMessage)': expected a name of 1 to \(maximumFileSize) bytes without control characters")
            }
        }
    }
}

/// `POST /v1/manifests/plan`: what `apply` would change. The manifest travels whole as text;
/// what it names on a host (flavors, `image: {file: PATH}`) is looked up on the daemon's host.
public struct PlanRequest: Codable, Sendable, Equatable {
    /// The manifest (YAML).
    public var manifest: String
    /// The name messages give the manifest, and its default name: `nspawnctl` sends the
    /// file's absolute path (or `-` for stdin). Default `-`.
    public var file: String?
    /// Also plan removing machines an earlier apply of this manifest created and that it no longer lists.
    public var prune: Bool?

    public init(manifest: String, file: String? = nil, prune: Bool? = nil) {
        self.manifest = manifest
        self.file = file
        self.prune = prune
    }

    public func validate() throws(NspawnError) { try ManifestRequestLimits.check(manifest, file: file) }
}

/// `POST /v1/manifests/apply`: converge the daemon's host to a manifest, as an operation.
public struct ApplyRequest: Codable, Sendable, Equatable {
    public var manifest: String
    public var file: String?
    public var prune: Bool?
    /// Go on with the other machines when one fails.
    public var keepGoing: Bool?

    public init(manifest: String, file: String? = nil, prune: Bool? = nil, keepGoing: Bool? = nil) {
        self.manifest = manifest
        self.file = file
        self.prune = prune
        self.keepGoing = keepGoing
    }

    public func validate() throws(NspawnError) { try ManifestRequestLimits.check(manifest, file: file) }
}

