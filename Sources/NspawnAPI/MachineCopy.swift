import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `copy-machine` and `move-machine`: where the machine goes, `ssh://[USER@]HOST[:PORT][/NAME]`.
public struct CopyTarget: Sendable, Equatable, CustomStringConvertible {
    public var destination: SSHDestination
    /// The name on the target; nil keeps the machine's own.
    public var name: MachineName?

    public init(parsing text: String) throws(NspawnError) {
        guard text.hasPrefix("ssh://") else {
            throw .invalidArgument("invalid target '\(text.escapedForMessage)': expected ssh://[USER@]HOST[:PORT][/NAME]")
        }
        let rest = text.dropFirst("ssh://".count)
        guard let slash = rest.firstIndex(of: "/") else {
            destination = try SSHDestination(parsing: text)
            return
        }
        destination = try SSHDestination(parsing: "ssh://" + rest[..<slash])
        let suffix = String(rest[rest.index(after: slash)...])
        if !suffix.isEmpty {
            name = try MachineName(suffix)
        }
    }

    public var description: String { destination.description + (name.map { "/\($0.rawValue)" } ?? "") }
}

public struct CopyMachineRequest: Sendable, Equatable {
    public var target: CopyTarget
    /// Carry the snapshots too; a move always does.
    public var snapshots: Bool
    /// Replace a machine of the same name on the target.
    public var force: Bool
    /// Stop the machine, start it on the target if it ran, and remove it here once it is there.
    public var move: Bool
    /// Send only what changed since the last copy there (a whole copy when there is none).
    public var refresh: Bool
    /// Whether ssh may ask for a passphrase (a terminal is there to answer).
    public var interactive: Bool

    public init(target: CopyTarget, snapshots: Bool = false, force: Bool = false, move: Bool = false, refresh: Bool = false,
                interactive: Bool = false) {
        self.target = target
        self.snapshots = snapshots || move
        self.force = force
        self.move = move
        self.refresh = refresh
        self.interactive = interactive
    }

    public func validate() throws(NspawnError) {
        if refresh && (move || snapshots) {
            throw .invalidArgument("--refresh brings the root and the host side of a copy up to date; snapshots and moves go whole, without it")
        }
        if refresh && force { throw .invalidArgument("--refresh replaces only what changed; --force does not apply") }
    }

    static func refusedThroughDaemon(_ verb: String) -> NspawnError {
        .invalidArgument("\(verb) works from the machine's own host only: it reads the machine there and reaches the target over ssh itself, so run it as root without --api or --host")
    }
}

/// What `copy-machine` or `move-machine` did.
public struct CopyMachineResult: Sendable, Codable, Equatable {
    public var name: String
    /// The target as given, `ssh://…`.
    public var host: String
    public var targetName: String
    public var moved: Bool
    /// The root was read from a snapshot taken because the machine was running.
    public var fromSnapshot: Bool
    /// The archive's bytes through ssh; the target read the same count.
    public var bytesSent: UInt64
    public var snapshots: [String]
    public var parts: [ExportPart]
    /// What the target checked before it installed anything ("parts": every part's digest).
    public var verifiedOnTarget: [String]
    /// A move of a running machine started it on the target.
    public var startedOnTarget: Bool
    public var replacedOnTarget: Bool
    /// `archive` (the whole machine) or `file-delta` (--refresh: the changed files).
    public var method: String
    /// --refresh: what came over and what the target kept.
    public var refresh: RefreshResult?
    public var seconds: Double

    public init(name: String, host: String, targetName: String, moved: Bool, fromSnapshot: Bool, bytesSent: UInt64, snapshots: [String],
                parts: [ExportPart], verifiedOnTarget: [String], startedOnTarget: Bool, replacedOnTarget: Bool, method: String = "archive",
                refresh: RefreshResult? = nil, seconds: Double) {
        self.method = method
        self.refresh = refresh
        self.name = name
        self.host = host
        self.targetName = targetName
        self.moved = moved
        self.fromSnapshot = fromSnapshot
        self.bytesSent = bytesSent
        self.snapshots = snapshots
        self.parts = parts
        self.verifiedOnTarget = verifiedOnTarget
        self.startedOnTarget = startedOnTarget
        self.replacedOnTarget = replacedOnTarget
        self.seconds = seconds
    }
}

