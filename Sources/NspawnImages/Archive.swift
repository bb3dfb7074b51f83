import CArchive
import NspawnKit
import SystemPackage

/// A libarchive failure: the return code, the errno it recorded and its own message.
struct ArchiveError: Error, Sendable, CustomStringConvertible {
    var code: Int32
    var errno: Int32
    var message: String
    /// Whether reading the archive failed (corrupt, truncated) rather than writing to disk.
    var reading: Bool

    init(_ handle: OpaquePointer, code: Int32, reading: Bool) {
        self.code = code
        self.reading = reading
        self.errno = archive_errno(handle)
        let text = archive_error_string(handle).map { String(cString: $0) } ?? "archive error \(code)"
        // libarchive capitalises ("Cannot extract through symlink …"); our messages are lowercase.
        self.message = text.prefix(1).lowercased() + text.dropFirst()
    }

    var description: String { message }

    /// `what` with libarchive's message, and its errno as the cause when it recorded one.
    func nspawnError(_ what: String) -> NspawnError {
        errno > 0 ? .system("\(what): \(message)", Errno(rawValue: errno)) : .failed("\(what): \(message)")
    }
}

/// One header of an archive, borrowed from its reader until the next `nextHeader()`.
struct ArchiveEntry {
    let handle: OpaquePointer

    var pathname: String? { archive_entry_pathname(handle).map { String(cString: $0) } }
    var hardlink: String? { archive_entry_hardlink(handle).map { String(cString: $0) } }
    var symlink: String? { archive_entry_symlink(handle).map { String(cString: $0) } }

    /// The file type bits of the mode (S_IFREG, S_IFDIR, S_IFLNK…).
    var fileType: mode_t { archive_entry_filetype(handle) }
    /// The size of the member's data (0 for links and directories).
    var size: Int64 { archive_entry_size(handle) }

    func setPathname(_ path: String) { archive_entry_copy_pathname(handle, path) }
    func setHardlink(_ path: String) { archive_entry_copy_hardlink(handle, path) }
}

/// A copy of a header that outlives its reader's next `nextHeader()`, for another thread to write.
final class OwnedArchiveEntry {
    let entry: ArchiveEntry

    init(copying source: ArchiveEntry) {
        guard let handle = archive_entry_clone(source.handle) else { fatalError("archive_entry_clone: out of memory") }
        entry = ArchiveEntry(handle: handle)
    }

    deinit { archive_entry_free(entry.handle) }
}

/// Hands libarchive the next chunk of raw input: (bytes, count), 0 at the end, -1 on failure.
final class ArchiveChunkSource {
    let next: () -> (UnsafeRawPointer?, Int)
    init(_ next: @escaping () -> (UnsafeRawPointer?, Int)) { self.next = next }
}

/// Owns a libarchive read handle.
final class ArchiveReader {
    let handle: OpaquePointer

    /// What the reader may meet: `.decompress` reads any compression and hands out the plain stream;
    /// `.tar` reads an uncompressed tar stream entry by entry.
    enum Mode { case decompress, tar }

    init(_ mode: Mode) {
        guard let handle = archive_read_new() else { fatalError("archive_read_new: out of memory") }
        self.handle = handle
        switch mode {
        case .decompress:
            // Only filters libarchive runs in-process; "all" would also run external lrzip/lzop programs.
            archive_read_support_filter_gzip(handle)
            archive_read_support_filter_bzip2(handle)
            archive_read_support_filter_xz(handle)
            archive_read_support_filter_lzma(handle)
            archive_read_support_filter_zstd(handle)
            archive_read_support_filter_lz4(handle)
            archive_read_support_format_raw(handle)
        case .tar:
            archive_read_support_filter_none(handle)
            archive_read_support_format_tar(handle)
            archive_read_support_format_gnutar(handle)
        }
    }

    deinit { archive_read_free(handle) }

    private func check(_ code: Int32) throws(ArchiveError) {
        if code < ARCHIVE_WARN { throw ArchiveError(handle, code: code, reading: true) }
    }

    func open(fd: FileDescriptor, blockSize: Int) throws(ArchiveError) {
        try check(archive_read_open_fd(handle, fd.rawValue, blockSize))
    }

    private var chunkSource: ArchiveChunkSource?

