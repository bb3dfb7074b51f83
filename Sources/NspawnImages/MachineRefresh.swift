import CLinux
import Crypto
import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `copy-machine --refresh`: a file-level delta over one stream (ssh's stdin and stdout).
///
///     receiver → sender   {"ready": true} once it may refresh the machine, or {"error": …}
///     sender → receiver   a header line, then one line per record of the source's root
///     receiver → sender   {"need": [indexes]}: the regular files it does not have as they are
///     sender → receiver   each needed file's bytes, then their sha256 (32 bytes)
///     receiver → sender   {"result": …}, or {"error": …} at any point
///
/// The receiver builds the new root beside the old one: unchanged files hard-linked from it,
/// the rest made from the records and the stream; it holds the new tree's records against
/// the sender's before one exchange puts it in place, so a refresh that fails or is killed
/// before the exchange leaves the old machine as it was (the work directory is an import's,
/// which the next import or refresh of the name removes if a kill left it). A failure to
/// update the host side after it says that the files are refreshed and the host side is not.
enum MachineRefresh {
    static let format = 1
    static let lineLimit = 1 << 20
    static let recordLimit = 10_000_000

    struct Header: Codable {
        var refresh: Int
        var name: String
        var hostState: MachineHostState
        var records: Int
    }

    struct Reply: Codable {
        var ready: Bool?
        var need: [Int]?
        var result: RefreshResult?
        var error: ErrorBody.Detail?
    }

    // One coder for the whole stream: making one a line costs more than the line.
    private static let encoder = WireJSON.encoder(pretty: false)
    private static let decoder = WireJSON.decoder()

    static func encodeLine<Value: Encodable>(_ value: Value) throws(NspawnError) -> [UInt8] {
        do { return Array(try encoder.encode(value)) + [UInt8(ascii: "\n")] } catch {
            throw .failed("cannot encode a refresh message: \(error)")
        }
    }

    static func decodeLine<Value: Decodable>(_ line: [UInt8], as: Value.Type = Value.self, what: String) throws(NspawnError) -> Value {
        do { return try decoder.decode(Value.self, from: Data(line)) } catch {
            throw .invalidArgument("a refresh sent a malformed \(what): \(String(decoding: line.prefix(200), as: UTF8.self).escapedForMessage)")
        }
    }
}

// MARK: - The stream

/// Buffered lines and exact byte counts from a socket or pipe; counts what it read.
final class StreamReader {
    let fd: FileDescriptor
    private var buffer: [UInt8] = []
    private var start = 0
    private(set) var total: Int64 = 0

    init(_ fd: FileDescriptor) { self.fd = fd }

    private func fill() throws(NspawnError) -> Bool {
        // What was read is dropped, so a long list is never held whole.
        if start > 0 && (start == buffer.count || start >= 1 << 20) {
            buffer.removeFirst(start)
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        let count: Int
        switch chunk.withUnsafeMutableBytes({ buffer in Result { () throws(Errno) -> Int in try fd.readSome(into: buffer) } }) {
        case .success(let read): count = read
        case .failure(let error): throw .system("cannot read the refresh stream", error)
        }
        if count == 0 { return false }
        total += Int64(count)
        buffer.append(contentsOf: chunk[..<count])
        return true
    }

    /// The next line without its newline; nil at a clean end.
    func line(limit: Int = MachineRefresh.lineLimit) throws(NspawnError) -> [UInt8]? {
        var searched = 0
        while true {
            if let newline = buffer[(start + searched)...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                return line
            }
            searched = buffer.count - start
            guard searched <= limit else { throw .invalidArgument("a refresh line is longer than \(limit) bytes") }
            guard try fill() else {
                if start == buffer.count { return nil }
                throw .invalidArgument("the refresh stream ended in the middle of a line")
            }
        }
    }

    /// Exactly `count` bytes, handed to `body` in pieces.
    func bytes(_ count: Int64, _ body: ([UInt8].SubSequence) throws(NspawnError) -> Void) throws(NspawnError) {
        var left = count
        while left > 0 {
            if start == buffer.count, try !fill() { throw .invalidArgument("the refresh stream ended \(left) bytes early") }
            let take = min(Int64(buffer.count - start), left)
            try body(buffer[start..<start + Int(take)])
            start += Int(take)
            left -= take
        }
    }
}

/// Buffered writes to a socket; counts what it sent.
final class StreamWriter {
    let fd: FileDescriptor
    private var buffer: [UInt8] = []
    private(set) var total: Int64 = 0

    init(_ fd: FileDescriptor) {
        self.fd = fd
        buffer.reserveCapacity(256 * 1024)
    }

    func write(_ bytes: some Collection<UInt8>) throws(NspawnError) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 256 * 1024 { try flush() }
    }

    func flush() throws(NspawnError) {
        guard !buffer.isEmpty else { return }
        do throws(Errno) { try fd.writeFully(buffer) } catch { throw .system("cannot write the refresh stream", error) }
        total += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }
}

// MARK: - The sending side

public enum RefreshSender {
    /// Sends `name`'s root (from a snapshot taken first if it runs) to the receiver at the other
    /// end of `stream`; `label` names the target in errors.
    public static func run(_ name: MachineName, stream: FileDescriptor, label: String, isCancelled: @escaping () -> Bool) throws -> RefreshReport {
        let source = try MachineManager.prepareExport(name, withSnapshots: false)
        defer { source.finish() }
        let root: Directory
        do throws(Errno) { root = try Directory(path: source.rootPath) } catch { throw NspawnError.system("cannot open '\(source.rootPath)'", error) }
        let records = try TreeRecords.walk(root, label: source.rootPath)
        let reader = StreamReader(stream)
        let writer = StreamWriter(stream)

        func reply(limit: Int = MachineRefresh.lineLimit) throws(NspawnError) -> MachineRefresh.Reply {
            guard let line = try reader.line(limit: limit) else {
                throw .remote(.unreachable, message: "\(label) ended the refresh of '\(name.rawValue)' without a word", busError: nil)
            }
            let reply: MachineRefresh.Reply = try MachineRefresh.decodeLine(line, what: "reply")
            if let error = reply.error {
                let remote = ErrorBody(code: error.code, message: error.message, busError: error.busError).nspawnError
                throw .remote(remote.category, message: "on \(label): \(remote.description)", busError: remote.busErrorName)
            }
            return reply
        }

        // The target refuses (no copy there, or it runs) before the list goes, which could be
        // more than ssh holds while nobody reads it.
        guard try reply().ready == true else { throw NspawnError.invalidArgument("\(label) did not say it was ready for the refresh") }
        try writer.write(try MachineRefresh.encodeLine(MachineRefresh.Header(refresh: MachineRefresh.format, name: name.rawValue,
                                                                              hostState: source.host, records: records.count)))
        for record in records {
            if isCancelled() { throw NspawnError.cancelled("refresh of '\(name.rawValue)' on \(label) cancelled") }
            try writer.write(record.line)
        }
        try writer.flush()

        // Each index takes at most 11 bytes.
        guard let need = try reply(limit: max(MachineRefresh.lineLimit, records.count * 11 + 64)).need else { throw NspawnError.invalidArgument("\(label) answered the refresh with no list of files") }
        var previous = -1
        for index in need {
            guard index > previous, index < records.count, records[index].kind == .file, records[index].linkOf == nil else {
                throw NspawnError.invalidArgument("\(label) asked for entry \(index), which is no file this refresh sends")
            }
            previous = index
            if isCancelled() { throw NspawnError.cancelled("refresh of '\(name.rawValue)' on \(label) cancelled") }
            try send(records[index], from: root, rootPath: source.rootPath, to: writer)
        }
        try writer.flush()
        guard let result = try reply().result else { throw NspawnError.invalidArgument("\(label) ended the refresh with no result") }
        return RefreshReport(result: result, fromSnapshot: source.temporarySnapshot != nil, streamBytesSent: writer.total,
                             streamBytesReceived: reader.total)
    }

    private static func send(_ record: TreeRecord, from root: Directory, rootPath: String, to writer: StreamWriter) throws(NspawnError) {
        let label = "\(rootPath)/\(record.path)"
        let file: FileDescriptor
        do throws(Errno) { file = try root.openFileBeneath(record.path) } catch { throw .system("cannot open '\(label)'", error) }
        defer { try? file.close() }
        var hasher = SHA256()
        var sent: Int64 = 0
        var streamFailure: NspawnError?
        do throws(Errno) {
            try file.forEachChunk(bufferSize: 256 * 1024) { chunk throws(Errno) in
                guard sent + Int64(chunk.count) <= record.size else { throw Errno.fileTooLarge }
                hasher.update(bufferPointer: chunk)
                sent += Int64(chunk.count)
                do throws(NspawnError) { try writer.write(chunk) } catch {
                    streamFailure = error
                    throw Errno.brokenPipe
                }
            }
        } catch .fileTooLarge {
            throw .busy(label, reason: "it grew while it was being sent; copy again")
        } catch {
            throw streamFailure ?? .system("cannot read '\(label)'", error)
        }
        guard sent == record.size else { throw .busy(label, reason: "it shrank while it was being sent; copy again") }
        try writer.write(Array(hasher.finalize()))
    }
}

// MARK: - The receiving side

public struct RefreshReceiver {
    let store: ImageStore
    let machined: Machined
    let isCancelled: () -> Bool

    package init(store: ImageStore, machined: Machined, isCancelled: @escaping () -> Bool) {
        self.store = store
        self.machined = machined
        self.isCancelled = isCancelled
    }

    private func machineIsRunning(_ name: MachineName) throws(NspawnError) -> Bool {
        try machined.machinePathIfRunning(name) != nil
    }

    /// Receives a refresh of `name` from `input`, answering on `output`; every failure is
    /// reported there too before it is thrown.
    public func run(_ name: MachineName, input: FileDescriptor, output: FileDescriptor) throws(NspawnError) -> RefreshResult {
        let writer = StreamWriter(output)
        do {
            let result = try receive(name, reader: StreamReader(input), writer: writer)
            try writer.write(try MachineRefresh.encodeLine(MachineRefresh.Reply(result: result)))
            try writer.flush()
            return result
        } catch {
            _ = try? writer.write(try MachineRefresh.encodeLine(MachineRefresh.Reply(error: ErrorBody(error).error)))
            _ = try? writer.flush()
            throw error
        }
    }

    private func receive(_ name: MachineName, reader: StreamReader, writer: StreamWriter) throws(NspawnError) -> RefreshResult {
        let started = ContinuousClock.now
        let imagesPath = store.directory
        let lock = try store.lockName(name)
        defer { withExtendedLifetime(lock) {} }
        let images: Directory
        do throws(Errno) { images = try Directory(path: imagesPath) } catch { throw .system("cannot open '\(imagesPath)'", error) }
        let old: Directory
        do throws(Errno) { old = try images.openDirectory(name.rawValue) } catch .noSuchFileOrDirectory {
            throw .noSuchImage(name.rawValue)
        } catch {
            throw .system("cannot open '\(imagesPath)/\(name.rawValue)'", error)
        }
        if try machineIsRunning(name) {
            throw .busy(name.rawValue, reason: "it is running here; stop it before a refresh replaces its files")
        }
        // What a killed import or refresh of the name left.
        _ = try store.removeLeftovers(of: name, in: images)
        try writer.write(try MachineRefresh.encodeLine(MachineRefresh.Reply(ready: true)))
        try writer.flush()

        // Walked while the sender walks its own and sends the list.
        let currentRecords = try TreeRecords.walk(old, label: "\(imagesPath)/\(name.rawValue)")
        let current = Dictionary(currentRecords.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })

        guard let headerLine = try reader.line(limit: MachineArchive.metadataLimit) else {
            throw .invalidArgument("the refresh of '\(name.rawValue)' ended before its header")
        }
        let header: MachineRefresh.Header = try MachineRefresh.decodeLine(headerLine, what: "header")
        guard header.refresh == MachineRefresh.format else {
            throw .invalidArgument("a refresh of format \(header.refresh) came; this nspawnctl reads format \(MachineRefresh.format)")
        }
        guard header.records > 0, header.records <= MachineRefresh.recordLimit else {
            throw .invalidArgument("a refresh of \(header.records) entries is refused")
        }
        var records: [TreeRecord] = []
        records.reserveCapacity(min(header.records, 1 << 20))
        for _ in 0..<header.records {
            if isCancelled() { throw .cancelled("refresh of '\(name.rawValue)' cancelled") }
            guard let line = try reader.line() else { throw .invalidArgument("the refresh of '\(name.rawValue)' ended in its list of files") }
            guard let record = TreeRecord(line: line) else {
                throw .invalidArgument("a refresh sent a malformed record: \(String(decoding: line.prefix(200), as: UTF8.self).escapedForMessage)")
            }
            records.append(record)
        }
        try Self.check(records)

        let need = records.indices.filter { index in
            let record = records[index]
            guard record.kind == .file, record.linkOf == nil else { return false }
            guard let there = current[record.path] else { return true }
            return !there.sameFile(as: record) || there.links != record.links
        }
        try writer.write(try MachineRefresh.encodeLine(MachineRefresh.Reply(need: need)))
        try writer.flush()

        // On btrfs the new tree starts as a snapshot of the old one and is changed in place;
        // elsewhere it is built beside it, unchanged files hard-linked (a link cannot cross
        // subvolumes, nor a snapshot leave one).
        let work = ImageStore.temporaryName(ImageStore.importPrefix, for: name)
        let workLabel = "\(imagesPath)/\(work)"
        let inPlace = SnapshotStore.isSubvolume(old)
        if inPlace {
            guard nspawnctl_btrfs_snapshot(old.descriptor.rawValue, images.descriptor.rawValue, work, 0) == 0 else {
                throw .system("cannot snapshot '\(imagesPath)/\(name.rawValue)' as '\(workLabel)'", .last)
            }
        } else {
            do throws(Errno) { try images.makeDirectory(work, mode: 0o700) } catch {
                throw .system("cannot create '\(workLabel)'", error)
            }
        }
        var installed = false
        // swapRoot removes the old root once it has the work directory's name.
        defer { if !installed { try? SnapshotStore.removeTree(work, in: images, label: workLabel) } }
        let tree: Directory
        do throws(Errno) { tree = try images.openDirectory(work) } catch { throw .system("cannot open '\(workLabel)'", error) }
        let needed = Set(need)
        var sentBytes: Int64 = 0
        var builder = TreeBuilder(tree: tree, old: old, label: workLabel, inPlace: inPlace)
        if inPlace { try builder.prune(currentRecords, toward: records, needed: needed) }
        for (index, record) in records.enumerated() {
            if isCancelled() { throw .cancelled("refresh of '\(name.rawValue)' cancelled") }
            if needed.contains(index) {
                try builder.receiveFile(record, from: reader)
                sentBytes += record.size
            } else {
                try builder.make(record, linkOf: record.linkOf.map { records[$0].path })
            }
        }
        try builder.finishDirectories(records)

        // The new tree, as stat sees it, must be the sender's, or nothing changes.
        let landed = try TreeRecords.walk(tree, label: workLabel)
        guard landed.count == records.count else {
            throw .verificationFailed("the refreshed tree of '\(name.rawValue)' has \(landed.count) entries, the sender's \(records.count); nothing changed")
        }
        if let differing = zip(landed, records).first(where: { !$0.sameFile(as: $1) || $0.linkOf != $1.linkOf }) {
            throw .verificationFailed("'\(differing.1.path.escapedForMessage)' of the refreshed '\(name.rawValue)' is not what the sender has; nothing changed")
        }

        let previousHost = try? MachineManager.hostState(of: name)
        try MachineManager.swapRoot(work, into: name.rawValue, of: name, in: images, imagesPath: imagesPath, machined: machined)
        installed = true
        do {
            // Rewriting units means a daemon reload; most refreshes change files only.
            if previousHost != header.hostState {
                try MachineManager.installHostState(header.hostState, for: name)
            }
        } catch {
            throw NspawnError.failed("'\(name.rawValue)' has the new files, but its host side is not refreshed: \(error)")
        }
        return RefreshResult(files: records.count, sent: need.count, sentBytes: sentBytes,
                             kept: records.filter { $0.kind == .file && $0.linkOf == nil }.count - need.count,
                             seconds: (ContinuousClock.now - started).seconds)
    }

    /// The sender's records make one tree: the root first, safe and unique paths, each below a
    /// directory listed before it, hard links to an earlier file.
    static func check(_ records: [TreeRecord]) throws(NspawnError) {
        guard let root = records.first, root.path.isEmpty, root.kind == .directory else {
            throw .invalidArgument("a refresh must list the root first")
        }
        var directories: Set<String> = [""]
        var seen: Set<String> = [""]
        for (index, record) in records.enumerated().dropFirst() {
            guard TreeRecord.isSafe(record.path), !record.path.isEmpty, seen.insert(record.path).inserted else {
                throw .invalidArgument("a refresh lists the unsafe or repeated path '\(record.path.escapedForMessage)'")
            }
            guard directories.contains(TreeRecord.split(record.path).parent) else {
                throw .invalidArgument("a refresh lists '\(record.path.escapedForMessage)' before its directory")
            }
            if let first = record.linkOf {
                guard record.kind == .file, first < index, first > 0, records[first].kind == .file, records[first].linkOf == nil else {
                    throw .invalidArgument("a refresh links '\(record.path.escapedForMessage)' to no earlier file")
                }
            }
            if record.kind == .symlink && (record.target ?? "").isEmpty { throw .invalidArgument("a refresh lists the link '\(record.path.escapedForMessage)' without a target") }
            if record.kind == .directory { directories.insert(record.path) }
        }
    }
}

