import CArchive
import CLinux
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes a tar stream's members to disk: this thread reads the tar and creates directories, devices
/// and large files; regular files go to writer threads; links wait until no writer runs.
///
/// Every handle is libarchive's write-to-disk with the same secure flags, so each path is checked
/// for `..` and symlinks as it is written. The ordering rules keep the result that of writing the
/// members one by one: a file is handed out only under a directory this thread created (never through
/// a path the archive has yet to make), symlinks and hard links are made only while no writer runs
/// (so none can traverse a link being made, and link targets exist), and a name met twice, or under a
/// parent not known to be a directory, first waits for everything before it.
final class ParallelExtractor {
    let source: String
    let target: Directory
    let counters: ImportCounters
    let writerCount: Int
    /// Bytes of file data read but not yet written, at most.
    let budget: Int
    /// Files larger than this are written by the reading thread, streamed, instead of buffered.
    let bufferedFileLimit: Int
    /// Names remembered since the last time every writer finished; past this, the reader waits and
    /// forgets them, so memory stays bounded however many members the archive has (a few MB each).
    let windowLimit: Int
    let deferredLimit = 4_096
    /// Past this many known directories the reader forgets them; a file under a forgotten one is
    /// then written after everything before it, which makes its directory known again.
    let directoryLimit: Int

    /// Set when the stream is one layer of an OCI image applied over the layers below it.
    let layer: LayerState?

    init(source: String, target: Directory, counters: ImportCounters, layer: LayerState? = nil, writerCount: Int = 2,
         budget: Int = 8 << 20, bufferedFileLimit: Int = 2 << 20, windowLimit: Int = 16_384,
         directoryLimit: Int = 16_384) {
        self.source = source
        self.target = target
        self.counters = counters
        self.layer = layer
        self.writerCount = writerCount
        self.budget = budget
        self.bufferedFileLimit = min(bufferedFileLimit, budget)
        self.windowLimit = windowLimit
        self.directoryLimit = directoryLimit
    }

    /// The failure to report for a libarchive error while handling member `name`.
    func describe(_ error: ArchiveError, entry name: String?) -> NspawnError {
        if counters.isCancelled { return .cancelled("import cancelled") }
        // libarchive refuses symlink traversal and ".." without a system errno (0 or -1).
        let hostile = error.errno <= 0 || error.errno == EILSEQ
        if error.reading || hostile {
            return .badArchive(source: source, entry: name, reason: error.message)
        }
        // libarchive's message says which step ("write failed"); its errno says why.
        return .system("cannot write '\((name ?? ".").escapedForMessage)' of archive '\(source.escapedForMessage)': \(error.message)",
                       Errno(rawValue: error.errno))
    }

    /// A member's path as the file system resolves it: no empty or "." components.
    static func normalized(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }.joined(separator: "/")
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    private func enterTarget() -> NspawnError? {
        // libarchive writes relative to the working directory; give this thread its own.
        guard nspawnctl_unshare_fs() == 0, fchdir(target.descriptor.rawValue) == 0 else {
            return .system("cannot enter the extraction directory of archive '\(source.escapedForMessage)'", .last)
        }
        return nil
    }

    /// A writer thread: writes files from `queue` until it closes.
    private func runWriter(_ queue: WriterQueue, index: Int) {
        if let failure = enterTarget() {
            queue.fail(failure)
            return
        }
        // After unshare: libarchive reads the umask when the handle is made, and the umask is per fs struct.
        let writer = ArchiveDiskWriter(flags: ArchiveDiskWriter.faithfulAndSecure)
        while let job = queue.next(for: index) {
            var failure: NspawnError?
            do throws(ArchiveError) {
                try writer.writeHeader(job.entry.entry)
                for block in job.blocks {
                    try writer.writeBlock(UnsafeRawBufferPointer(rebasing: job.data[block.start..<(block.start + block.count)]),
                                          at: block.offset)
                }
                try writer.finishEntry()
            } catch {
                failure = describe(error, entry: job.name)
            }
            queue.finished(job, failure: failure)
        }
        do throws(ArchiveError) { try writer.close() } catch { queue.fail(describe(error, entry: nil)) }
    }