/// Streams `export` of a machine into `nspawnctl import NAME -` on another host, over ssh with
/// the user's own configuration as `--host` does, and holds the target's report against what
/// was sent. A move removes the machine here only after the target has it (and, if it ran,
/// runs it); until then the source is left as it was, also when the copy is killed.
struct MachineCopier {
    let manager: MachineManager
    let images: ImagesHelper
    let progress: @Sendable (UInt64) -> Void

    func run(_ name: MachineName, _ request: CopyMachineRequest) async throws -> CopyMachineResult {
        try request.validate()
        let started = ContinuousClock.now
        let targetName = request.target.name ?? name
        let wasRunning = try await manager.status(name).state == .running
        if request.refresh {
            switch await refreshResult(name, as: targetName, request) {
            case .success(let report):
                return CopyMachineResult(
                    name: name.rawValue, host: request.target.destination.description, targetName: targetName.rawValue, moved: false,
                    fromSnapshot: report.fromSnapshot, bytesSent: UInt64(report.streamBytesSent), snapshots: [], parts: [],
                    verifiedOnTarget: ["records", "sha256"], startedOnTarget: false, replacedOnTarget: true, method: "file-delta",
                    refresh: report.result, seconds: (ContinuousClock.now - started).seconds)
            case .failure(let error) where error.category == .notFound:
                break  // No copy there yet: the first one goes whole.
            case .failure(let error):
                throw error
            }
        }
        if request.move && wasRunning {
            try await manager.stop(name, timeout: StopTimeout.wait(nil))
        }
        let sent: Sent
        do {
            sent = try await send(name, as: targetName, request)
        } catch {
            // The target has nothing (its import is atomic); the machine runs again as it did.
            if request.move && wasRunning { try? await manager.start(name) }
            throw error
        }
        var startedOnTarget = false
        if request.move {
            if wasRunning {
                do {
                    try await runRemote(request, ["start", "--", targetName.rawValue])
                    startedOnTarget = true
                } catch {
                    try? await manager.start(name)
                    throw NspawnError.remote(error.category, message: "'\(name.rawValue)' was copied to \(request.target.destination) as '\(targetName.rawValue)' but did not start there, so it stays here and runs again: \(error.description)", busError: error.busErrorName)
                }
            }
            // Not forced: a machine started here meanwhile (socket activation, an admin) stays.
            do {
                try await manager.remove(name, force: false, stopTimeout: StopTimeout.wait(nil))
            } catch let error as NspawnError {
                throw NspawnError.remote(error.category, message: "'\(name.rawValue)' is on \(request.target.destination) as '\(targetName.rawValue)' but was not removed here: \(error.description)", busError: error.busErrorName)
            }
        }
        return CopyMachineResult(
            name: name.rawValue, host: request.target.destination.description, targetName: targetName.rawValue,
            moved: request.move, fromSnapshot: sent.export.fromSnapshot, bytesSent: sent.bytes, snapshots: sent.export.snapshots,
            parts: sent.export.parts, verifiedOnTarget: sent.imported.verified, startedOnTarget: startedOnTarget,
            replacedOnTarget: sent.imported.replaced, seconds: (ContinuousClock.now - started).seconds)
    }

    /// One refresh: `nspawnctl receive-machine NAME` there, and the sending child here, joined
    /// by ssh's stdin and stdout.
    private func refreshResult(_ name: MachineName, as targetName: MachineName, _ request: CopyMachineRequest) async -> Result<RefreshReport, NspawnError> {
        do { return .success(try await refresh(name, as: targetName, request)) } catch { return .failure(error) }
    }