/// Makes the entries of a refreshed tree in `tree`, taking unchanged files from `old`.
struct TreeBuilder {
    let tree: Directory
    let old: Directory
    let label: String
    /// `tree` is a snapshot of `old`, changed in place: what stays is already there.
    let inPlace: Bool
    /// Recently used directories by path: a walk comes back to a parent after each subdirectory.
    private var opened: [String: (tree: Directory, old: Directory?)] = [:]
    private var openedOrder: [String] = []

    init(tree: Directory, old: Directory, label: String, inPlace: Bool) {
        self.tree = tree
        self.old = old
        self.label = label
        self.inPlace = inPlace
    }

    /// In a snapshot of the old tree, removes what the new one does not keep as it is: entries
    /// it lacks or has as another kind, files that come anew or as links, changed links and
    /// nodes. Deepest first, so a directory is empty when its turn comes.
    mutating func prune(_ current: [TreeRecord], toward records: [TreeRecord], needed: Set<Int>) throws(NspawnError) {
        let wanted = Dictionary(records.enumerated().map { ($1.path, $0) }, uniquingKeysWith: { first, _ in first })
        for entry in current.reversed() where !entry.path.isEmpty {
            var keep = false
            if let index = wanted[entry.path], records[index].kind == entry.kind {
                let record = records[index]
                keep = switch record.kind {
                case .directory: true
                case .file: !needed.contains(index) && record.linkOf == nil
                default: entry.sameFile(as: record)
                }
            }
            if keep { continue }
            let (directory, _, name) = try directories(of: entry.path)
            guard unlinkat(directory.descriptor.rawValue, name, entry.kind == .directory ? AT_REMOVEDIR : 0) == 0 else {
                throw .system("cannot remove '\(label)/\(entry.path)'", .last)
            }
            if entry.kind == .directory, opened.removeValue(forKey: entry.path) != nil { openedOrder.removeAll { $0 == entry.path } }
        }
    }

