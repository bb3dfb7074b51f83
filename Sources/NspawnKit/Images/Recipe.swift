import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A recipe: where a distribution's release tarball lives, how it is verified and how a fresh root
/// is set up. Recipes are data (`images/NAME.recipe`, INI like systemd's units), not code.
public struct Recipe: Sendable, Equatable {
    public var name: String
    public var description: String
    /// The default mirror; `{mirror}` in URLs and steps stands for it (or for --mirror).
    public var mirror: String?
    /// The tarball, with `{mirror}`.
    public var url: String
    /// A detached signature of the tarball; `{url}` is the tarball's URL.
    public var signatureURL: String?
    /// A checksum list (sha256sum format) naming the tarball, and its detached signature.
    public var checksumsURL: String?
    public var checksumsSignatureURL: String?
    public var keyring: String?
    public var setup: [SetupStep]

    /// Where recipes are looked up, first match wins: local overrides, then the installed ones.
    public static let searchDirectories = [
        "/etc/nspawnctl/images", "/usr/local/share/nspawnctl/images", "/usr/share/nspawnctl/images",
    ]

    /// Finds a recipe by name, or reads one from a path (anything with a '/').
    public static func load(_ nameOrPath: String, searchDirectories: [String] = searchDirectories) throws(NspawnError) -> Recipe {
        if nameOrPath.contains("/") {
            let name = String(nameOrPath.split(separator: "/").last ?? "").replacingSuffix(".recipe")
            guard let text = try AtomicFile.read(nameOrPath, limit: sizeLimit) else {
                throw .unusableInput("cannot read recipe '\(nameOrPath.escapedForMessage)'", .noSuchFileOrDirectory)
            }
            return try parse(text, name: name, origin: nameOrPath)
        }
        guard !nameOrPath.isEmpty, nameOrPath.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }),
              !nameOrPath.hasPrefix(".") else {
            throw .invalidArgument("invalid recipe name '\(nameOrPath.escapedForMessage)'")
        }
        if let (path, text) = try files(searchDirectories).find(nameOrPath) {
            return try parse(text, name: nameOrPath, origin: path)
        }
        throw .noSuchRecipe(nameOrPath, searched: searchDirectories)
    }

    /// Names of the recipes found, sorted.
    public static func available(searchDirectories: [String] = searchDirectories) -> [String] {
        files(searchDirectories).names()
    }

    static let sizeLimit = 256 * 1024

    static func files(_ directories: [String]) -> DataFiles {
        DataFiles(directories: directories, suffix: ".recipe", limit: sizeLimit)
    }

    /// Parses recipe text. Unknown sections or keys are errors, so a typo never silently weakens verification.
    public static func parse(_ text: String, name: String, origin: String) throws(NspawnError) -> Recipe {
        var section = ""
        var values: [String: String] = [:]
        var setup: [(String, String, Int)] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(rawLine).trimmedWhitespace
            let lineNumber = index + 1
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                guard section == "Recipe" || section == "Setup" else {
                    throw .invalidArgument("\(origin):\(lineNumber): unknown section [\(section)]")
                }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw .invalidArgument("\(origin):\(lineNumber): expected KEY=VALUE")
            }
            let key = String(line[..<equals]).trimmedWhitespace
            let value = String(line[line.index(after: equals)...]).trimmedWhitespace
            switch section {
            case "Recipe":
                guard ["Description", "Mirror", "URL", "SignatureURL", "ChecksumsURL", "ChecksumsSignatureURL", "Keyring"].contains(key) else {
                    throw .invalidArgument("\(origin):\(lineNumber): unknown key \(key) in [Recipe]")
                }
                values[key] = value
            case "Setup":
                setup.append((key, value, lineNumber))
            default:
                throw .invalidArgument("\(origin):\(lineNumber): \(key)= outside a section")
            }
        }
        guard let url = values["URL"], !url.isEmpty else { throw .invalidArgument("\(origin): [Recipe] needs URL=") }
        if (values["ChecksumsURL"] == nil) != (values["ChecksumsSignatureURL"] == nil) {
            throw .invalidArgument("\(origin): ChecksumsURL= and ChecksumsSignatureURL= go together")
        }
        if values["SignatureURL"] != nil || values["ChecksumsURL"] != nil, values["Keyring"] == nil {
            throw .invalidArgument("\(origin): a signature needs Keyring=")
        }
        var steps: [SetupStep] = []
        for (key, value, lineNumber) in setup {
            steps.append(try parseStep(key, value, at: "\(origin):\(lineNumber)"))
        }
        return Recipe(name: name, description: values["Description"] ?? name, mirror: values["Mirror"], url: url,
                      signatureURL: values["SignatureURL"], checksumsURL: values["ChecksumsURL"],
                      checksumsSignatureURL: values["ChecksumsSignatureURL"], keyring: values["Keyring"], setup: steps)
    }

    package static func parseStep(_ key: String, _ value: String, at location: String) throws(NspawnError) -> SetupStep {
        func pathAndRest() throws(NspawnError) -> (String, String) {
            guard let space = value.firstIndex(of: " "), value.hasPrefix("/") else {
                throw .invalidArgument("\(location): \(key)= expects an absolute path and a value")
            }
            return (String(value[..<space]), String(value[value.index(after: space)...]).trimmedWhitespace)
        }
        switch key {
        case "PrependLine": let (path, line) = try pathAndRest(); return .prependLine(path: path, line: line)
        case "CommentOut": let (path, word) = try pathAndRest(); return .commentOut(path: path, key: word)
        case "AppendLineIfExists": let (path, line) = try pathAndRest(); return .appendLineIfExists(path: path, line: line)
        case "Run":
            let argv = value.split(separator: " ").map(String.init)
            guard !argv.isEmpty else { throw .invalidArgument("\(location): Run= needs a command") }
            return .run(argv)
        case "SetHostname", "EmptyMachineID":
            guard value == "yes" else { throw .invalidArgument("\(location): \(key)= takes 'yes'") }
            return key == "SetHostname" ? .setHostname : .emptyMachineID
        default:
            throw .invalidArgument("\(location): unknown setup step \(key)=")
        }
    }

    /// The recipe with `{mirror}` filled in; a trailing '/' of the mirror is dropped.
    public func resolved(mirror override: String?) throws(NspawnError) -> Recipe {
        var mirror = override ?? self.mirror ?? ""
        while mirror.hasSuffix("/") { mirror.removeLast() }
        if let override, !ImageSource.isURL(override) {
            throw .invalidArgument("invalid mirror '\(override.escapedForMessage)': expected an http(s) URL")
        }
        if url.contains("{mirror}") && mirror.isEmpty { throw .invalidArgument("recipe '\(name)' needs --mirror") }
        func fill(_ text: String) -> String {
            text.replacing("{mirror}", with: mirror).replacing("{url}", with: url.replacing("{mirror}", with: mirror))
        }
        var copy = self
        copy.mirror = mirror
        copy.url = fill(url)
        copy.signatureURL = signatureURL.map(fill)
        copy.checksumsURL = checksumsURL.map(fill)
        copy.checksumsSignatureURL = checksumsSignatureURL.map(fill)
        copy.setup = setup.map { step in
            switch step {
            case .prependLine(let path, let line): .prependLine(path: path, line: fill(line))
            case .appendLineIfExists(let path, let line): .appendLineIfExists(path: path, line: fill(line))
            default: step
            }
        }
        return copy
    }

    /// The sha256 a checksum list gives for `fileName` ("HEX  name" or "HEX *name" lines).
    package static func digest(in list: String, for fileName: String) -> String? {
        for line in list.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2, parts[0].count == 64 else { continue }
            var listed = parts[1].trimmedWhitespace
            if listed.hasPrefix("*") { listed.removeFirst() }
            if listed == fileName { return parts[0].lowercased() }
        }
        return nil
    }
}

extension String {
    package func replacingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
