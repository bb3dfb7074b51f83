/// How large a manifest may be, and reading one from a host path with that limit. Here, not in
/// NspawnProvisioning: nspawnctl reads a manifest to send it to nspawnd without linking the
/// YAML parser.
public enum ManifestLimits {
    public static let maximumSize = 4 * 1024 * 1024

    public static func readFile(_ path: String) throws(NspawnError) -> String {
        guard let bytes = try readHostFile(path, limit: maximumSize) else {
            throw .invalidArgument("cannot read the manifest '\(path.escapedForMessage)': no such file")
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
