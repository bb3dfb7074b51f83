import FoundationEssentials
import NspawnAPI
@testable import NspawnDaemon
import NspawnKit

/// Every service call with its typed request, as the service received it.
enum Call: Equatable, Sendable {
    case list(ListRequest)
    case status(String)
    case start(String), terminate(String)
    case reboot(String, RebootRequest)
    case stop(String, StopRequest)
    case kill(String, KillRequest)
    case enable(String), disable(String)
    case remove(String, RemoveRequest)
    case rename(String, RenameRequest)
    case clone(String, CloneRequest)
    case setReadOnly(String, ReadOnlyRequest)
    case config(String)
    case configure(String, ConfigRequest)
    case create(CreateRequest)
    case expose(String, ExposeRequest)
    case unexpose(String, UnexposeRequest)
    case resize(String, ResizeRequest), confirmResize(String), revertResize(String)
    case rebuild(String, RebuildRequest)
    case snapshot(String, SnapshotRequest)
    case snapshots(String)
    case restore(String, RestoreRequest)
    case removeSnapshot(String, SnapshotRemoveRequest)
    case copyTo(String, CopyRequest)
    case copyFrom(String, CopyRequest)
    case export(String, ExportRequest)
    case copyMachine(String, CopyMachineRequest)
    case events
    case logs(String, LogRequest)
    case stats(StatsRequest)
    case exec(String, ExecSpec)
    case importImage(String?, ImportJob)
    case plan(PlanRequest), explain(PlanRequest, String), apply(ApplyRequest)
}

