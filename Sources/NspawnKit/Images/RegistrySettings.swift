import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// How nspawnctl talks to one registry, from `/etc/nspawnctl/registries/HOST[:PORT].conf`:
///
///     [Registry]
///     PlainHTTP=yes                     # opt in to http:// for this registry only
///     CertificateAuthority=/path/ca.pem # trusted besides the system's certificates
///
/// Without a CertificateAuthority=, the `*.crt` files of `/etc/containers/certs.d/HOST[:PORT]/`
/// (containers-certs.d(5)) and `/etc/docker/certs.d/HOST[:PORT]/` are trusted, as podman and
/// docker trust them.
public struct RegistrySettings: Sendable, Equatable {
    public var plainHTTP = false
    public var certificateAuthority: String?
    /// The file they came from, for messages.
    public var file: String?

    public static let directory = "/etc/nspawnctl/registries"
    static let certificateDirectories = ["/etc/containers/certs.d", "/etc/docker/certs.d"]

    public init() {}

    public init(parsing text: String, file: String) throws(NspawnError) {
        self.file = file
        let document = UnitFileDocument(parsing: text)
        for entry in document.entries {
            let location = "\(file): [\(entry.section)] \(entry.key)="
            guard entry.section == "Registry" else { throw .invalidArgument("\(location): unknown section; registries take [Registry]") }
            switch entry.key {
            case "PlainHTTP":
                guard let value = parseSystemdBool(entry.value) else { throw .invalidArgument("\(location) takes yes or no") }
                plainHTTP = value
            case "CertificateAuthority":
                guard entry.value.hasPrefix("/") else { throw .invalidArgument("\(location) takes an absolute path") }
                certificateAuthority = entry.value
            default:
                throw .invalidArgument("\(location): unknown setting; [Registry] takes PlainHTTP= and CertificateAuthority=")
            }
        }
    }

    /// The settings for `registry` (host[:port]); the defaults when it has no file.
    public static func load(for registry: String, directory: String = directory) throws(NspawnError) -> RegistrySettings {
        let path = "\(directory)/\(registry).conf"
        guard let text = try AtomicFile.read(path, limit: 64 * 1024) else { return RegistrySettings() }
        return try RegistrySettings(parsing: text, file: path)
    }

    /// The PEM certificates to trust for `registry`, the system's included; nil when nothing is
    /// added to them, so libcurl uses its own default.
    public func trustedCertificates(for registry: String) throws(NspawnError) -> [UInt8]? {
        var added: [UInt8] = []
        if let certificateAuthority {
            guard let pem = try AtomicFile.readBytes(certificateAuthority, limit: 4 << 20) else {
                throw .invalidArgument("\(file ?? "registry settings"): CertificateAuthority=\(certificateAuthority) does not exist")
            }
            added = pem
        } else {
            for directory in Self.certificateDirectories {
                guard let hostDirectory = try? Directory(path: "\(directory)/\(registry)"), let names = try? hostDirectory.entries() else { continue }
                for name in names.sorted() where name.hasSuffix(".crt") {
                    if let pem = try AtomicFile.readBytes("\(directory)/\(registry)/\(name)", limit: 4 << 20) {
                        added += pem + [0x0a]
                    }
                }
            }
        }
        guard !added.isEmpty else { return nil }
        let system = (try? AtomicFile.readBytes("/etc/ssl/certs/ca-certificates.crt", limit: 16 << 20)) ?? nil
        return (system.map { $0 + [0x0a] } ?? []) + added
    }
}

/// A registry's user name and password, found as podman and docker keep them: in
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json` or `~/.docker/config.json`, the first file with an entry
/// for the registry winning. Entries for a repository path (`host/org/repo`) win over the host's.
public struct RegistryCredentials: Sendable, Equatable {
    public var user: String
    public var password: String
    /// The file they came from, for messages.
    public var file: String

    /// The files searched, in order, for this process's environment.
    public static func authFiles(environment: [String: String]) -> [String] {
        var files: [String] = []
        if let file = environment["REGISTRY_AUTH_FILE"], !file.isEmpty { files.append(file) }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { files.append("\(runtime)/containers/auth.json") }
        if let home = environment["HOME"], !home.isEmpty {
            files.append("\(environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(home)/.config")/containers/auth.json")
            files.append("\(home)/.docker/config.json")
        }
        return files
    }

    public static func find(for reference: RegistryReference, files: [String]) throws(NspawnError) -> RegistryCredentials? {
        for file in files {
            guard let bytes = try AtomicFile.readBytes(file, limit: 4 << 20) else { continue }
            if let found = try find(for: reference, in: bytes, file: file) { return found }
        }
        return nil
    }

    struct AuthFile: Decodable {
        struct Entry: Decodable { var auth: String? }
        var auths: [String: Entry]?
    }

    static func find(for reference: RegistryReference, in bytes: [UInt8], file: String) throws(NspawnError) -> RegistryCredentials? {
        let document: AuthFile
        do { document = try JSONDecoder().decode(AuthFile.self, from: Data(bytes)) } catch {
            throw .invalidArgument("cannot read credentials from '\(file.escapedForMessage)': not an auth.json document")
        }
        guard let auths = document.auths else { return nil }
        for key in keys(for: reference) {
            guard let entry = auths[key] ?? auths["https://\(key)"] ?? auths["http://\(key)"], let auth = entry.auth else { continue }
            guard let decoded = Data(base64Encoded: auth), let text = String(data: decoded, encoding: .utf8),
                  let colon = text.firstIndex(of: ":") else {
                throw .invalidArgument("cannot read credentials for '\(key.escapedForMessage)' from '\(file.escapedForMessage)': 'auth' is not base64 of user:password")
            }
            return RegistryCredentials(user: String(text[..<colon]), password: String(text[text.index(after: colon)...]), file: file)
        }
        return nil
    }

    /// Most specific first: host/a/b/c, host/a/b, host/a, host; Docker Hub's legacy names last.
    static func keys(for reference: RegistryReference) -> [String] {
        var keys: [String] = []
        var path = reference.repository.split(separator: "/").map(String.init)
        while !path.isEmpty {
            keys.append("\(reference.registry)/\(path.joined(separator: "/"))")
            path.removeLast()
        }
        keys.append(reference.registry)
        if reference.registry == RegistryReference.dockerHub {
            keys += ["index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
        }
        return keys
    }
}