    /// Whether `name` is there already as the kind `record` wants (in place only).
    private func isThere(_ name: String, in directory: Directory, as kind: TreeRecord.Kind) -> Bool {
        guard inPlace, let status = try? directory.status(name) else { return false }
        return TreeRecord.Kind(mode: status.st_mode) == kind
    }

    private mutating func directories(of path: String) throws(NspawnError) -> (tree: Directory, old: Directory?, name: String) {
        let (parentPath, name) = TreeRecord.split(path)
        if let known = opened[parentPath] { return (known.tree, known.old, name) }
        let directory: Directory
        do throws(Errno) { directory = try tree.openDirectoryBeneath(parentPath) } catch {
            throw .system("cannot open '\(label)/\(parentPath)'", error)
        }
        // In place, nothing is taken from the old tree.
        let oldParent = inPlace ? nil : try? old.openDirectoryBeneath(parentPath)
        opened[parentPath] = (directory, oldParent)
        openedOrder.append(parentPath)
        if openedOrder.count > 64 { opened[openedOrder.removeFirst()] = nil }
        return (directory, oldParent, name)
    }

    mutating func make(_ record: TreeRecord, linkOf first: String?) throws(NspawnError) {
        if record.path.isEmpty { return try apply(record, to: tree.descriptor) }
        // A file kept in a snapshot is there as it should be.
        if inPlace && record.kind == .file && first == nil { return }
        let (directory, oldDirectory, name) = try directories(of: record.path)
        let fd = directory.descriptor.rawValue
        let path = "\(label)/\(record.path)"
        switch record.kind {
        case .directory:
            if !isThere(name, in: directory, as: .directory) {
                guard mkdirat(fd, name, 0o700) == 0 else { throw .system("cannot create '\(path)'", .last) }
            }
            let made: Directory
            do throws(Errno) { made = try directory.openDirectory(name) } catch { throw .system("cannot open '\(path)'", error) }
            try apply(record, to: made.descriptor, times: false)
        case .file:
            if let first {
                guard linkat(tree.descriptor.rawValue, first, fd, name, 0) == 0 else { throw .system("cannot link '\(path)'", .last) }
            } else if !inPlace {
                guard let oldDirectory else {
                    throw .failed("cannot take '\(record.path.escapedForMessage)' from the old copy: its directory cannot be opened there")
                }
                guard linkat(oldDirectory.descriptor.rawValue, name, fd, name, 0) == 0 else {
                    throw .system("cannot take '\(record.path.escapedForMessage)' from the old copy", .last)
                }
            }
        case .symlink:
            if isThere(name, in: directory, as: .symlink) { return }
            guard symlinkat(record.target ?? "", fd, name) == 0 else { throw .system("cannot create '\(path)'", .last) }
            try applyNode(record, name: name, in: fd, path: path)
        case .fifo, .character, .block, .socket:
            if isThere(name, in: directory, as: record.kind) { return }
            let type: mode_t = switch record.kind {
            case .fifo: S_IFIFO
            case .character: S_IFCHR
            case .block: S_IFBLK
            default: S_IFSOCK
            }
            guard mknodat(fd, name, type | 0o600, dev_t(record.device ?? 0)) == 0 else { throw .system("cannot create '\(path)'", .last) }
            guard fchmodat(fd, name, mode_t(record.mode), 0) == 0 else { throw .system("cannot set the mode of '\(path)'", .last) }
            try applyNode(record, name: name, in: fd, path: path)
        }
    }

