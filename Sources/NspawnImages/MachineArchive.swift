import CArchive
import CLinux
import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The archive of a whole machine, format 1: one pax tar (zstd, gzip or xz) of
///
///     .nspawnctl-export.json          first: format, name, source host, time
///     rootfs/…                        the root, owners numeric, xattrs and ACLs kept
///     snapshots/SNAP/…                with --snapshots, each snapshot's tree
///     .nspawnctl-export-index.json    last: host-side state, snapshot records, and per part
///                                     (rootfs, snapshot:SNAP) its files, bytes and digest
///
/// A part's digest is `TreeDigest`'s: an import extracts the whole archive into a temporary
/// directory, digests what landed there, and refuses the archive on any difference.
public enum MachineArchive {
    public static let format = 1
    static let headerName = ".nspawnctl-export.json"
    static let indexName = ".nspawnctl-export-index.json"
    static let rootDirectory = "rootfs"
    static let snapshotsDirectory = "snapshots"
    /// The header and the index are small; more is not an archive of ours.
    static let metadataLimit = 4 << 20

    struct Header: Codable {
        var format: Int
        var name: String
        var host: String
        var created: Date
    }

    struct Index: Codable {
        var format: Int
        var name: String
        var host: String
        var created: Date
        /// The root was read from a snapshot taken because the machine ran.
        var fromSnapshot: Bool
        var hostState: MachineHostState
        var snapshots: [SnapshotInfo]
        var parts: [ExportPart]
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Export

    /// Writes machine `name` to `output` (`label` names it in messages).
    public static func export(_ name: MachineName, to output: FileDescriptor, label: String, compression: ArchiveCompression,
                              withSnapshots: Bool, isCancelled: @escaping () -> Bool = { false }) throws -> ExportResult {
        let started = ContinuousClock.now
        let source = try MachineManager.prepareExport(name, withSnapshots: withSnapshots)
        defer { source.finish() }
        let writer = try ArchiveFileWriter(descriptor: output, compression: compression, label: label)
        let created = Date()
        let host = hostName()
        try writer.writeFile(headerName, try encode(Header(format: format, name: name.rawValue, host: host, created: created)))
        var parts = [try writeTree(source.rootPath, as: rootDirectory, part: "rootfs", to: writer, isCancelled: isCancelled)]
        for snapshot in source.snapshots {
            parts.append(try writeTree(snapshot.path, as: "\(snapshotsDirectory)/\(snapshot.name)", part: "snapshot:\(snapshot.name)",
                                       to: writer, isCancelled: isCancelled))
        }
        let index = Index(format: format, name: name.rawValue, host: host, created: created, fromSnapshot: source.temporarySnapshot != nil,
                          hostState: source.host, snapshots: source.snapshots, parts: parts)
        try writer.writeFile(indexName, try encode(index))
        try writer.close()
        let size = (try? output.status()).flatMap { ($0.st_mode & S_IFMT) == S_IFREG ? UInt64($0.st_size) : nil }
        return ExportResult(name: name.rawValue, file: label, format: format, compression: compression.rawValue, archiveBytes: size,
                            fromSnapshot: index.fromSnapshot, hostState: source.host.parts, snapshots: source.snapshots.map(\.name),
                            parts: parts, seconds: (ContinuousClock.now - started).seconds)
    }

    static func encode<Value: Encodable>(_ value: Value) throws(NspawnError) -> [UInt8] {
        do { return Array(try WireJSON.encoder().encode(value)) + [0x0a] } catch {
            throw .failed("cannot encode the archive's metadata: \(error)")
        }
    }

    /// Archives the tree at `path` under `prefix`, hard links once, and digests it as it goes.
    static func writeTree(_ path: String, as prefix: String, part: String, to writer: ArchiveFileWriter,
                          isCancelled: () -> Bool) throws(NspawnError) -> ExportPart {
        let reader = try DiskTreeReader(root: path)
        guard let entry = archive_entry_new(), let resolver = archive_entry_linkresolver_new() else { fatalError("libarchive: out of memory") }
        defer {
            archive_entry_free(entry)
            archive_entry_linkresolver_free(resolver)
        }
        archive_entry_linkresolver_set_strategy(resolver, ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE)
        var digest = TreeDigest()
        while let relative = try reader.next(into: entry) {
            if isCancelled() { throw .cancelled("export cancelled") }
            archive_entry_copy_pathname(entry, relative.isEmpty ? prefix : "\(prefix)/\(relative)")
            var linked: OpaquePointer? = entry
            var spare: OpaquePointer?
            // The tar strategy keeps the entry; a later name of the same inode becomes a link with no data.
            archive_entry_linkify(resolver, &linked, &spare)
            try writer.writeHeader(entry)
            let isLink = archive_entry_hardlink(entry) != nil
            try digest.add(entry, path: relative) { (hasher) throws(NspawnError) in
                guard !isLink else { return }
                try reader.readData { (chunk) throws(NspawnError) in
                    hasher.update(data: chunk)
                    try writer.write(chunk)
                }
            }
        }
        return ExportPart(name: part, files: digest.files, bytes: digest.bytes, sha256: digest.finalize())
    }

    // MARK: Import

    /// What an import found in a machine archive, once every part checked out.
    struct Extracted {
        var index: Index
        var rootPath: String
    }

