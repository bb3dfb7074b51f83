import FoundationEssentials
import NspawnKit
import SystemPackage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs each import as an `nspawnctl-images import|bootstrap --json` child, the way importd runs
/// systemd-pull: the daemon never loads libcurl or libarchive, untrusted archives are parsed in
/// a process that ends with the import, and a cancel is the child's own SIGTERM handling, which
/// removes everything it wrote.
public struct ChildImporter: Sendable {
    /// The import helper; by default the one installed next to nspawnd.
    public var executable: String

    public init(executable: String? = nil) {
        self.executable = executable ?? Self.besideSelf()
    }

    static func besideSelf() -> String { ImagesHelperProgram.path }

    /// Runs the import to its end; `progress` sees each progress line the child prints.
    func run(_ job: ImportJob, name: MachineName, cancel: ChildCancel,
             progress: @escaping @Sendable (ImportProgress) -> Void) async -> Result<ImportResult, NspawnError> {
        let argv = [executable] + job.arguments(name: name)
        // The child's lifetime is one blocking wait; a thread of its own keeps it off the pool.
        return await OSThread.run { Self.runBlocking(argv, cancel: cancel, progress: progress) }
    }

    static func runBlocking(_ argv: [String], cancel: ChildCancel,
                            progress: @Sendable (ImportProgress) -> Void) -> Result<ImportResult, NspawnError> {
        let errors: (read: FileDescriptor, write: FileDescriptor)
        do throws(Errno) {
            errors = try FileDescriptor.closeOnExecPipe()
        } catch {
            return .failure(.system("cannot start an import: pipe", error))
        }
        defer { try? errors.read.close() }
        let output: MemoryFile
        let child: ChildProcess
        do throws(NspawnError) {
            defer { try? errors.write.close() }
            output = try MemoryFile()
            child = try ChildProcess.spawn(argv, stdout: output.descriptor, stderr: errors.write)
        } catch {
            return .failure(error)
        }
        cancel.attach(child)

        // stderr carries JSON lines: progress while it runs, the error if it fails.
        var lastError: ErrorBody?
        var lastLine = ""
        let decoder = WireJSON.decoder()
        readLines(errors.read) { line in
            let data = Data(line.utf8)
            if let event = try? decoder.decode(ProgressLine.self, from: data), event.event == "progress" {
                progress(event.progress)
            } else if let error = try? decoder.decode(ErrorBody.self, from: data) {
                lastError = error
            } else if !line.isEmpty {
                lastLine = line
            }
        }
        // Wait for the exit without reaping, so a cancel can never signal a reused pid.
        child.waitUntilExited()
        cancel.detach()
        let termination = child.wait()

        // A printed result means the image is in place, even if a late cancel killed the child.
        let text = output.text(limit: 1 << 20)
        if let result = try? decoder.decode(ImportResult.self, from: Data(text.utf8)) {
            return .success(result)
        }
        if termination.succeeded {
            return .failure(.failed("'\(argv[0])' succeeded but printed no import result: '\(text.prefix(200))'"))
        }
        if let lastError {
            return .failure(lastError.nspawnError)
        }
        if cancel.isCancelled {
            return .failure(.cancelled("import cancelled"))
        }
        let detail = lastLine.isEmpty ? "" : ": \(lastLine)"
        return .failure(.failed("import child '\(argv[0])' \(termination)\(detail)"))
    }

    struct ProgressLine: Decodable {
        var event: String
        var progress: ImportProgress
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

/// Cancels an import child: SIGTERM, which the child answers by removing its work and exiting 130.
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
