import CArchive
import CLinux
import Crypto
import Synchronization
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Reads the raw (still compressed) source for libarchive, and on the way hashes it, counts it and
/// feeds it to gpgv. Lives on the decompression thread.
final class SourceTap {
    let fd: FileDescriptor
    /// Names the source in errors.
    let source: String
    let counters: ImportCounters
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    private(set) var hasher = SHA256()
    /// gpgv's stdin, while it still reads.
    var verifierInput: FileDescriptor?
    /// Why reading stopped early, when that is not the archive's fault.
    var failure: NspawnError?

    init(fd: FileDescriptor, source: String, counters: ImportCounters) {
        self.fd = fd
        self.source = source
        self.counters = counters
    }

    deinit { buffer.deallocate() }

    /// The next chunk: its size, 0 at the end, -1 on failure (`failure` says why).
    func readChunk() -> (UnsafeRawPointer?, Int) {
        if counters.isCancelled {
            failure = .cancelled("import cancelled")
            return (nil, -1)
        }
        let count: Int
        do throws(Errno) {
            // A stalled pipe or download must not keep a cancelled import waiting.
            while try !fd.waitReadable(timeout: .milliseconds(200)) {
                if counters.isCancelled {
                    failure = .cancelled("import cancelled")
                    return (nil, -1)
                }
            }
            count = try fd.readSome(into: buffer)
        } catch {
            failure = .system("cannot read '\(source.escapedForMessage)'", error)
            return (nil, -1)
        }
        if count > 0 {
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            hasher.update(bufferPointer: chunk)
            counters.sourceBytes.add(Int64(count), ordering: .relaxed)
            if let input = verifierInput, (try? input.sendAll(chunk)) == nil {
                // gpgv quit early; its exit status will tell why.
                verifierInput = nil
            }
        }
        return (UnsafeRawPointer(buffer.baseAddress), count)
    }

    /// Reads what the decompressor left (trailing bytes), so the hash and signature cover the whole source.
    func drain() -> Bool {
        while true {
            let (_, count) = readChunk()
            if count <= 0 { return count == 0 }
        }
    }
}

/// A connected pair of stream sockets with roomy buffers, used as pipes between import threads.
/// Sockets rather than pipes: a writer whose reader has gone gets EPIPE from send, never SIGPIPE.
func makeStreamPair() throws(NspawnError) -> (reader: FileDescriptor, writer: FileDescriptor) {
    let (reader, writer): (FileDescriptor, FileDescriptor)
    do { (reader, writer) = try UnixSocket.pair() } catch { throw .system("cannot create a socket pair", error) }
    do throws(Errno) {
        try writer.setSocketBufferSize(1 << 20, for: .sending)
        try reader.setSocketBufferSize(1 << 20, for: .receiving)
        try reader.shutdownSocket(.sending)
        try writer.shutdownSocket(.receiving)
    } catch {
        try? reader.close()
        try? writer.close()
        throw .system("cannot set up a socket pair", error)
    }
    return (reader, writer)
}

/// How one stage ended: `downstreamGone` means a later stage stopped first and has the real story.
enum StageOutcome {
    case finished
    case downstreamGone
    case failed(NspawnError)

    var error: NspawnError? {
        if case .failed(let error) = self { return error }
        return nil
    }
}

/// Unpacks a tar stream into a directory: one thread decompresses, one reads the tar and hands
/// files to writer threads (ParallelExtractor). They overlap, so decompression and writing share the cores.
enum ExtractionPipeline {
    struct Summary {
        var compression: [String]
        var entries: Int
    }

    /// Root-level names that mean "this is already a root", so a lone top directory is kept.
    static let rootDirectoryNames: Set<String> = [
        "bin", "boot", "dev", "etc", "home", "lib", "lib64", "media", "mnt", "opt", "proc", "root", "run",
        "sbin", "srv", "sys", "tmp", "usr", "var",
    ]

    /// The reason a member path is refused before libarchive sees it, if any.
    static func refusal(forMemberPath path: String) -> String? {
        if path.isEmpty { return "empty path" }
        if path.hasPrefix("/") { return "absolute path" }
        if path.split(separator: "/", omittingEmptySubsequences: true).contains("..") { return "path contains '..'" }
        return nil
    }

    /// Runs both stages and waits for them. `source` names the input in errors.
    static func run(tap: SourceTap, into target: Directory, source: String, layer: LayerState? = nil) throws(NspawnError) -> Summary {
        let (reader, writer) = try makeStreamPair()
        final class Box: @unchecked Sendable {
            var decompress: StageOutcome = .finished
            var extract: StageOutcome = .finished
            var compression: [String] = []
            var entries = 0
        }
        let box = Box()
        let unsafeTap = UncheckedSendable(tap)
        let unsafeTarget = UncheckedSendable(target)
        let unsafeLayer = UncheckedSendable(layer)
        let decompressor = OSThread {
            (box.decompress, box.compression) = decompress(unsafeTap.value, into: writer, source: source)
            try? writer.close()
        }
        let extractor = OSThread {
            let extractor = ParallelExtractor(source: source, target: unsafeTarget.value,
                                              counters: unsafeTap.value.counters, layer: unsafeLayer.value)
            do throws(NspawnError) {
                box.entries = try extractor.run(from: reader)
            } catch {
                box.extract = .failed(error)
            }
            try? reader.close()
        }
        decompressor.join()
        extractor.join()
        // The earliest stage's failure is the cause; later ones only saw its effect.
        if tap.counters.isCancelled { throw .cancelled("import cancelled") }
        if let error = box.decompress.error { throw error }
        if let error = box.extract.error { throw error }
        return Summary(compression: box.compression, entries: box.entries)
    }

    private static func decompress(_ tap: SourceTap, into writer: FileDescriptor, source: String) -> (StageOutcome, [String]) {
        let reader = ArchiveReader(.decompress)
        func failure(_ error: ArchiveError) -> StageOutcome {
            .failed(tap.failure ?? .badArchive(source: source, entry: nil, reason: error.message))
        }
        do throws(ArchiveError) {
            try reader.open(chunks: ArchiveChunkSource(tap.readChunk))
            guard try reader.nextHeader() != nil else {
                return (.failed(.badArchive(source: source, entry: nil, reason: "empty input")), [])
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let count = try reader.read(into: buffer)
                if count == 0 { break }
                if (try? writer.sendAll(UnsafeRawBufferPointer(rebasing: buffer[..<count]))) == nil {
                    return (.downstreamGone, reader.filterNames)
                }
            }
        } catch {
            return (failure(error), reader.filterNames)
        }
        if !tap.drain(), let error = tap.failure { return (.failed(error), reader.filterNames) }
        return (.finished, reader.filterNames)
    }
}

/// Hands a non-Sendable value to a thread that becomes its only user.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
