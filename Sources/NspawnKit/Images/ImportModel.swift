import FoundationEssentials

/// Where an image's tarball comes from.
public enum ImageSource: Sendable, Equatable, CustomStringConvertible {
    case file(String)
    case standardInput
    case url(String)
    /// An OCI image, named with skopeo's transports.
    case oci(OCISource)
    /// An image server's image, `images:DISTRIBUTION/RELEASE[/VARIANT]` (the text after `images:`).
    case stream(String)

    /// `-` is stdin, http(s):// a URL, `docker://`, `oci:`, `oci-archive:` and `docker-archive:`
    /// OCI images, `images:` an image server's image, anything else a file path.
    public init(_ text: String) {
        if text == "-" { self = .standardInput }
        else if Self.isURL(text) { self = .url(text) }
        else if let oci = OCISource(text) { self = .oci(oci) }
        else if text.hasPrefix(StreamReference.prefix) { self = .stream(String(text.dropFirst(StreamReference.prefix.count))) }
        else { self = .file(text) }
    }

    /// Whether `text` is an http:// or https:// URL, the only downloads there are.
    /// Compared by bytes: as characters, "http://" followed by a combining mark or an emoji
    /// modifier would not start with "http://".
    public static func isURL(_ text: String) -> Bool {
        let head = text.utf8.prefix(8).map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }
        return head.starts(with: "http://".utf8) || head.starts(with: "https://".utf8)
    }

    public var description: String {
        switch self {
        case .file(let path): path
        case .standardInput: "-"
        case .url(let url): url
        case .oci(let oci): oci.description
        case .stream(let path): StreamReference.prefix + path
        }
    }
}

/// An OCI image, as skopeo names it: `docker://REFERENCE` (a registry), `oci:DIR[:REF]` (an
/// image layout), `oci-archive:FILE[:REF]` (a tar of one) and `docker-archive:FILE` (`docker
/// save`); FILE may be `-` for stdin. The path runs to the first ':' after the transport, as
/// skopeo's does.
public enum OCISource: Sendable, Equatable, CustomStringConvertible {
    /// The reference as written after `docker://`; `registryReference` parses it.
    case registry(String)
    case layout(path: String, reference: String?)
    case archive(path: String, reference: String?)
    case dockerArchive(path: String)

    public init?(_ text: String) {
        func split(_ rest: Substring) -> (String, String?) {
            guard let colon = rest.firstIndex(of: ":") else { return (String(rest), nil) }
            return (String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
        }
        if text.hasPrefix("docker://") {
            self = .registry(String(text.dropFirst(9)))
        } else if text.hasPrefix("oci:") {
            let (path, reference) = split(text.dropFirst(4))
            self = .layout(path: path, reference: reference)
        } else if text.hasPrefix("oci-archive:") {
            let (path, reference) = split(text.dropFirst(12))
            self = .archive(path: path, reference: reference)
        } else if text.hasPrefix("docker-archive:") {
            self = .dockerArchive(path: String(text.dropFirst(15)))
        } else {
            return nil
        }
    }

    /// The file or directory on this host; nil for a registry.
    public var path: String? {
        switch self {
        case .registry: nil
        case .layout(let path, _), .archive(let path, _), .dockerArchive(let path): path
        }
    }

    public var reference: String? {
        switch self {
        case .layout(_, let reference), .archive(_, let reference): reference
        case .dockerArchive, .registry: nil
        }
    }

    public func registryReference() throws(NspawnError) -> RegistryReference? {
        guard case .registry(let text) = self else { return nil }
        return try RegistryReference(parsing: text)
    }

    public var readsStandardInput: Bool {
        switch self {
        case .layout, .registry: false
        case .archive(let path, _), .dockerArchive(let path): path == "-"
        }
    }

    /// A registry reference in its full form (`docker://docker.io/library/debian:12`), so the
    /// same image is recorded and compared under one name.
    public var description: String {
        switch self {
        case .registry(let text): (try? RegistryReference(parsing: text))?.description ?? "docker://\(text)"
        case .layout(let path, let reference): "oci:\(path)" + (reference.map { ":\($0)" } ?? "")
        case .archive(let path, let reference): "oci-archive:\(path)" + (reference.map { ":\($0)" } ?? "")
        case .dockerArchive(let path): "docker-archive:\(path)"
        }
    }
}

/// How an import is checked and what it may replace.
public struct ImportOptions: Sendable {
    /// "sha256:HEX", checked while streaming.
    public var checksum: String?
    /// A detached OpenPGP signature of the source (file path or URL), checked with gpgv and `keyring`.
    public var signature: String?
    public var keyring: String?
    /// Replace an existing image (never the image of a running machine).
    public var force = false
    /// Steps run on the new root before it becomes visible.
    public var setup: [SetupStep] = []
    /// The image server an `images:` source comes from, instead of the configured one.
    public var remote: String?

