import FoundationEssentials
import SystemPackage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What `nspawnctl-images` reports on stderr while it works, one JSON object a line: an
/// import's progress, or an apply's step. Its error is an `ErrorBody` line, its result JSON
/// on stdout.
public enum HelperEvent: Sendable, Equatable, Codable {
    case progress(ImportProgress)
    case apply(ApplyEvent)

    private enum Key: String, CodingKey { case event, progress, apply }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        switch try container.decode(String.self, forKey: .event) {
        case "progress": self = .progress(try container.decode(ImportProgress.self, forKey: .progress))
        case "apply": self = .apply(try container.decode(ApplyEvent.self, forKey: .apply))
        case let other: throw DecodingError.dataCorruptedError(forKey: .event, in: container, debugDescription: "no helper event '\(other)'")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        switch self {
        case .progress(let progress):
            try container.encode("progress", forKey: .event)
            try container.encode(progress, forKey: .progress)
        case .apply(let event):
            try container.encode("apply", forKey: .event)
            try container.encode(event, forKey: .apply)
        }
    }
}

/// Runs `nspawnctl-images` as a child, the way importd runs systemd-pull: nspawnctl and nspawnd
/// never load libcurl, libarchive or the YAML parser, untrusted archives are parsed in a
/// process that ends with the job, and a cancel is the child's own SIGTERM handling, which
/// removes everything it wrote. The child ends with its parent (it asks for SIGTERM then).
public struct ImagesHelper: Sendable {
    /// The helper; by default the one installed next to this executable.
    public var executable: String

    public init(executable: String? = nil) {
        self.executable = executable ?? ImagesHelperProgram.path
    }

    /// An import to its end; `progress` sees each progress event.
    public func importImage(_ job: ImportJob, name: MachineName?, cancel: ChildCancel,
                            progress: @escaping @Sendable (ImportProgress) -> Void) async -> Result<ImportResult, NspawnError> {
        await run(job.arguments(name: name), stdin: job.readsStandardInput ? .standardInput : nil, cancel: cancel) { event in
            if case .progress(let value) = event { progress(value) }
        }
    }

    /// A machine's archive, written by the child to `file`, or to this process's stdout for `-`.
    public func exportMachine(_ name: MachineName, file: String, withSnapshots: Bool) async -> Result<ExportResult, NspawnError> {
        let arguments = ["export", "--json"] + (withSnapshots ? ["--snapshots"] : []) + ["--", name.rawValue, file]
        return await run(arguments, stdin: nil, extra: file == "-" ? [.standardOutput] : [], cancel: ChildCancel()) { _ in }
    }

    /// A machine's archive, written by the child to `descriptor` (a pipe to copy-machine's relay).
    public func exportMachine(_ name: MachineName, to descriptor: FileDescriptor, withSnapshots: Bool) async -> Result<ExportResult, NspawnError> {
        let arguments = ["export", "--json"] + (withSnapshots ? ["--snapshots"] : []) + ["--", name.rawValue, "-"]
        return await run(arguments, stdin: nil, extra: [descriptor], cancel: ChildCancel()) { _ in }
    }

    /// `copy-machine --refresh`: the delta of `name` to the receiver at the other end of `stream`.
    public func refreshMachine(_ name: MachineName, stream: FileDescriptor, label: String) async -> Result<RefreshReport, NspawnError> {
        await run(["refresh-send", "--json", "--label", label, "--", name.rawValue], stdin: nil, extra: [stream], cancel: ChildCancel()) { _ in }
    }

    /// What an image server offers (`nspawnctl images remote`).
    public func remoteImages(remote: String?, filter: String?) async -> Result<[ImageServerCatalog.Row], NspawnError> {
        let arguments = ["remote", "--json"] + (remote.map { ["--remote=\($0)"] } ?? []) + ["--"] + (filter.map { [$0] } ?? [])
        return await run(arguments, stdin: nil, cancel: ChildCancel()) { _ in }
    }

    /// A manifest's plan, explanation or apply; the manifest's text goes to the child's stdin.
    public func manifest<Output: Decodable & Sendable>(_ job: ManifestJob, text: String, file: String, as: Output.Type = Output.self,
                                                       events: @escaping @Sendable (ApplyEvent) -> Void = { _ in }) async -> Result<Output, NspawnError> {
        let document: MemoryFile
        do throws(NspawnError) {
            document = try MemoryFile(contents: text.utf8)
        } catch {
            return .failure(error)
        }
        return await run(job.arguments(file: file), stdin: document.descriptor, cancel: ChildCancel()) { event in
            if case .apply(let value) = event { events(value) }
        }
    }