    private func refresh(_ name: MachineName, as targetName: MachineName, _ request: CopyMachineRequest) async throws(NspawnError) -> RefreshReport {
        let (ours, child) = try RemoteCommand(request, ["receive-machine", "--", targetName.rawValue]).connect(stdoutToo: true)
        let refreshed = await images.refreshMachine(name, stream: ours, label: request.target.destination.description)
        // Closed, not only shut: a receiver still writing must see it gone, or ssh never ends.
        try? ours.close()
        let outcome = await child.finished()
        switch refreshed {
        case .success(let report): return report
        case .failure(let error):
            // A target that never ran the receiver (ssh refused, no nspawnctl there) says why in ssh's words.
            switch outcome.termination {
            case .exited(255), .exited(127), .signaled:
                throw SSHConnection.failure(outcome.termination, said: outcome.said, destination: request.target.destination,
                                            command: "nspawnctl receive-machine")
            default:
                throw error
            }
        }
    }

    struct Sent {
        var export: ExportResult
        var imported: ImportResult
        var bytes: UInt64
    }

    /// One export, piped through this process (which counts it) into ssh's stdin.
    private func send(_ name: MachineName, as targetName: MachineName, _ request: CopyMachineRequest) async throws(NspawnError) -> Sent {
        let archive: (read: FileDescriptor, write: FileDescriptor)
        do throws(Errno) {
            archive = try FileDescriptor.closeOnExecPipe()
        } catch {
            throw .system("cannot create a pipe for the export of '\(name.rawValue)'", error)
        }
        let remote = RemoteCommand(request, ["import", "--json"] + (request.force ? ["--force"] : []) + ["--", targetName.rawValue, "-"])
        let (ours, child): (FileDescriptor, RemoteCommand.Running)
        do {
            (ours, child) = try remote.connect(stdoutToo: false)
        } catch {
            try? archive.read.close()
            try? archive.write.close()
            throw error
        }

        let progress = self.progress
        let relay = Task.detached { () -> Result<UInt64, Errno> in
            await OSThread.run { Self.relay(from: archive.read, to: ours, progress: progress) }
        }
        let exported = await images.exportMachine(name, to: archive.write, withSnapshots: request.snapshots)
        try? archive.write.close()
        let relayed = await relay.value
        try? ours.close()
        let outcome = await child.finished()

        // Whichever side gave up first tells why: a target that went away breaks the export's
        // pipe, a failed export leaves the target a cut archive.
        let bytes: UInt64
        switch relayed {
        case .success(let count): bytes = count
        case .failure(let error):
            try outcome.check()
            throw .system("cannot send the archive of '\(name.rawValue)' to \(request.target.destination)", error)
        }
        let export: ExportResult
        switch exported {
        case .success(let value): export = value
        case .failure(let error): throw error
        }
        let imported: ImportResult = try outcome.decoded()
        guard imported.sourceBytes == Int64(bytes), imported.verified.contains("parts") else {
            throw .verificationFailed("\(request.target.destination) installed '\(targetName.rawValue)' but read \(imported.sourceBytes) bytes of the \(bytes) sent and checked \(imported.verified.joined(separator: ", ")) rather than every part's digest; do not trust that copy")
        }
        return Sent(export: export, imported: imported, bytes: bytes)
    }

    /// Copies the archive to ssh, and closes `source`: on a failed write at once, so the
    /// export gets EPIPE and ends instead of waiting for a reader that has gone.
    private static func relay(from source: FileDescriptor, to socket: FileDescriptor,
                              progress: @Sendable (UInt64) -> Void) -> Result<UInt64, Errno> {
        defer { try? source.close() }
        var total: UInt64 = 0
        var reported = ContinuousClock.now
        do throws(Errno) {
            try source.forEachChunk(bufferSize: 256 * 1024) { chunk throws(Errno) in
                try socket.sendAll(chunk)
                total += UInt64(chunk.count)
                if ContinuousClock.now - reported > .seconds(1) {
                    reported = .now
                    progress(total)
                }
            }
            try socket.shutdownSocket(.sending)
            progress(total)
            return .success(total)
        } catch {
            return .failure(error)
        }
    }