    mutating func receiveFile(_ record: TreeRecord, from reader: StreamReader) throws(NspawnError) {
        let (directory, _, name) = try directories(of: record.path)
        let path = "\(label)/\(record.path)"
        let file: FileDescriptor
        do throws(Errno) {
            file = try FileDescriptor.opening { openat(directory.descriptor.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        } catch {
            throw .system("cannot create '\(path)'", error)
        }
        defer { try? file.close() }
        var hasher = SHA256()
        try reader.bytes(record.size) { (chunk) throws(NspawnError) in
            hasher.update(data: chunk)
            if case .failure(let error) = chunk.withUnsafeBytes({ bytes in Result { () throws(Errno) in try file.writeFully(bytes) } }) {
                throw .system("cannot write '\(path)'", error)
            }
        }
        var digest: [UInt8] = []
        try reader.bytes(32) { digest.append(contentsOf: $0) }
        guard Array(hasher.finalize()) == digest else {
            throw .verificationFailed("'\(record.path.escapedForMessage)' arrived damaged: its sha256 is not the sender's")
        }
        try apply(record, to: file)
    }

    /// Owner, mode, extended attributes (a file capability last), and the modification time;
    /// only what differs is written, as a snapshot's unchanged directory should stay unwritten.
    private func apply(_ record: TreeRecord, to fd: FileDescriptor, times: Bool = true) throws(NspawnError) {
        let path = "\(label)/\(record.path)"
        let now: stat
        do throws(Errno) { now = try fd.status() } catch { throw .system("cannot read '\(path)'", error) }
        if now.st_uid != record.uid || now.st_gid != record.gid {
            guard fchown(fd.rawValue, record.uid, record.gid) == 0 else { throw .system("cannot set the owner of '\(path)'", .last) }
        }
        // A chown clears set-uid bits, so the mode is checked after it.
        if now.st_uid != record.uid || now.st_gid != record.gid || UInt32(now.st_mode & 0o7777) != record.mode {
            guard fchmod(fd.rawValue, mode_t(record.mode)) == 0 else { throw .system("cannot set the mode of '\(path)'", .last) }
        }
        let wanted = record.xattrs ?? [:]
        let present = try TreeRecords.xattrs(of: fd, label: path) ?? [:]
        if present != wanted {
            // What the node has beyond the record (a snapshot's old value, an inherited default ACL) goes.
            for name in present.keys where wanted[name] == nil {
                guard fremovexattr(fd.rawValue, name) == 0 else { throw .system("cannot remove extended attribute '\(name)' of '\(path)'", .last) }
            }
            let ordered = wanted.filter { present[$0.key] != $0.value }
                .sorted { ($0.key == "security.capability" ? 1 : 0, $0.key) < ($1.key == "security.capability" ? 1 : 0, $1.key) }
            for (name, encoded) in ordered {
                guard TreeCopier.carriesAttribute(name), let value = Data(base64Encoded: encoded) else {
                    throw .invalidArgument("a refresh carries the attribute '\(name.escapedForMessage)' on '\(path)', which no copy sets")
                }
                do throws(Errno) { try ExtendedAttributes.descriptor(fd).set(name, Array(value)) } catch {
                    throw .system("cannot set extended attribute '\(name)' on '\(path)'", error)
                }
            }
        }
        if times { try setTime(record, on: fd, path: path) }
    }

    private func setTime(_ record: TreeRecord, on fd: FileDescriptor, path: String) throws(NspawnError) {
        if let now = try? fd.status(), Int64(now.st_mtim.tv_sec) == record.seconds, Int64(now.st_mtim.tv_nsec) == record.nanoseconds { return }
        var stamps = [timespec(tv_sec: 0, tv_nsec: nspawnctl_utime_omit), timespec(tv_sec: Int(record.seconds), tv_nsec: Int(record.nanoseconds))]
        guard futimens(fd.rawValue, &stamps) == 0 else { throw .system("cannot set the times of '\(path)'", .last) }
    }

    /// Owner and time of a node that is not opened (a symlink, a device).
    private func applyNode(_ record: TreeRecord, name: String, in fd: Int32, path: String) throws(NspawnError) {
        guard fchownat(fd, name, record.uid, record.gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw .system("cannot set the owner of '\(path)'", .last) }
        if record.kind != .symlink, fchmodat(fd, name, mode_t(record.mode), 0) != 0 { throw .system("cannot set the mode of '\(path)'", .last) }
        var stamps = [timespec(tv_sec: 0, tv_nsec: nspawnctl_utime_omit), timespec(tv_sec: Int(record.seconds), tv_nsec: Int(record.nanoseconds))]
        guard utimensat(fd, name, &stamps, AT_SYMLINK_NOFOLLOW) == 0 else { throw .system("cannot set the times of '\(path)'", .last) }
    }

    /// Directory times last, deepest first, once nothing more is made in them.
    func finishDirectories(_ records: [TreeRecord]) throws(NspawnError) {
        for record in records.reversed() where record.kind == .directory {
            let directory: Directory
            do throws(Errno) { directory = try tree.openDirectoryBeneath(record.path) } catch {
                throw .system("cannot open '\(label)/\(record.path)'", error)
            }
            try setTime(record, on: directory.descriptor, path: "\(label)/\(record.path)")
        }
    }
}
