import FoundationEssentials
import NspawnKit

/// `POST /v1/images`: an import from a tarball URL, or a recipe's bootstrap.
public struct ImportRequest: Codable, Sendable, Equatable {
    /// The new image; a recipe import without one takes the next free childNN.
    public var name: String?
    public var url: String?
    public var recipe: String?
    /// An image in a registry, `docker://REFERENCE`, pulled by the daemon as `import` pulls it.
    public var oci: String?
    /// An image server's image, DISTRIBUTION/RELEASE[/VARIANT], from `remote` or the daemon's configured server.
    public var stream: String?
    public var remote: String?
    /// "sha256:HEX".
    public var checksum: String?
    /// A detached signature (URL or absolute path on the daemon's host), with `keyring`.
    public var signature: String?
    public var keyring: String?
    /// A recipe's mirror, replacing its default.
    public var mirror: String?
    /// A recipe's own verification; false must be said.
    public var verify: Bool?
    /// Replace an existing image atomically.
    public var force: Bool?

    public init(name: String? = nil, url: String? = nil, recipe: String? = nil, checksum: String? = nil, signature: String? = nil,
                keyring: String? = nil, mirror: String? = nil, verify: Bool? = nil, force: Bool? = nil, oci: String? = nil,
                stream: String? = nil, remote: String? = nil) {
        self.stream = stream
        self.remote = remote
        self.name = name
        self.url = url
        self.recipe = recipe
        self.oci = oci
        self.checksum = checksum
        self.signature = signature
        self.keyring = keyring
        self.mirror = mirror
        self.verify = verify
        self.force = force
    }

    /// The whole request checked, before anything starts.
    public func validate() throws(NspawnError) {
        if let name { _ = try MachineName(name) }
        _ = try ImportOptions(checksum: checksum).expectedDigest()
        if let signature, (!Self.isURL(signature) && !signature.hasPrefix("/")) || signature.unicodeScalars.count > 4096 {
            throw .invalidArgument("invalid signature '\(signature.escapedForMessage)': expected a URL or an absolute path")
        }
        if let keyring, !keyring.hasPrefix("/") || keyring.unicodeScalars.count > 4096 {
            throw .invalidArgument("invalid keyring '\(keyring.escapedForMessage)': expected an absolute path")
        }
        if (signature == nil) != (keyring == nil) {
            throw .invalidArgument("signature and keyring go together")
        }
        if let remote {
            guard stream != nil else { throw .invalidArgument("remote names the image server of a stream import") }
            guard Self.isDownloadURL(remote) else { throw .invalidArgument("invalid remote '\(remote.escapedForMessage)': expected http:// or https://") }
        }
        if let stream {
            guard url == nil, recipe == nil, oci == nil else { throw .invalidArgument("give exactly one of url, recipe, oci or stream") }
            if name == nil { throw .invalidArgument("an import from an image server needs a name") }
            _ = try StreamReference(parsing: stream)
            if mirror != nil || verify != nil || checksum != nil || signature != nil {
                throw .invalidArgument("an image server's tarball is verified by the sha256 its catalog gives; checksum, signature, mirror and verify do not apply")
            }
            return
        }
        if let oci {
            guard url == nil, recipe == nil else { throw .invalidArgument("give exactly one of url, recipe, oci or stream") }
            if name == nil { throw .invalidArgument("an import from a registry needs a name") }
            guard oci.unicodeScalars.count <= 4096, case .oci(let source) = ImageSource(oci), case .registry = source else {
                throw .invalidArgument("invalid oci '\(oci.escapedForMessage)': expected docker://[REGISTRY/]REPOSITORY[:TAG|@DIGEST]; images on a host are imported there, without the API")
            }
            _ = try source.registryReference()
            if mirror != nil || verify != nil || checksum != nil || signature != nil {
                throw .invalidArgument("an OCI image is verified by the digests its manifest names; checksum, signature, mirror and verify do not apply")
            }
            return
        }
        switch (url, recipe) {
        case (let url?, nil):
            if name == nil { throw .invalidArgument("an import from a url needs a name") }
            guard Self.isDownloadURL(url) else {
                throw .invalidArgument("invalid url '\(url.escapedForMessage)': expected http:// or https://")
            }
            if mirror != nil || verify != nil {
                throw .invalidArgument("mirror and verify belong to recipe imports; a url import verifies with checksum or signature")
            }
        case (nil, let recipe?):
            guard !recipe.isEmpty, !recipe.contains("/"), !recipe.hasPrefix("."), recipe.utf8.count <= 64 else {
                throw .invalidArgument("invalid recipe '\(recipe.escapedForMessage)': give a recipe name, not a path")
            }
            if let mirror, !Self.isDownloadURL(mirror) {
                throw .invalidArgument("invalid mirror '\(mirror.escapedForMessage)': expected http:// or https://")
            }
            if verify == false && (checksum != nil || signature != nil) {
                throw .invalidArgument("verify false contradicts checksum and signature")
            }
        default:
            throw .invalidArgument("give exactly one of url, recipe, oci or stream")
        }
    }

    /// A URL an import may fetch: http(s) and something after it, no spaces or control
    /// characters, at most 4096 long.
    public static func isDownloadURL(_ text: String) -> Bool {
        isURL(text) && text.unicodeScalars.count <= 4096
            && !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f })
    }

    /// http:// or https:// and something after it.
    static func isURL(_ text: String) -> Bool {
        guard ImageSource.isURL(text) else { return false }
        // "http:" has its colon at byte 4, "https:" at byte 5.
        let schemeLength = Array(text.utf8.prefix(5)).last == UInt8(ascii: ":") ? 7 : 8
        return text.utf8.count > schemeLength
    }
}

/// Long work started through the API: an import (`kind` "import", cancelled by `DELETE`) or a
/// manifest's apply (`kind` "apply"), followed by `GET /v1/operations/{id}` or `/v1/events`.
public struct Operation: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case running, succeeded, failed, cancelled
    }

    public struct Failure: Sendable, Codable, Equatable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public static let importKind = "import"
    public static let applyKind = "apply"
    /// How many of an apply's newest events an operation carries.
    public static let eventsKept = 200

    public var id: String
    public var kind = Operation.importKind
    /// The image an import makes; the manifest an apply converges to.
    public var name: String
    /// The import's URL or recipe; the manifest's file.
    public var source: String
    public var state: State
    public var progress: ImportProgress?
    public var result: ImportResult?
    /// An apply's newest events (at most `eventsKept`), and how many it has reported in all.
    public var events: [ApplyEvent]?
    public var eventCount: Int?
    /// An apply's report: set when it ends, also when a machine failed (then `state` is `failed`).
    public var report: ApplyReport?
    public var error: Failure?
    public var created: Date

    public init(id: String, name: String, source: String, state: State, created: Date) {
        self.id = id
        self.name = name
        self.source = source
        self.state = state
        self.created = created
    }

    /// The operation's failure as the error the direct path would have thrown.
    public var failure: NspawnError? {
        switch state {
        case .running, .succeeded: nil
        case .failed, .cancelled:
            .remote(error.flatMap { NspawnError.Category(rawValue: $0.code) } ?? (state == .cancelled ? .cancelled : .failure),
                    message: error?.message ?? "\(kind) of '\(name)' \(state.rawValue)", busError: nil)
        }
    }
}