    /// Opens over a chunk source, which the reader keeps alive.
    func open(chunks: ArchiveChunkSource) throws(ArchiveError) {
        chunkSource = chunks
        let context = Unmanaged.passUnretained(chunks).toOpaque()
        try check(archive_read_open(handle, context, nil, { _, context, bufferOut in
            let source = Unmanaged<ArchiveChunkSource>.fromOpaque(context!).takeUnretainedValue()
            let (pointer, count) = source.next()
            bufferOut?.pointee = pointer
            return count
        }, nil))
    }

    /// The next header, or nil at the end of the archive.
    func nextHeader() throws(ArchiveError) -> ArchiveEntry? {
        var entry: OpaquePointer?
        let code = archive_read_next_header(handle, &entry)
        if code == ARCHIVE_EOF { return nil }
        try check(code)
        guard let entry else { throw ArchiveError(handle, code: ARCHIVE_FATAL, reading: true) }
        return ArchiveEntry(handle: entry)
    }

    /// Reads data of the current entry into `buffer`; 0 at its end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ArchiveError) -> Int {
        let count = archive_read_data(handle, buffer.baseAddress, buffer.count)
        if count < 0 { throw ArchiveError(handle, code: Int32(count), reading: true) }
        return count
    }

    /// The next block of the current entry's data and its offset in the file (gaps are holes);
    /// nil at the entry's end. The bytes stay valid until the next read.
    func readBlock() throws(ArchiveError) -> (UnsafeRawBufferPointer, Int64)? {
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        let code = archive_read_data_block(handle, &buffer, &size, &offset)
        if code == ARCHIVE_EOF { return nil }
        if code < ARCHIVE_OK { throw ArchiveError(handle, code: code, reading: true) }
        return (UnsafeRawBufferPointer(start: buffer, count: size), offset)
    }

    /// The compression filters found, outermost first, e.g. ["zstd"]; empty when uncompressed.
    var filterNames: [String] {
        let count = archive_filter_count(handle)
        guard count > 1 else { return [] }
        return (0..<(count - 1)).compactMap { archive_filter_name(handle, $0).map { String(cString: $0) } }
    }
}

/// Owns a libarchive write-to-disk handle. Paths are relative to the calling thread's working directory.
final class ArchiveDiskWriter {
    let handle: OpaquePointer

    init(flags: Int32) {
        guard let handle = archive_write_disk_new() else { fatalError("archive_write_disk_new: out of memory") }
        self.handle = handle
        archive_write_disk_set_options(handle, flags)
        // No user/group lookup: owners stay numeric, as the image's own /etc/passwd means them.
    }

    deinit { archive_write_free(handle) }

    /// Keeps owners, modes, times, ACLs and xattrs (security.capability too), and refuses
    /// absolute paths, `..` and extraction through symlinks.
    static let faithfulAndSecure: Int32 =
        ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_ACL
        | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT
        | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS

    /// Writes the header; a warning (e.g. an xattr the file system refused) is an error here,
    /// because a silently incomplete image is worse than none.
    func writeHeader(_ entry: ArchiveEntry) throws(ArchiveError) {
        let code = archive_write_header(handle, entry.handle)
        if code != ARCHIVE_OK { throw ArchiveError(handle, code: code, reading: false) }
    }

    /// Copies the current entry's data from `reader`, keeping holes of sparse files.
    func copyData(from reader: ArchiveReader) throws(ArchiveError) {
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        while true {
            let code = archive_read_data_block(reader.handle, &buffer, &size, &offset)
            if code == ARCHIVE_EOF { return }
            if code < ARCHIVE_OK { throw ArchiveError(reader.handle, code: code, reading: true) }
            let written = archive_write_data_block(handle, buffer, size, offset)
            if written < ARCHIVE_OK { throw ArchiveError(handle, code: Int32(written), reading: false) }
        }
    }

    /// Writes one block of the current entry's data at `offset`.
    func writeBlock(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(ArchiveError) {
        let written = archive_write_data_block(handle, bytes.baseAddress, bytes.count, offset)
        if written < ARCHIVE_OK { throw ArchiveError(handle, code: Int32(written), reading: false) }
    }

    func finishEntry() throws(ArchiveError) {
        let code = archive_write_finish_entry(handle)
        if code != ARCHIVE_OK { throw ArchiveError(handle, code: code, reading: false) }
    }

    /// Applies deferred directory modes and times.
    func close() throws(ArchiveError) {
        let code = archive_write_close(handle)
        if code != ARCHIVE_OK { throw ArchiveError(handle, code: code, reading: false) }
    }
}
