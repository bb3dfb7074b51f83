import FoundationEssentials

/// An image on an image server, `images:DISTRIBUTION/RELEASE[/VARIANT]`, as LXC and Incus name
/// them: `images:debian/12`, `images:alpine/3.20/cloud`. The release may be an alias the server
/// lists (`12` or `bookworm`); the variant defaults to `default`.
public struct StreamReference: Sendable, Equatable, CustomStringConvertible {
    public static let prefix = "images:"

    public var distribution: String
    public var release: String
    public var variant: String

    public init(parsing path: String) throws(NspawnError) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy(Self.isValidComponent) else {
            throw .invalidArgument("invalid image '\(Self.prefix)\(path.escapedForMessage)': expected images:DISTRIBUTION/RELEASE[/VARIANT], each of letters, digits, '.', '_' and '-'")
        }
        distribution = parts[0].lowercased()
        release = parts[1].lowercased()
        variant = parts.count == 3 ? parts[2].lowercased() : "default"
    }

    public var description: String { "\(Self.prefix)\(distribution)/\(release)" + (variant == "default" ? "" : "/\(variant)") }

    private static func isValidComponent(_ text: String) -> Bool {
        guard let first = text.utf8.first, text.utf8.count <= 64, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else { return false }
        return text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a)
            || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }
}

/// Which image server `images:` means: `--remote URL`, else `URL=` in
/// `/etc/nspawnctl/image-server.conf` (`[ImageServer]`), else the LXC/Incus public server.
public enum ImageServerLocation {
    public static let defaultURL = "https://images.linuxcontainers.org"
    public static let configurationFile = "/etc/nspawnctl/image-server.conf"

    public static func resolve(_ remote: String?, configurationFile: String = configurationFile) throws(NspawnError) -> String {
        if let remote { return try checked(remote, from: "--remote") }
        guard let text = try AtomicFile.read(configurationFile, limit: 64 * 1024) else { return defaultURL }
        var url: String?
        for entry in UnitFileDocument(parsing: text).entries {
            guard entry.section == "ImageServer", entry.key == "URL" else {
                throw .invalidArgument("\(configurationFile): [\(entry.section)] \(entry.key)=: unknown setting; it takes [ImageServer] URL=")
            }
            url = entry.value
        }
        return try url.map { (url) throws(NspawnError) in try checked(url, from: configurationFile) } ?? defaultURL
    }

    private static func checked(_ url: String, from origin: String) throws(NspawnError) -> String {
        guard ImageSource.isURL(url), !url.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }),
              url.unicodeScalars.count <= 4096 else {
            throw .invalidArgument("\(origin): invalid image server '\(url.escapedForMessage)': expected an http:// or https:// URL")
        }
        var trimmed = url
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }
}

/// A simplestreams server's catalog (`streams/v1/index.json` and the products file it names),
/// as far as picking a container root tarball needs it.
public struct ImageServerCatalog: Sendable {
    struct Index: Decodable {
        struct Entry: Decodable { var datatype: String?; var path: String? }
        var index: [String: Entry]?
    }

    struct Products: Decodable {
        var products: [String: Product]?
    }

    struct Product: Decodable {
        var aliases: String?
        var arch: String?
        var os: String?
        var release: String?
        var variant: String?
        var versions: [String: Version]?
    }

    struct Version: Decodable {
        var items: [String: Item]?
    }

    struct Item: Decodable {
        var ftype: String?
        var path: String?
        var sha256: String?
        var size: Int64?
    }

    /// The items that are a container's root as a tarball, most preferred first.
    static let rootTarballs = ["root.tar.xz", "root.tar.gz", "root.tar.zst", "rootfs.tar.xz"]

    /// A version's root tarball, by item name or ftype, the most preferred kind first.
    static func rootTarball(of version: Version) -> Item? {
        let items = version.items ?? [:]
        return rootTarballs.lazy.compactMap { name in items[name] ?? items.values.first { $0.ftype == name } }.first
    }

    /// The products file the index names for image downloads.
    public static func productsPath(index bytes: [UInt8], server: String) throws(NspawnError) -> String {
        let index: Index
        do { index = try JSONDecoder().decode(Index.self, from: Data(bytes)) } catch {
            throw .badArchive(source: "\(server)/streams/v1/index.json", entry: nil, reason: "not a simplestreams index")
        }
        let entries = (index.index ?? [:]).sorted { $0.key < $1.key }
        guard let path = entries.first(where: { $0.value.datatype == "image-downloads" })?.value.path,
              isSafeRelativePath(path) else {
            throw .badArchive(source: "\(server)/streams/v1/index.json", entry: nil, reason: "it names no image-downloads products file")
        }
        return path
    }

