import Crypto
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Reads an image layout's files and blobs without leaving it: every path is resolved below the
/// layout through real directories only, and only regular files are read.
struct BlobReader {
    let layout: Directory
    let label: String

    /// A file of the layout (`index.json`, a docker archive's paths); nil when it is missing.
    func readFile(_ path: String, limit: Int = OCIImporter.documentLimit) throws(NspawnError) -> [UInt8]? {
        let fd: FileDescriptor
        do throws(NspawnError) { fd = try openFile(path) } catch .badArchive(_, _, let reason) where reason == Self.missing {
            return nil
        }
        defer { try? fd.close() }
        do throws(Errno) { return try fd.readAll(limit: limit) } catch {
            throw .badArchive(source: label, entry: path, reason: error == .fileTooLarge ? "larger than \(limit) bytes" : "cannot read: \(error)")
        }
    }

    /// A document blob, checked against its descriptor's digest and size.
    func readDocument(_ descriptor: OCIDescriptor) throws(NspawnError) -> [UInt8] {
        let digest = try OCIDigest(descriptor.digest, source: label)
        guard descriptor.size >= 0, descriptor.size <= OCIImporter.documentLimit else {
            throw .badArchive(source: label, entry: digest.description, reason: "a document of \(descriptor.size) bytes")
        }
        let fd = try openBlob(digest)
        defer { try? fd.close() }
        let bytes: [UInt8]
        do throws(Errno) { bytes = try fd.readAll(limit: OCIImporter.documentLimit) } catch {
            throw .badArchive(source: label, entry: digest.description, reason: "cannot read: \(error)")
        }
        let got = encodeHex(Array(SHA256.hash(data: bytes)))
        guard got == digest.hex, bytes.count == descriptor.size else {
            throw .verificationFailed("digest mismatch in '\(label.escapedForMessage)': blob \(digest) holds sha256:\(got) (\(bytes.count) bytes, \(descriptor.size) expected)")
        }
        return bytes
    }

    func openBlob(_ digest: OCIDigest) throws(NspawnError) -> FileDescriptor {
        do throws(NspawnError) { return try openFile("blobs/sha256/\(digest.hex)") } catch .badArchive(_, _, let reason) where reason == Self.missing {
            throw .badArchive(source: label, entry: digest.description, reason: "the blob is missing")
        }
    }

    static let missing = "missing"

    func openFile(_ path: String) throws(NspawnError) -> FileDescriptor {
        if let reason = ExtractionPipeline.refusal(forMemberPath: path) {
            throw .badArchive(source: label, entry: path, reason: reason)
        }
        let fd: FileDescriptor
        do throws(Errno) {
            fd = try layout.openFileBeneath(path)
        } catch .noSuchFileOrDirectory {
            throw .badArchive(source: label, entry: path, reason: Self.missing)
        } catch {
            throw .badArchive(source: label, entry: path, reason: "cannot open: \(error)")
        }
        let st: stat
        do throws(Errno) { st = try fd.status() } catch {
            try? fd.close()
            throw .badArchive(source: label, entry: path, reason: "cannot read: \(error)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            try? fd.close()
            throw .badArchive(source: label, entry: path, reason: "not a regular file")
        }
        return fd
    }
}

/// Users as the image's own /etc/passwd names them, so User= means the same inside.
struct ImageUsers {
    let root: Directory

    /// The name for an OCI `User` (user, uid, user:group or uid:gid), and a note on what could not be kept.
    func resolve(_ user: String) -> (name: String?, note: String?) {
        let parts = user.split(separator: ":", maxSplits: 1)
        let account = parts.first.map(String.init) ?? user
        let groupNote = parts.count > 1 ? "User \(user.escapedForMessage): nspawn's User= takes no group; the user's own group applies" : nil
        let image = ContainedRoot(root: root)
        // systemd-nspawn looks the user up by running the image's own getent.
        guard ["/usr/bin/getent", "/bin/getent", "/usr/sbin/getent", "/sbin/getent"].contains(where: image.exists) else {
            return (nil, "User \(user.escapedForMessage): the image has no getent, which systemd-nspawn runs to look users up; the payload runs as root")
        }
        let passwd = (try? image.read("/etc/passwd", limit: 4 << 20)).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let entries = passwd.split(separator: "\n").map { $0.split(separator: ":", omittingEmptySubsequences: false) }.filter { $0.count >= 3 }
        if UInt32(account) != nil {
            if let entry = entries.first(where: { $0[2] == account }) { return (String(entry[0]), groupNote) }
            return (nil, "User \(user.escapedForMessage): uid \(account) has no entry in the image's /etc/passwd, which nspawn's User= needs; the payload runs as root")
        }
        if entries.contains(where: { $0[0] == account }) { return (account, groupNote) }
        return (nil, "User \(user.escapedForMessage): no such user in the image's /etc/passwd; the payload runs as root")
    }
}