    /// Reads the tar stream from `socket` and writes it out; the number of members written.
    func run(from socket: FileDescriptor) throws(NspawnError) -> Int {
        if let failure = enterTarget() { throw failure }
        // Made before the writers start and freed after they stop: freeing applies directory modes and times.
        let writer = ArchiveDiskWriter(flags: ArchiveDiskWriter.faithfulAndSecure)
        let queue = WriterQueue(budget: budget, writers: writerCount)
        let box = UncheckedSendable(self)
        let writers = (0..<writerCount).map { index in OSThread { box.value.runWriter(queue, index: index) } }
        do throws(NspawnError) {
            let entries = try read(from: socket, writer: writer, queue: queue)
            queue.close()
            for thread in writers { thread.join() }
            if let failure = queue.failure { throw failure }
            return entries
        } catch {
            queue.fail(error)
            queue.close()
            for thread in writers { thread.join() }
            // A writer's failure came first when the reader only stopped because of it.
            throw queue.failure ?? error
        }
    }

    private func read(from socket: FileDescriptor, writer: ArchiveDiskWriter, queue: WriterQueue) throws(NspawnError) -> Int {
        let reader = ArchiveReader(.tar)
        var entries = 0
        var current: String?
        /// Normalized names met since every writer last finished.
        var seen = Set<String>()
        /// Directories this thread made (or found whole) whose place no pending link can change.
        var directories: Set<String> = [""]
        /// Symlinks and hard links, in archive order, to make once the writers are done.
        var deferred: [(entry: OwnedArchiveEntry, name: String)] = []
        /// Numbers runs of consecutive files in one directory, for the writers to keep apart.
        var run = (directory: "", number: 0)

        func attempt(_ name: String?, _ body: () throws(ArchiveError) -> Void) throws(NspawnError) {
            do throws(ArchiveError) { try body() } catch { throw describe(error, entry: name) }
        }
        /// Waits for the writers, then makes the pending links: everything so far is on disk in archive order.
        func settle() throws(NspawnError) {
            if let failure = queue.drain() { throw failure }
            for link in deferred {
                try attempt(link.name) { () throws(ArchiveError) in
                    try writer.writeHeader(link.entry.entry)
                    try writer.finishEntry()
                }
            }
            deferred.removeAll()
            seen.removeAll(keepingCapacity: true)
        }
        /// Writes the current member with this thread's handle, streaming its data.
        func writeHere(_ entry: ArchiveEntry, _ name: String) throws(NspawnError) {
            try attempt(name) { () throws(ArchiveError) in
                try writer.writeHeader(entry)
                try writer.copyData(from: reader)
                try writer.finishEntry()
            }
        }

        do throws(ArchiveError) { try reader.open(fd: socket, blockSize: 128 * 1024) } catch {
            throw describe(error, entry: nil)
        }
        while true {
            let next: ArchiveEntry?
            do throws(ArchiveError) { next = try reader.nextHeader() } catch { throw describe(error, entry: current) }
            guard let entry = next else { break }
            if counters.isCancelled { throw .cancelled("import cancelled") }
            if let failure = queue.failure { throw failure }
            guard let name = entry.pathname else {
                throw .badArchive(source: source, entry: nil, reason: "member without a readable name")
            }
            current = name
            if let reason = ExtractionPipeline.refusal(forMemberPath: name) {
                throw .badArchive(source: source, entry: name, reason: reason)
            }
            let hardlink = entry.hardlink
            if let link = hardlink, let reason = ExtractionPipeline.refusal(forMemberPath: link) {
                throw .badArchive(source: source, entry: name, reason: "hard link to '\(link)': \(reason)")
            }

            let path = Self.normalized(name)
            let parent = Self.parent(of: path)
            let type = entry.fileType
            let size = entry.size
            if let layer {
                // Whiteouts delete what lower layers made; everything before them must be on disk.
                if let whiteout = LayerState.Whiteout(path) {
                    try settle()
                    try layer.apply(whiteout, in: target, source: source, member: name)
                    directories = [""]
                    entries += 1
                    continue
                }
                if layer.replacesDirectory(at: path, with: type, in: target) {
                    try settle()
                    try layer.remove(path, in: target, source: source, member: name)
                    directories = [""]
                }
                layer.written.insert(path)
            }
            if seen.contains(path) || seen.count >= windowLimit || deferred.count >= deferredLimit {
                try settle()
            }
            if path.isEmpty {
                // The root itself: only its metadata, which libarchive applies at close.
                try writeHere(entry, name)
            } else if !directories.contains(parent) {
                // Made by an earlier link or file, or not at all: write it after everything before it,
                // as a one-by-one extraction would, and let libarchive judge (and make) the parents.
                try settle()
                try writeHere(entry, name)
                if directories.count >= directoryLimit { directories = [""] }
                if type == S_IFDIR { directories.insert(path) } else { directories.remove(path) }
                // libarchive checked (or made) every parent as a real directory.
                directories.insert(parent)
            } else if type == S_IFDIR {
                try writeHere(entry, name)
                if directories.count >= directoryLimit { directories = [""] }
                directories.insert(path)
            } else {
                directories.remove(path)
                if hardlink != nil || type == S_IFLNK {
                    if size > 0 {
                        // A hard link with data of its own writes into its target: after everything before it.
                        try settle()
                        try writeHere(entry, name)
                    } else {
                        deferred.append((OwnedArchiveEntry(copying: entry), name))
                    }
                } else if type == S_IFREG && size <= Int64(bufferedFileLimit) {
                    if parent != run.directory { run = (parent, run.number + 1) }
                    try dispatch(entry, name: name, directory: run.number, size: Int(size), from: reader, to: queue)
                } else {
                    // Large files, devices and fifos: at a name no other thread touches.
                    try writeHere(entry, name)
                }
            }
            seen.insert(path)
            entries += 1
            counters.entries.add(1, ordering: .relaxed)
        }
        current = nil
        try settle()
        // Every writer is idle and the queue is empty; directories get their modes and times last.
        do throws(ArchiveError) { try writer.close() } catch { throw describe(error, entry: nil) }
        // An OCI layer may be empty (a config-only step of the image's build).
        if entries == 0 && layer == nil { throw .badArchive(source: source, entry: nil, reason: "the archive holds no files") }
        // Let the decompressor finish cleanly: tar ends before its stream's padding does.
        try? socket.discardToEnd()
        return entries
    }

    /// Copies a file's header and data into a job for the writers.
    private func dispatch(_ entry: ArchiveEntry, name: String, directory: Int, size: Int, from reader: ArchiveReader,
                          to queue: WriterQueue) throws(NspawnError) {
        guard let span = queue.reserve(size) else { throw queue.failure ?? .cancelled("import cancelled") }
        let job = FileJob(entry: OwnedArchiveEntry(copying: entry), name: name, directory: directory, span: span)
        var filled = 0
        var overlong = false
        do throws(ArchiveError) {
            while let (bytes, offset) = try reader.readBlock() {
                guard bytes.count <= size - filled else {
                    overlong = true
                    break
                }
                if bytes.isEmpty { continue }
                UnsafeMutableRawBufferPointer(rebasing: job.data[filled...]).copyMemory(from: bytes)
                job.blocks.append((offset, filled, bytes.count))
                filled += bytes.count
            }
        } catch {
            queue.release(span)
            throw describe(error, entry: name)
        }
        if overlong {
            queue.release(span)
            throw .badArchive(source: source, entry: name, reason: "member data longer than its size")
        }
        queue.submit(job)
    }
}