/// Records what it is asked for and answers with plain values, or throws `failure` for every call.
/// A request the library would refuse is refused first, with the request type's own `validate()`,
/// as `LocalService` does: validation belongs to the service, not to the router or the CLI.
actor RecordingService: NspawnService {
    private(set) var calls: [Call] = []
    let failure: NspawnError?

    init(failure: NspawnError? = nil) {
        self.failure = failure
    }

    private func record(_ call: Call) throws {
        calls.append(call)
        if let failure { throw failure }
    }

    static let machines = [MachineSummary(name: "web", state: .running, imageType: "directory"), MachineSummary(name: "adhoc", state: .running)]

    func version() -> VersionInfo { VersionInfo() }

    func importImage(_ name: MachineName?, _ job: ImportJob, cancellation: ImportCancellation,
                     progress: @escaping @Sendable (ImportProgress) -> Void) throws -> ImportResult {
        try record(.importImage(name?.rawValue, job))
        return ImportResult(name: name?.rawValue ?? "child01", path: "/var/lib/machines/x", source: job.source, sourceBytes: 1, entries: 1,
                            compression: [], sha256: String(repeating: "0", count: 64), verified: [], strippedDirectory: nil,
                            replaced: false, removedLeftovers: [], seconds: 0)
    }

    func plan(_ request: PlanRequest) throws -> ProvisionPlan {
        try request.validate()
        try record(.plan(request))
        return ProvisionPlan(manifest: "m", file: request.file ?? "-", machines: [])
    }

    func explain(_ request: PlanRequest, machine: MachineName) throws -> [ExplanationLine] {
        try request.validate()
        try record(.explain(request, machine.rawValue))
        return [ExplanationLine(field: "state", value: "running", origin: "machine")]
    }

    func apply(_ request: ApplyRequest, progress: @escaping @Sendable (ApplyEvent) -> Void) throws -> ApplyReport {
        try request.validate()
        try record(.apply(request))
        return ApplyReport(manifest: "m", file: request.file ?? "-", machines: [])
    }

    static func copied(_ name: MachineName, _ direction: String) throws -> CopyResult {
        try decoded(#"{"name": "\#(name)", "direction": "\#(direction)", "source": "/a", "destination": "/b", "replaced": false, "files": 1, "directories": 0, "symlinks": 0, "hardlinks": 0, "special_files": 0, "mount_points": 0, "bytes": 1}"#)
    }

    func copyTo(_ name: MachineName, _ request: CopyRequest) throws -> CopyResult {
        try request.validate()
        try record(.copyTo(name.rawValue, request))
        return try Self.copied(name, "copy-to")
    }

    func copyFrom(_ name: MachineName, _ request: CopyRequest) throws -> CopyResult {
        try request.validate()
        try record(.copyFrom(name.rawValue, request))
        return try Self.copied(name, "copy-from")
    }

    func export(_ name: MachineName, _ request: ExportRequest) throws -> ExportResult {
        try request.validate()
        try record(.export(name.rawValue, request))
        return ExportResult(name: name.rawValue, file: request.file, format: 1, compression: "zstd", archiveBytes: 1, fromSnapshot: false,
                            hostState: [], snapshots: [], parts: [], seconds: 0)
    }

    func copyMachine(_ name: MachineName, _ request: CopyMachineRequest, progress: @escaping @Sendable (UInt64) -> Void) throws -> CopyMachineResult {
        try record(.copyMachine(name.rawValue, request))
        return CopyMachineResult(name: name.rawValue, host: request.target.destination.description, targetName: (request.target.name ?? name).rawValue,
                                 moved: request.move, fromSnapshot: false, bytesSent: 1, snapshots: [], parts: [], verifiedOnTarget: ["parts"],
                                 startedOnTarget: false, replacedOnTarget: false, seconds: 0)
    }

    func list(_ request: ListRequest) throws -> [MachineSummary] {
        try record(.list(request))
        return Self.machines
    }

    func status(_ name: MachineName) throws -> MachineStatus {
        try record(.status(name.rawValue))
        return try Self.decoded(#"{"name": "\#(name)", "state": "running", "addresses": [], "enabled": false, "exposed": []}"#)
    }

    func start(_ name: MachineName) throws { try record(.start(name.rawValue)) }
    func stop(_ name: MachineName, _ request: StopRequest) throws {
        try request.validate()
        try record(.stop(name.rawValue, request))
    }
    func reboot(_ name: MachineName, _ request: RebootRequest) throws { try record(.reboot(name.rawValue, request)) }
    func terminate(_ name: MachineName) throws { try record(.terminate(name.rawValue)) }
    func kill(_ name: MachineName, _ request: KillRequest) throws {
        try request.validate()
        try record(.kill(name.rawValue, request))
    }

    func enable(_ name: MachineName) throws -> [UnitFileChange] {
        try record(.enable(name.rawValue))
        return try Self.decoded(#"[{"type": "symlink", "path": "/etc/systemd/system/machines.target.wants/systemd-nspawn@\#(name).service", "source": "/lib/systemd/system/systemd-nspawn@.service"}]"#)
    }

    func disable(_ name: MachineName) throws -> [UnitFileChange] {
        try record(.disable(name.rawValue))
        return []
    }

    func remove(_ name: MachineName, _ request: RemoveRequest) throws {
        try request.validate()
        try record(.remove(name.rawValue, request))
    }
    func rename(_ name: MachineName, _ request: RenameRequest) throws {
        try request.validate()
        try record(.rename(name.rawValue, request))
    }
    func clone(_ name: MachineName, _ request: CloneRequest) throws {
        try request.validate()
        try record(.clone(name.rawValue, request))
    }
    func setReadOnly(_ name: MachineName, _ request: ReadOnlyRequest) throws { try record(.setReadOnly(name.rawValue, request)) }

    func config(_ name: MachineName) throws -> MachineConfig {
        try record(.config(name.rawValue))
        return try Self.config(name)
    }

    func configure(_ name: MachineName, _ request: ConfigRequest) throws -> MachineConfig {
        try record(.configure(name.rawValue, request))
        return try Self.config(name)
    }

    static func config(_ name: MachineName) throws -> MachineConfig {
        try decoded(#"{"name": "\#(name)", "settings": {"settings": {"Boot": ["no"]}, "other": []}, "exposed": []}"#)
    }

    /// Library values built as the wire carries them; their initializers are the library's own.
    static func decoded<T: Decodable>(_ json: String) throws -> T {
        try WireJSON.decoder().decode(T.self, from: Data(json.utf8))
    }

    func create(_ request: CreateRequest) throws -> MachineStatus {
        try request.validate()
        try record(.create(request))
        return try Self.decoded(#"{"name": "\#(request.name)", "state": "stopped", "addresses": [], "enabled": false, "exposed": []}"#)
    }

    func expose(_ name: MachineName, _ request: ExposeRequest) throws -> ExposeResult {
        try request.validate(for: name)
        try record(.expose(name.rawValue, request))
        return try Self.decoded(#"{"name": "\#(name)", "addresses": ["8080"], "socket_unit": "systemd-nspawn@\#(name).socket", "restarted": false}"#)
    }

    func unexpose(_ name: MachineName, _ request: UnexposeRequest) throws {
        try request.validate()
        try record(.unexpose(name.rawValue, request))
    }

    func resize(_ name: MachineName, _ request: ResizeRequest) throws -> ResizeResult {
        try request.validate()
        try record(.resize(name.rawValue, request))
        return ResizeResult(name: name.rawValue, action: .resized, flavor: Flavor(name: request.flavor), limits: nil, pending: nil)
    }

    func confirmResize(_ name: MachineName) throws -> ResizeResult {
        try record(.confirmResize(name.rawValue))
        return ResizeResult(name: name.rawValue, action: .confirmed, flavor: nil, limits: nil, pending: nil)
    }

    func revertResize(_ name: MachineName) throws -> ResizeResult {
        try record(.revertResize(name.rawValue))
        return ResizeResult(name: name.rawValue, action: .reverted, flavor: nil, limits: nil, pending: nil)
    }

    func rebuild(_ name: MachineName, _ request: RebuildRequest) throws -> RebuildResult {
        try request.validate()
        try record(.rebuild(name.rawValue, request))
        return RebuildResult(name: name.rawValue, image: request.image ?? "base", method: .copy, restarted: false)
    }

    static let snapshotInfo = SnapshotInfo(name: "s1", created: Date(timeIntervalSince1970: 0), method: .copy, size: 1,
                                           path: "/var/lib/machines/.#nspawnctl-snapshots/web/s1")

    func snapshot(_ name: MachineName, _ request: SnapshotRequest) throws -> SnapshotResult {
        try request.validate()
        try record(.snapshot(name.rawValue, request))
        return SnapshotResult(name: name.rawValue, snapshot: Self.snapshotInfo, method: .copy, seconds: 0.5)
    }

    func snapshots(_ name: MachineName) throws -> [SnapshotInfo] {
        try record(.snapshots(name.rawValue))
        return [Self.snapshotInfo]
    }

    func restore(_ name: MachineName, _ request: RestoreRequest) throws -> SnapshotResult {
        try request.validate()
        try record(.restore(name.rawValue, request))
        return SnapshotResult(name: name.rawValue, snapshot: Self.snapshotInfo, method: .copy, seconds: 0.5)
    }

    func removeSnapshot(_ name: MachineName, _ request: SnapshotRemoveRequest) throws {
        try request.validate()
        try record(.removeSnapshot(name.rawValue, request))
    }

    /// The last command started, for tests that look at it after the stream.
    private(set) var started: LocalProgram?

    /// Runs the command on this host (a relay test, not a machine): the daemon's stream and
    /// the client's relay see a real process with real pipes.
    func exec(_ name: MachineName, _ spec: ExecSpec) throws -> any GuestProcess {
        try record(.exec(name.rawValue, spec))
        let program = try LocalProgram(spec)
        started = program
        return program
    }

    func stats(_ request: StatsRequest) throws -> [MachineStats] {
        try record(.stats(request))
        return try request.machineNames().map { MachineStats(name: $0.rawValue, sampledUsec: 1) }
    }

    /// One entry, then the end (a follow too: the recorder has nothing more to say).
    func logs(_ name: MachineName, _ request: LogRequest) throws -> AsyncThrowingStream<[LogEntry], any Error> {
        try record(.logs(name.rawValue, request))
        _ = try request.window()
        let (stream, sink) = AsyncThrowingStream<[LogEntry], any Error>.makeStream()
        sink.yield([LogEntry(realtimeUsec: 1_000_000, source: .machine, priority: 6, unit: nil, identifier: "app", pid: 7, message: "hello from \(name)")])
        sink.finish()
        return stream
    }

    nonisolated func events() -> AsyncThrowingStream<MachineEvent, any Error> {
        let (stream, sink) = AsyncThrowingStream<MachineEvent, any Error>.makeStream()
        Task {
            do {
                try await record(.events)
                sink.yield(MachineEvent(event: .subscribed, time: Date(timeIntervalSince1970: 0)))
                sink.yield(MachineEvent(event: .machineNew, name: "web", state: .running, time: Date(timeIntervalSince1970: 1)))
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
        return stream
    }
}

/// The client's requests handed straight to a router, as the server would: no socket, the
/// same bytes in and out.
struct InProcessTransport: APITransport {
    let router: Router
    let peer: Peer

    var peerName: String { "nspawnd in this process" }

    func exchange(_ request: HTTPRequestMessage, wait: Duration) async throws -> HTTPResponseMessage {
        let response = await router.handle(APIRequest(method: request.method, target: request.target, body: request.body ?? [],
                                                      contentType: request.body == nil ? nil : "application/json", peer: peer))
        var headers = [APILevel.header.lowercased(): APILevel.current]
        for (name, value) in response.headers { headers[name.lowercased()] = value }
        return HTTPResponseMessage(status: response.status, headers: headers, body: response.body)
    }

    func stream(_ request: HTTPRequestMessage) async throws -> (HTTPResponseMessage, AsyncThrowingStream<[UInt8], any Error>) {
        let refused = { (refusal: APIResponse) in
            (HTTPResponseMessage(status: refusal.status, headers: [:], body: refusal.body), AsyncThrowingStream<[UInt8], any Error> { $0.finish() })
        }
        switch await router.route(APIRequest(method: request.method, target: request.target, peer: peer)) {
        case .answer(let answer): return refused(answer)
        case .exec: return refused(.error(status: 400, code: "invalid_input", message: "exec is not a stream of this transport"))
        case .logs(let name, let logRequest):
            switch await router.startLogs(name, logRequest) {
            case .refused(let refusal): return refused(refusal)
            case .started(let chunks):
                let bytes = AsyncThrowingStream<[UInt8], any Error> { sink in
                    Task {
                        for await chunk in chunks { sink.yield(Array(chunk.utf8)) }
                        sink.finish()
                    }
                }
                return (HTTPResponseMessage(status: 200, headers: [:], body: []), bytes)
            }
        case .events: break
        }
        let (frames, stop) = await router.eventFrames()
        let (chunks, sink) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        Task {
            // The recorder's events end; the operations' side never does, so stop after them.
            for await frame in frames {
                sink.yield(Array(frame.utf8))
                if frame.hasPrefix("event: machine_new") || frame.hasPrefix("event: error") { break }
            }
            stop()
            sink.finish()
        }
        return (HTTPResponseMessage(status: 200, headers: [:], body: []), chunks)
    }
}
