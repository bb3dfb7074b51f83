import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where an image imported from an OCI source came from, kept on its root directory as the
/// extended attribute `user.nspawnctl.oci` (JSON), so it travels with the root through renames
/// and clones, and `getfattr` shows it.
public struct OCIOrigin: Sendable, Codable, Equatable {
    public var reference: String
    public var manifestDigest: String?
    public var platform: String

    package static let attribute = "user.nspawnctl.oci"

    package init(reference: String, manifestDigest: String?, platform: String) {
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.platform = platform
    }

    package func record(on root: Directory) throws(Errno) {
        let bytes = (try? WireJSON.encoder(pretty: false).encode(self)).map(Array.init) ?? []
        try ExtendedAttributes.descriptor(root.descriptor).set(Self.attribute, bytes)
    }

    /// nil when none was recorded, the file system keeps no user attributes, or it does not parse.
    package static func read(from root: Directory) -> OCIOrigin? {
        guard let bytes = try? ExtendedAttributes.descriptor(root.descriptor).value(attribute) else { return nil }
        return try? WireJSON.decoder().decode(OCIOrigin.self, from: Data(bytes))
    }

    /// The record on the directory image at `path`, if any; a symlink there is not followed.
    package static func read(imagePath path: String) -> OCIOrigin? {
        guard let root = try? Directory(path: path) else { return nil }
        return read(from: root)
    }
}
