import CArchive
import Crypto
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Owns a libarchive write handle: a pax tar, compressed as the file name says, written to a descriptor.
final class ArchiveFileWriter {
    let handle: OpaquePointer
    let label: String

    init(descriptor: FileDescriptor, compression: ArchiveCompression, label: String) throws(NspawnError) {
        guard let handle = archive_write_new() else { fatalError("archive_write_new: out of memory") }
        self.handle = handle
        self.label = label
        // Full pax: times keep their nanoseconds, which restricted pax drops unless another record is needed.
        try check(archive_write_set_format_pax(handle))
        switch compression {
        case .zstd: try check(archive_write_add_filter_zstd(handle))
        case .gzip: try check(archive_write_add_filter_gzip(handle))
        case .xz: try check(archive_write_add_filter_xz(handle))
        case .none: break
        }
        // Whole 10 KiB records, as tar writes them; the last one is padded.
        try check(archive_write_set_bytes_in_last_block(handle, 1))
        try check(archive_write_open_fd(handle, descriptor.rawValue))
    }

    deinit { archive_write_free(handle) }

    private func check(_ code: Int32) throws(NspawnError) {
        if code < ARCHIVE_WARN { throw failure() }
    }

    func failure() -> NspawnError {
        ArchiveError(handle, code: ARCHIVE_FATAL, reading: false).nspawnError("cannot write '\(label)'")
    }