    /// A short command on the target, e.g. `start NAME`.
    private func runRemote(_ request: CopyMachineRequest, _ arguments: [String]) async throws(NspawnError) {
        try await RemoteCommand(request, arguments).start(stdin: nil).finished().check()
    }
}

/// `ssh HOST nspawnctl ARGUMENTS` with `--json` errors read back as ours.
struct RemoteCommand {
    let destination: SSHDestination
    let argv: [String]

    init(_ request: CopyMachineRequest, _ arguments: [String]) {
        destination = request.target.destination
        argv = SSHConnector(destination: destination, interactive: request.interactive).command(["nspawnctl"] + arguments)
    }

    final class Running {
        let child: ChildProcess
        let stdout: MemoryFile
        let stderr: MemoryFile
        let destination: SSHDestination

        init(child: ChildProcess, stdout: MemoryFile, stderr: MemoryFile, destination: SSHDestination) {
            self.child = child
            self.stdout = stdout
            self.stderr = stderr
            self.destination = destination
        }

        /// Waits for ssh on a thread of its own, off the cooperative pool.
        func finished() async -> Outcome {
            let child = child
            let termination = await OSThread.run { child.wait() }
            return Outcome(termination: termination, output: stdout.text(limit: 1 << 20), said: stderr.text(limit: 64 * 1024),
                           destination: destination)
        }
    }

    struct Outcome {
        var termination: ChildProcess.Termination
        var output: String
        var said: String
        var destination: SSHDestination

        /// The remote nspawnctl's error, as it printed it with --json; else ssh's own.
        func check() throws(NspawnError) {
            if termination == .exited(0) { return }
            let decoder = WireJSON.decoder()
            let reported = said.split(separator: "\n").reversed().lazy.compactMap { try? decoder.decode(ErrorBody.self, from: Data($0.utf8)) }.first
            if let reported, case .exited(let code) = termination, code != 255 {
                let error = reported.nspawnError
                throw .remote(error.category, message: "on \(destination): \(error.description)", busError: error.busErrorName)
            }
            throw SSHConnection.failure(termination, said: said, destination: destination, command: "nspawnctl")
        }

        func decoded<Output: Decodable>(_: Output.Type = Output.self) throws(NspawnError) -> Output {
            try check()
            guard let value = try? WireJSON.decoder().decode(Output.self, from: Data(output.utf8)) else {
                throw .remote(.failure, message: "\(destination) answered with no result nspawnctl reads: \(output.prefix(200).escapedForMessage)", busError: nil)
            }
            return value
        }
    }

    /// ssh with its stdin (and with `stdoutToo` its stdout) on a socket whose other end is
    /// returned: a socket, not a pipe, so a write after ssh has ended is EPIPE, not SIGPIPE.
    func connect(stdoutToo: Bool) throws(NspawnError) -> (FileDescriptor, Running) {
        let (ours, theirs): (FileDescriptor, FileDescriptor)
        do throws(Errno) { (ours, theirs) = try UnixSocket.pair() } catch { throw .system("cannot create a socket pair for ssh", error) }
        defer { try? theirs.close() }
        do {
            return (ours, try start(stdin: theirs, stdout: stdoutToo ? theirs : nil))
        } catch {
            try? ours.close()
            throw error
        }
    }

    /// ssh with `stdin`; its stdout is kept for the result, unless `stdout` takes it.
    func start(stdin: FileDescriptor?, stdout stream: FileDescriptor? = nil) throws(NspawnError) -> Running {
        let stdout = try MemoryFile()
        let stderr = try MemoryFile()
        do {
            let child = try ChildProcess.spawn(argv, stdin: stdin, stdout: stream ?? stdout.descriptor, stderr: stderr.descriptor)
            return Running(child: child, stdout: stdout, stderr: stderr, destination: destination)
        } catch {
            throw .remote(.unreachable, message: "cannot run ssh for \(destination.host): \(error)", busError: nil)
        }
    }
}
