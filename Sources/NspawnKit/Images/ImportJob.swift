#if canImport(Glibc)
import Glibc
#endif

/// An import `nspawnctl-images` runs as a child: what `POST /v1/images` starts, and a
/// manifest's image from a recipe, a URL or a file. Its argv is built here and nowhere else.
public enum ImportJob: Sendable, Equatable {
    case url(String, checksum: String?, signature: String?, keyring: String?, force: Bool)
    case recipe(String, mirror: String?, checksum: String?, signature: String?, keyring: String?, verify: Bool, force: Bool)
    /// A tarball on this host: a manifest's `image: {file: PATH}`.
    case file(String)

    /// How the child reports: JSON lines on stderr (progress, then the error) and the result
    /// on stdout, for a parent that reads them; or nothing but its error.
    public enum Output: Sendable {
        case json
        case quiet

        var flag: String { self == .json ? "--json" : "--quiet" }
    }

    /// Options use the `--name=value` form and positionals follow `--`, so no value is ever
    /// read as an option.
    public func arguments(name: MachineName, output: Output = .json) -> [String] {
        switch self {
        case .url(let url, let checksum, let signature, let keyring, let force):
            var argv = ["import", output.flag]
            if let checksum { argv.append("--checksum=\(checksum)") }
            if let signature { argv.append("--signature=\(signature)") }
            if let keyring { argv.append("--keyring=\(keyring)") }
            if force { argv.append("--force") }
            return argv + ["--", name.rawValue, url]
        case .recipe(let recipe, let mirror, let checksum, let signature, let keyring, let verify, let force):
            var argv = ["bootstrap", output.flag]
            if let mirror { argv.append("--mirror=\(mirror)") }
            if let checksum { argv.append("--checksum=\(checksum)") }
            if let signature { argv.append("--signature=\(signature)") }
            if let keyring { argv.append("--keyring=\(keyring)") }
            if !verify { argv.append("--no-verify") }
            if force { argv.append("--force") }
            return argv + ["--", recipe, name.rawValue]
        case .file(let path):
            return ["import", output.flag, "--", name.rawValue, path]
        }
    }

    public var source: String {
        switch self {
        case .url(let url, _, _, _, _): url
        case .recipe(let recipe, _, _, _, _, _, _): "recipe:\(recipe)"
        case .file(let path): path
        }
    }
}

/// `nspawnctl-images`, installed next to nspawnctl and nspawnd (as git runs git-VERB).
public enum ImagesHelperProgram {
    public static let executableName = "nspawnctl-images"

    /// The helper beside the running executable.
    public static var path: String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return executableName }
        let exe = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = exe.lastIndex(of: "/") else { return executableName }
        return String(exe[...slash]) + executableName
    }
}