    let products: [String: Product]
    let server: String

    public init(products bytes: [UInt8], server: String, path: String) throws(NspawnError) {
        let decoded: Products
        do { decoded = try JSONDecoder().decode(Products.self, from: Data(bytes)) } catch {
            throw .badArchive(source: "\(server)/\(path)", entry: nil, reason: "not a simplestreams products file")
        }
        products = decoded.products ?? [:]
        self.server = server
    }

    /// What `images:` resolves to: the newest version's root tarball of the one product that matches.
    public struct Choice: Sendable, Codable, Equatable {
        public var product: String
        public var version: String
        public var url: String
        public var sha256: String
        public var size: Int64?
    }

    public func choose(_ reference: StreamReference, architecture: String) throws(NspawnError) -> Choice {
        let matches = products.filter { _, product in
            product.arch == architecture && (product.variant ?? "default").lowercased() == reference.variant
                && Self.names(product).contains("\(reference.distribution)/\(reference.release)")
        }
        guard let (id, product) = matches.min(by: { $0.key < $1.key }) else {
            let releases = Set(products.values.filter { $0.os?.lowercased() == reference.distribution && $0.arch == architecture }
                .compactMap { $0.release }).sorted()
            throw .noSuchSourceImage("\(reference) on \(server): no such image for \(architecture)"
                               + (releases.isEmpty ? "" : "; \(reference.distribution) has: \(releases.joined(separator: ", "))"))
        }
        // Versions are build dates ("20241201_05:24"); the newest one with a root tarball wins.
        for (version, entry) in (product.versions ?? [:]).sorted(by: { $0.key > $1.key }) {
            guard let item = Self.rootTarball(of: entry), let path = item.path, Self.isSafeRelativePath(path) else { continue }
            guard let sha256 = item.sha256?.lowercased(), sha256.utf8.count == 64,
                  sha256.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
                throw .badArchive(source: server, entry: path, reason: "the products file gives no sha256 for it")
            }
            return Choice(product: id, version: version, url: "\(server)/\(path)", sha256: sha256, size: item.size)
        }
        throw .noSuchSourceImage("\(reference) on \(server): \(id) has no container root tarball (\(Self.rootTarballs.joined(separator: ", ")))")
    }

    /// One line of `images remote`.
    public struct Row: Sendable, Codable, Equatable {
        public var distribution: String
        public var release: String
        public var variant: String
        public var architecture: String
        public var version: String
        public var aliases: [String]
    }

    /// Every product with a root tarball, filtered by a word its names or architecture contain.
    public func rows(filter: String?) -> [Row] {
        products.compactMap { _, product -> Row? in
            let versions = (product.versions ?? [:]).filter { Self.rootTarball(of: $0.value) != nil }
            guard let newest = versions.keys.max(), let os = product.os, let release = product.release, let arch = product.arch else { return nil }
            let row = Row(distribution: os.lowercased(), release: release, variant: product.variant ?? "default", architecture: arch,
                          version: newest, aliases: Self.names(product).sorted())
            if let filter, !filter.isEmpty {
                let lower = filter.lowercased()
                guard ([row.distribution, row.release, row.variant, row.architecture] + row.aliases).contains(where: { $0.lowercased().contains(lower) }) else { return nil }
            }
            return row
        }.sorted { ($0.distribution, $0.release, $0.variant, $0.architecture) < ($1.distribution, $1.release, $1.variant, $1.architecture) }
    }

    /// The DISTRIBUTION/RELEASE names a product answers to: its os/release and its aliases
    /// (variant-qualified ones of the product's own variant count for it too).
    static func names(_ product: Product) -> Set<String> {
        var names = Set<String>()
        let os = product.os?.lowercased() ?? ""
        if let release = product.release?.lowercased() { names.insert("\(os)/\(release)") }
        let variant = (product.variant ?? "default").lowercased()
        for alias in (product.aliases ?? "").split(separator: ",") {
            let parts = String(alias).trimmedWhitespace.lowercased().split(separator: "/").map(String.init)
            if parts.count == 2 { names.insert(parts.joined(separator: "/")) }
            if parts.count == 3, parts[2] == variant { names.insert("\(parts[0])/\(parts[1])") }
        }
        return names
    }

    /// A path of the server's tree: relative, no `..`, nothing odd in it.
    static func isSafeRelativePath(_ path: String) -> Bool {
        !path.isEmpty && !path.hasPrefix("/") && !path.split(separator: "/").contains("..")
            && !path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f || $0 == "?" || $0 == "#" || $0 == "\\" })
    }

    /// simplestreams' names for this host's architecture.
    public static var hostArchitecture: String {
        #if arch(x86_64)
        "amd64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown"
        #endif
    }
}