    func writeHeader(_ entry: OpaquePointer) throws(NspawnError) {
        try check(archive_write_header(handle, entry))
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(NspawnError) {
        var offset = 0
        while offset < bytes.count {
            let written = archive_write_data(handle, bytes.baseAddress! + offset, bytes.count - offset)
            if written <= 0 { throw failure() }
            offset += written
        }
    }

    /// A regular file of `bytes` at `path` (mode 0644, owned by root, now).
    func writeFile(_ path: String, _ bytes: [UInt8]) throws(NspawnError) {
        guard let entry = archive_entry_new() else { fatalError("archive_entry_new: out of memory") }
        defer { archive_entry_free(entry) }
        archive_entry_copy_pathname(entry, path)
        archive_entry_set_filetype(entry, S_IFREG)
        archive_entry_set_perm(entry, 0o644)
        archive_entry_set_size(entry, la_int64_t(bytes.count))
        archive_entry_set_mtime(entry, time(nil), 0)
        try writeHeader(entry)
        var failure: NspawnError?
        bytes.withUnsafeBytes { buffer in
            do throws(NspawnError) { try write(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    func close() throws(NspawnError) {
        try check(archive_write_close(handle))
    }
}

/// Walks a tree with libarchive's disk reader, physically (symlinks are entries, never followed),
/// without crossing mounts, with owners as numbers and no file flags.
final class DiskTreeReader {
    let handle: OpaquePointer
    let root: String

    init(root: String) throws(NspawnError) {
        guard let handle = archive_read_disk_new() else { fatalError("archive_read_disk_new: out of memory") }
        self.handle = handle
        self.root = root
        archive_read_disk_set_symlink_physical(handle)
        archive_read_disk_set_behavior(handle, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_FFLAGS | ARCHIVE_READDISK_NO_SPARSE)
        if archive_read_disk_open(handle, root) != ARCHIVE_OK { throw failure() }
    }

    deinit { archive_read_free(handle) }

    func failure() -> NspawnError {
        ArchiveError(handle, code: ARCHIVE_FATAL, reading: true).nspawnError("cannot read '\(root)'")
    }

    /// The next entry into `entry`, its path relative to the root ("" for the root itself); nil at the end.
    func next(into entry: OpaquePointer) throws(NspawnError) -> String? {
        let code = archive_read_next_header2(handle, entry)
        if code == ARCHIVE_EOF { return nil }
        if code < ARCHIVE_WARN { throw failure() }
        archive_read_disk_descend(handle)
        guard let path = archive_entry_pathname(entry).map({ String(cString: $0) }) else { throw .failed("cannot read '\(root)': an entry without a name") }
        if path == root { return "" }
        guard path.hasPrefix(root + "/") else { throw .failed("cannot read '\(root)': '\(path)' is outside it") }
        return String(path.dropFirst(root.count + 1))
    }

    /// The current entry's data, a chunk at a time.
    func readData(_ body: (UnsafeRawBufferPointer) throws(NspawnError) -> Void) throws(NspawnError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = archive_read_data(handle, buffer.baseAddress, buffer.count)
            if count < 0 { throw failure() }
            if count == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }
}

/// The digest of one part of a machine archive (its root, a snapshot): sha256 over one record
/// per file, sorted by path, so the tree on disk after an import gives the same digest as the
/// tree exported whatever order either was walked in. A record holds the path, type, mode,
/// owner, modification time, device, link target, xattrs and the sha256 of the data; not
/// access times, link counts or directory sizes, which no copy keeps.
struct TreeDigest {
    private var records: [(path: String, digest: SHA256.Digest)] = []
    /// Data digests by inode, for hard links whose data the archive holds once.
    private var contents: [String: SHA256.Digest] = [:]
    private(set) var files = 0
    private(set) var bytes: UInt64 = 0

    /// Adds `entry` at `path`; `data` feeds the file's data to the hasher it is given, if it has any.
    mutating func add(_ entry: OpaquePointer, path: String,
                      data: (_ hasher: inout SHA256) throws(NspawnError) -> Void) throws(NspawnError) {
        var record = SHA256()
        func field(_ text: String) { record.update(data: Array(text.utf8) + [0]) }
        let type = archive_entry_filetype(entry)
        field(path)
        field(String(type, radix: 8))
        field(String(archive_entry_perm(entry), radix: 8))
        field("\(archive_entry_uid(entry)):\(archive_entry_gid(entry))")
        // Whole seconds: a tar header without a pax time record keeps no more.
        if type != S_IFLNK { field("\(archive_entry_mtime(entry))") }
        if type == S_IFCHR || type == S_IFBLK { field("\(archive_entry_rdev(entry))") }
        if let target = archive_entry_symlink(entry) { field(String(cString: target)) }
        var xattrs: [String] = []
        archive_entry_xattr_reset(entry)
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            xattrs.append(String(cString: name) + "=" + encodeHex(bytes))
        }
        for xattr in xattrs.sorted() { field(xattr) }
        if type == S_IFREG {
            let inode = "\(archive_entry_dev(entry)):\(archive_entry_ino64(entry))"
            let content: SHA256.Digest
            if archive_entry_nlink(entry) > 1, let known = contents[inode] {
                content = known
            } else {
                var hasher = SHA256()
                try data(&hasher)
                content = hasher.finalize()
                if archive_entry_nlink(entry) > 1 { contents[inode] = content }
                bytes += UInt64(max(0, archive_entry_size(entry)))
            }
            record.update(data: Array(content))
        }
        records.append((path, record.finalize()))
        files += 1
    }

    func finalize() -> String {
        var whole = SHA256()
        for (path, digest) in records.sorted(by: { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }) {
            whole.update(data: Array(path.utf8) + [0])
            whole.update(data: Array(digest))
        }
        return encodeHex(Array(whole.finalize()))
    }

    /// The digest of the tree at `root` as it is on disk.
    static func of(_ root: String) throws(NspawnError) -> TreeDigest {
        let reader = try DiskTreeReader(root: root)
        guard let entry = archive_entry_new() else { fatalError("archive_entry_new: out of memory") }
        defer { archive_entry_free(entry) }
        var digest = TreeDigest()
        while let path = try reader.next(into: entry) {
            try digest.add(entry, path: path) { (hasher) throws(NspawnError) in
                try reader.readData { hasher.update(data: $0) }
            }
        }
        return digest
    }
}