    /// Runs the child to its end and decodes the result it printed. Lines on its stderr that
    /// are not events or its error (a warning) go on to this process's stderr.
    func run<Output: Decodable & Sendable>(_ arguments: [String], stdin: FileDescriptor?, extra: [FileDescriptor] = [], cancel: ChildCancel,
                                           events: @escaping @Sendable (HelperEvent) -> Void) async -> Result<Output, NspawnError> {
        let argv = [executable] + arguments
        // The child's lifetime is one blocking wait on the thread that started it: the kernel
        // sends the child its parent-death signal when that thread ends.
        return await OSThread.run { Self.runBlocking(argv, stdin: stdin, extra: extra, cancel: cancel, events: events) }
    }

    static func runBlocking<Output: Decodable>(_ argv: [String], stdin: FileDescriptor?, extra: [FileDescriptor] = [], cancel: ChildCancel,
                                               events: (HelperEvent) -> Void) -> Result<Output, NspawnError> {
        let errors: (read: FileDescriptor, write: FileDescriptor)
        do throws(Errno) {
            errors = try FileDescriptor.closeOnExecPipe()
        } catch {
            return .failure(.system("cannot start '\(argv[0])': pipe", error))
        }
        defer { try? errors.read.close() }
        let output: MemoryFile
        let child: ChildProcess
        do throws(NspawnError) {
            defer { try? errors.write.close() }
            output = try MemoryFile()
            child = try ChildProcess.spawn(argv, stdin: stdin, stdout: output.descriptor, stderr: errors.write, extra: extra)
        } catch {
            return .failure(error)
        }
        cancel.attach(child)

        var lastError: ErrorBody?
        var lastLine = ""
        let decoder = WireJSON.decoder()
        readLines(errors.read) { line in
            let data = Data(line.utf8)
            if let event = try? decoder.decode(HelperEvent.self, from: data) {
                events(event)
            } else if let error = try? decoder.decode(ErrorBody.self, from: data) {
                lastError = error
            } else if !line.isEmpty {
                lastLine = line
                _ = try? FileDescriptor.standardError.writeAll((line + "\n").utf8)
            }
        }
        // Wait for the exit without reaping, so a cancel can never signal a reused pid.
        child.waitUntilExited()
        cancel.detach()
        let termination = child.wait()

        // A printed result means the work is done (an apply with a failed machine exits 1 and
        // still reports), even if a late cancel killed the child.
        let text = output.text(limit: ManifestLimits.maximumSize * 4)
        if !text.isEmpty, let result = try? decoder.decode(Output.self, from: Data(text.utf8)) {
            return .success(result)
        }
        if let lastError {
            return .failure(lastError.nspawnError)
        }
        if termination.succeeded {
            return .failure(.failed("'\(argv[0])' succeeded but printed no result: '\(text.prefix(200))'"))
        }
        if cancel.isCancelled {
            return .failure(.cancelled("\(argv.dropFirst().first ?? "job") cancelled"))
        }
        let detail = lastLine.isEmpty ? "" : ": \(lastLine)"
        return .failure(.failed("'\(argv[0])' \(termination)\(detail)"))
    }

    /// Calls `body` with each line read from `fd` until end of file (or a read error, which
    /// ends the child's report as its end would). Of a line longer than 64 KiB only the end is
    /// passed on: nothing is buffered without bound.
    static func readLines(_ fd: FileDescriptor, _ body: (String) -> Void) {
        var pending: [UInt8] = []
        try? fd.forEachChunk(bufferSize: 16 * 1024) { chunk in
            pending += chunk
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                body(String(decoding: pending[..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
            if pending.count > 64 * 1024 { pending.removeAll() }
        }
        if !pending.isEmpty { body(String(decoding: pending, as: UTF8.self)) }
    }
}

/// Cancels a helper child: SIGTERM, which the child answers by removing its work and exiting 130.
/// A cancel that comes before the child exists is delivered as soon as it does.
public final class ChildCancel: Sendable {
    private struct State {
        var child: ChildProcess?
        var cancelled = false
    }

    private let state = Mutex(State())

    public init() {}

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    public func cancel() {
        state.withLock { state in
            state.cancelled = true
            state.child?.signal(SIGTERM)
        }
    }

    func attach(_ child: ChildProcess) {
        state.withLock { state in
            state.child = child
            if state.cancelled { child.signal(SIGTERM) }
        }
    }

    /// Called once the child has exited and before it is reaped, so its pid, free for reuse
    /// after the reap, is never signalled.
    func detach() {
        state.withLock { $0.child = nil }
    }
}