    /// Whether the tree an import extracted is one of these archives.
    static func isArchive(_ work: Directory) -> Bool {
        (try? work.status(headerName)) != nil
    }

    /// Reads the index of the archive extracted in `work` (at `workPath`) and checks every part's
    /// digest against the tree on disk. Nothing else may be there.
    static func verify(_ work: Directory, workPath: String, source: String) throws(NspawnError) -> Extracted {
        func refuse(_ reason: String) -> NspawnError { .verificationFailed("'\(source.escapedForMessage)' is not a whole nspawnctl machine archive: \(reason)") }
        let header: Header = try read(headerName, in: work, source: source)
        guard header.format == format else {
            throw .invalidArgument("'\(source.escapedForMessage)' is a machine archive of format \(header.format); this nspawnctl reads format \(format)")
        }
        guard (try? work.status(indexName)) != nil else { throw refuse("its index (\(indexName)) is missing; it was cut short") }
        let index: Index = try read(indexName, in: work, source: source)
        guard index.format == format, index.name == header.name, index.created == header.created else {
            throw refuse("its index does not belong to its header")
        }
        var expected: Set<String> = [headerName, indexName, rootDirectory]
        if !index.snapshots.isEmpty { expected.insert(snapshotsDirectory) }
        let found: [String]
        do throws(Errno) { found = try work.entries() } catch { throw .system("cannot list '\(workPath)'", error) }
        if let stray = found.first(where: { !expected.contains($0) }) { throw refuse("'\(stray.escapedForMessage)' is not part of the format") }
        var parts: [(String, String)] = [("rootfs", "\(workPath)/\(rootDirectory)")]
        for snapshot in index.snapshots {
            try SnapshotInfo.check(snapshot.name)
            parts.append(("snapshot:\(snapshot.name)", "\(workPath)/\(snapshotsDirectory)/\(snapshot.name)"))
        }
        guard Set(index.parts.map(\.name)) == Set(parts.map(\.0)), index.parts.count == parts.count else {
            throw refuse("its index lists other parts than it holds")
        }
        for (part, path) in parts {
            guard access(path, F_OK) == 0 else { throw refuse("part \(part) is missing") }
            let digest = try TreeDigest.of(path)
            guard let listed = index.parts.first(where: { $0.name == part }), listed.sha256 == digest.finalize() else {
                throw .verificationFailed("'\(source.escapedForMessage)': part \(part) does not match its digest; the archive was changed or damaged")
            }
        }
        return Extracted(index: index, rootPath: "\(workPath)/\(rootDirectory)")
    }

    static func read<Value: Decodable>(_ name: String, in work: Directory, source: String) throws(NspawnError) -> Value {
        let bytes: [UInt8]
        do throws(Errno) {
            let file = try work.openFileBeneath(name)
            defer { try? file.close() }
            bytes = try file.readAll(limit: metadataLimit)
        } catch {
            throw .system("cannot read '\(name)' of '\(source.escapedForMessage)'", error)
        }
        do { return try WireJSON.decoder().decode(Value.self, from: Data(bytes)) } catch {
            throw .verificationFailed("'\(source.escapedForMessage)': '\(name)' is not what nspawnctl writes: \(error)")
        }
    }
}

/// Where `export` writes: an unnamed file in the target's directory, named only once the
/// archive is whole (mode 0600: it holds the machine's secrets), or a descriptor given.
/// One thread uses it at a time: the export, then its commit.
public final class ArchiveOutput: @unchecked Sendable {
    public let descriptor: FileDescriptor
    public let label: String
    private let directory: Directory?
    private let name: String?

    /// The file `path`, which must not exist yet.
    public init(path: String) throws(NspawnError) {
        let (parent, base) = AtomicFile.split(path)
        guard !base.isEmpty, base != ".", base != ".." else { throw .invalidArgument("invalid archive file '\(path.escapedForMessage)'") }
        label = path
        name = base
        do throws(Errno) {
            let directory = try Directory(path: parent.isEmpty ? "." : parent)
            if try directory.status(base) != nil { throw Errno.fileExists }
            let fd = nspawnctl_open_tmpfile(directory.descriptor.rawValue)
            if fd < 0 { throw Errno.last }
            descriptor = FileDescriptor(rawValue: fd)
            self.directory = directory
        } catch .fileExists {
            throw .system("cannot write '\(path)': it exists; remove it or choose another name", .fileExists)
        } catch {
            throw .system("cannot write '\(path)'", error)
        }
    }

    /// A descriptor someone else owns, such as standard output.
    public init(descriptor: FileDescriptor, label: String) {
        self.descriptor = descriptor
        self.label = label
        directory = nil
        name = nil
    }

    /// Gives the file its name: before this, nothing of it is visible.
    public func commit() throws(NspawnError) {
        guard let directory, let name else { return }
        do throws(Errno) {
            if fsync(descriptor.rawValue) != 0 { throw Errno.last }
            if nspawnctl_link_tmpfile(descriptor.rawValue, directory.descriptor.rawValue, name) != 0 { throw Errno.last }
            try directory.sync()
        } catch {
            throw .system("cannot name the archive '\(label)'", error)
        }
    }

    deinit { if directory != nil { try? descriptor.close() } }
}
