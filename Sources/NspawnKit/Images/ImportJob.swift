#if canImport(Glibc)
import Glibc
#endif

/// An import `nspawnctl-images` runs as a child: the CLI's `import` and `bootstrap` on the
/// direct path, what `POST /v1/images` starts, and a manifest's image from a recipe, a URL or
/// a file. Its argv is built here and nowhere else.
public enum ImportJob: Sendable, Equatable {
    case url(String, checksum: String?, signature: String?, keyring: String?, force: Bool)
    /// A recipe's tarball, downloaded from its mirror or read from `tarball` on this host.
    case recipe(String, mirror: String?, tarball: String?, checksum: String?, signature: String?, keyring: String?, verify: Bool, force: Bool)
    /// A tarball on this host, or `-` for the caller's stdin.
    case file(String, checksum: String?, signature: String?, keyring: String?, force: Bool)
    /// An image server's image, `images:DISTRIBUTION/RELEASE[/VARIANT]`, from `remote` or the configured server.
    case stream(String, remote: String?, force: Bool)

    /// Options use the `--name=value` form and positionals follow `--`, so no value is ever
    /// read as an option. Only a recipe may leave the name to the helper (the next free childNN).
    public func arguments(name: MachineName?) -> [String] {
        func verification(_ checksum: String?, _ signature: String?, _ keyring: String?, force: Bool) -> [String] {
            var argv: [String] = []
            if let checksum { argv.append("--checksum=\(checksum)") }
            if let signature { argv.append("--signature=\(signature)") }
            if let keyring { argv.append("--keyring=\(keyring)") }
            if force { argv.append("--force") }
            return argv
        }
        switch self {
        case .url(let source, let checksum, let signature, let keyring, let force),
             .file(let source, let checksum, let signature, let keyring, let force):
            return ["import", "--json"] + verification(checksum, signature, keyring, force: force)
                + ["--", name?.rawValue ?? "", source]
        case .stream(let source, let remote, let force):
            return ["import", "--json"] + (remote.map { ["--remote=\($0)"] } ?? []) + (force ? ["--force"] : [])
                + ["--", name?.rawValue ?? "", source]
        case .recipe(let recipe, let mirror, let tarball, let checksum, let signature, let keyring, let verify, let force):
            var argv = ["bootstrap", "--json"]
            if let mirror { argv.append("--mirror=\(mirror)") }
            if let tarball { argv.append("--tarball=\(tarball)") }
            if !verify { argv.append("--no-verify") }
            argv += verification(checksum, signature, keyring, force: force)
            return argv + ["--", recipe] + (name.map { [$0.rawValue] } ?? [])
        }
    }

    /// What an operation and a manifest's report call the source.
    public var source: String {
        switch self {
        case .url(let url, _, _, _, _): url
        case .recipe(let recipe, _, _, _, _, _, _, _): "recipe:\(recipe)"
        case .file(let path, _, _, _, _): path
        case .stream(let source, _, _): source
        }
    }

    /// Reads the caller's stdin, which the child is then given.
    public var readsStandardInput: Bool {
        guard case .file(let source, _, _, _, _) = self else { return false }
        if source == "-" { return true }
        if case .oci(let oci) = ImageSource(source) { return oci.readsStandardInput }
        return false
    }
}

/// `plan`, `plan --explain` and `apply` as `nspawnctl-images` runs them, the manifest's text on
/// its stdin: only that helper links the YAML parser. Its argv is built here and nowhere else.
public enum ManifestJob: Sendable, Equatable {
    case plan(prune: Bool)
    case explain(machine: MachineName)
    case apply(prune: Bool, keepGoing: Bool)

    /// `file` is the name errors give the manifest, and where its relative paths start.
    public func arguments(file: String) -> [String] {
        switch self {
        case .plan(let prune): ["plan", "--json", "--manifest-name=\(file)"] + (prune ? ["--prune"] : [])
        case .explain(let machine): ["plan", "--json", "--manifest-name=\(file)", "--explain=\(machine.rawValue)"]
        case .apply(let prune, let keepGoing):
            ["apply", "--json", "--manifest-name=\(file)"] + (prune ? ["--prune"] : []) + (keepGoing ? ["--keep-going"] : [])
        }
    }
}

/// `nspawnctl-images`, installed next to nspawnctl and nspawnd (as git runs git-VERB).
public enum ImagesHelperProgram {
    public static let executableName = "nspawnctl-images"

    /// The helper beside the running executable.
    public static var path: String { besideThisProgram(executableName) }
}

/// `nspawnctl` itself, beside nspawnd: what a unit we write runs (a resize's confirm timer).
public enum NspawnctlProgram {
    public static let executableName = "nspawnctl"
    public static var path: String { besideThisProgram(executableName) }
}

/// nspawnctl, nspawnctl-images and nspawnd are installed side by side: `name` in the directory
/// of the running executable.
func besideThisProgram(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return name }
    let exe = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = exe.lastIndex(of: "/") else { return name }
    return String(exe[...slash]) + name
}
