/// An image in a registry, as `docker://[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]` names it.
/// Short names are Docker Hub's, as podman and docker read them: the first component is a
/// registry only when it has a '.' or a ':' or is `localhost`; `debian:12` is
/// `docker.io/library/debian:12`. Without a tag or a digest the tag is `latest`.
public struct RegistryReference: Sendable, Equatable, CustomStringConvertible {
    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: String?

    public static let dockerHub = "docker.io"

    public init(parsing text: String) throws(NspawnError) {
        func refuse(_ why: String) -> NspawnError {
            .invalidArgument("invalid image reference 'docker://\(text.escapedForMessage)': \(why)")
        }
        var rest = Substring(text)
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            let digestText = rest[rest.index(after: at)...]
            guard digestText.hasPrefix("sha256:"), digestText.utf8.count == 71,
                  digestText.utf8.dropFirst(7).allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
                throw refuse("a digest is sha256: and 64 lowercase hex digits")
            }
            digest = String(digestText)
            rest = rest[..<at]
        }
        var tag: String?
        // A tag follows the last ':' after the last '/'; an earlier ':' is the registry's port.
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let tagText = rest[rest.index(after: colon)...]
            guard Self.isValidTag(tagText) else {
                throw refuse("a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'")
            }
            tag = String(tagText)
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !rest.isEmpty, !components.contains(where: \.isEmpty) else { throw refuse("no repository") }
        var registry = Self.dockerHub
        if components.count > 1, let first = components.first,
           first.contains(".") || first.contains(":") || first == "localhost" {
            guard Self.isValidRegistry(first) else { throw refuse("'\(first.escapedForMessage)' is no registry host[:port]") }
            registry = first
            components.removeFirst()
        }
        guard components.allSatisfy(Self.isValidPathComponent) else {
            throw refuse("repository components are lowercase letters and digits, joined by '.', '_', '__' or '-'")
        }
        if registry == Self.dockerHub, components.count == 1 { components.insert("library", at: 0) }
        self.registry = registry
        self.repository = components.joined(separator: "/")
        self.tag = tag ?? (digest == nil ? "latest" : nil)
        self.digest = digest
    }

    /// What the manifest request names: the digest when there is one.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    /// The host the API is served from: Docker Hub's registry lives apart from its name.
    public var apiHost: String { registry == Self.dockerHub ? "registry-1.docker.io" : registry }

    public var description: String {
        "docker://\(registry)/\(repository)" + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }

    private static func isValidTag(_ tag: Substring) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else { return false }
        return tag.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    private static func isValidPathComponent(_ component: String) -> Bool {
        let bytes = Array(component.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if isLowerAlphanumeric(byte) { index += 1; continue }
            // Separators: one '.', one or two '_', or any run of '-'.
            var run = index
            while run < bytes.count, !isLowerAlphanumeric(bytes[run]) { run += 1 }
            let separator = String(decoding: bytes[index..<run], as: UTF8.self)
            guard separator == "." || separator == "_" || separator == "__" || separator.allSatisfy({ $0 == "-" }) else { return false }
            index = run
        }
        return true
    }

    private static func isValidRegistry(_ host: String) -> Bool {
        let parts = host.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.first, !name.isEmpty,
              name.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }) else { return false }
        if parts.count == 2 { return UInt16(parts[1]).map { $0 > 0 } ?? false }
        return true
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowerAlphanumeric(byte) || (byte >= 0x41 && byte <= 0x5a)
    }
}