    public init(checksum: String? = nil, signature: String? = nil, keyring: String? = nil, force: Bool = false,
                setup: [SetupStep] = []) {
        self.checksum = checksum
        self.signature = signature
        self.keyring = keyring
        self.force = force
        self.setup = setup
    }

    /// The expected SHA-256 as 32 bytes, validating the "sha256:HEX" form.
    package func expectedDigest() throws(NspawnError) -> [UInt8]? {
        guard let checksum else { return nil }
        let lower = checksum.lowercased()
        guard lower.hasPrefix("sha256:") else {
            throw .invalidArgument("invalid checksum '\(checksum.escapedForMessage)': expected sha256:HEX")
        }
        let hex = Array(lower.dropFirst(7).utf8)
        guard hex.count == 64, let bytes = decodeHex(hex) else {
            throw .invalidArgument("invalid checksum '\(checksum.escapedForMessage)': expected 64 hex digits after 'sha256:'")
        }
        return bytes
    }
}

package func decodeHex(_ hex: [UInt8]) -> [UInt8]? {
    guard hex.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(hex.count / 2)
    var index = 0
    while index < hex.count {
        guard let high = nibble(hex[index]), let low = nibble(hex[index + 1]) else { return nil }
        out.append(high << 4 | low)
        index += 2
    }
    return out
}

package func encodeHex<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
    let digits = Array("0123456789abcdef")
    var out = ""
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0xf)])
    }
    return out
}

/// What an import did.
public struct ImportResult: Sendable, Codable, Equatable {
    public var name: String
    public var path: String
    public var source: String
    public var sourceBytes: Int64
    public var entries: Int
    /// Compression filters found, e.g. ["zstd"]; empty for a plain tar.
    public var compression: [String]
    public var sha256: String
    /// What was checked: "sha256", "signature".
    public var verified: [String]
    /// The single top directory that was stripped, e.g. "root.x86_64".
    public var strippedDirectory: String?
    public var replaced: Bool
    /// Leftovers of interrupted imports of this name that were removed first.
    public var removedLeftovers: [String]
    public var seconds: Double
    /// For an OCI image: which image it was, and what its config became.
    public var image: OCIImageInfo?
    /// `--force` of the same OCI reference whose digest had not changed: nothing was done.
    public var unchanged: Bool?
    /// For an image server's image: which product and version it resolved to.
    public var stream: ImageServerCatalog.Choice?
    /// For an nspawnctl machine archive: what came with the root.
    public var machine: ImportedMachine?

    package init(name: String, path: String, source: String, sourceBytes: Int64, entries: Int, compression: [String],
                 sha256: String, verified: [String], strippedDirectory: String?, replaced: Bool,
                 removedLeftovers: [String], seconds: Double) {
        self.name = name
        self.path = path
        self.source = source
        self.sourceBytes = sourceBytes
        self.entries = entries
        self.compression = compression
        self.sha256 = sha256
        self.verified = verified
        self.strippedDirectory = strippedDirectory
        self.replaced = replaced
        self.removedLeftovers = removedLeftovers
        self.seconds = seconds
    }
}
