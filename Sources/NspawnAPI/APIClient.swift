import FoundationEssentials
import NspawnKit

/// nspawnd as a service: each call encodes its request type, sends it over the transport and
/// decodes the answer or the error, which keeps its category (and so the exit code).
public struct APIClient: NspawnService {
    public let transport: any APITransport

    public init(transport: any APITransport) {
        self.transport = transport
    }

    /// The local daemon's socket.
    public static func local() -> APIClient { APIClient(transport: StreamTransport(connector: UnixSocketConnector())) }

    // MARK: NspawnService

    public func version() async throws -> VersionInfo { try await call(.version) }

    /// nspawnd has no route for file contents; the refusal is the same on every remote route.
    public func copyTo(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        throw CopyRequest.refusedThroughDaemon("copy-to")
    }

    public func copyFrom(_ name: MachineName, _ request: CopyRequest) async throws -> CopyResult {
        throw CopyRequest.refusedThroughDaemon("copy-from")
    }

    public func export(_ name: MachineName, _ request: ExportRequest) async throws -> ExportResult {
        throw ExportRequest.refusedThroughDaemon
    }

    public func copyMachine(_ name: MachineName, _ request: CopyMachineRequest,
                            progress: @escaping @Sendable (UInt64) -> Void) async throws -> CopyMachineResult {
        throw CopyMachineRequest.refusedThroughDaemon(request.move ? "move-machine" : "copy-machine")
    }

    public func list(_ request: ListRequest) async throws -> [MachineSummary] {
        try await call(.listMachines, query: request.all == true ? "all=true" : nil)
    }

    public func status(_ name: MachineName) async throws -> MachineStatus { try await call(.getMachine, name) }
    public func start(_ name: MachineName) async throws { try await action(.start, name) }

    public func stop(_ name: MachineName, _ request: StopRequest) async throws {
        try await action(.stop, name, body: request, wait: StopTimeout.wait(request.timeout))
    }

    public func reboot(_ name: MachineName, _ request: RebootRequest) async throws { try await action(.reboot, name, body: request) }
    public func terminate(_ name: MachineName) async throws { try await action(.terminate, name) }
    public func kill(_ name: MachineName, _ request: KillRequest) async throws { try await action(.kill, name, body: request) }
    public func enable(_ name: MachineName) async throws -> [UnitFileChange] { try await call(.enable, name) }
    public func disable(_ name: MachineName) async throws -> [UnitFileChange] { try await call(.disable, name) }

    public func remove(_ name: MachineName, _ request: RemoveRequest) async throws {
        try await action(.removeImage, name, body: request, wait: StopTimeout.wait(request.timeout))
    }

    public func rename(_ name: MachineName, _ request: RenameRequest) async throws { try await action(.renameImage, name, body: request) }
    public func clone(_ name: MachineName, _ request: CloneRequest) async throws { try await action(.cloneImage, name, body: request, wait: .seconds(3600)) }
    public func setReadOnly(_ name: MachineName, _ request: ReadOnlyRequest) async throws { try await action(.setReadOnly, name, body: request) }
    public func config(_ name: MachineName) async throws -> MachineConfig { try await call(.getConfig, name) }
    public func configure(_ name: MachineName, _ request: ConfigRequest) async throws -> MachineConfig { try await call(.configure, name, body: request) }

    public func create(_ request: CreateRequest) async throws -> MachineStatus {
        // A clone copies a whole root, and a start waits for it.
        try await call(.createMachine, body: request, wait: .seconds(3600))
    }

    public func expose(_ name: MachineName, _ request: ExposeRequest) async throws -> ExposeResult {
        try await call(.expose, name, body: request, wait: StopTimeout.wait(request.timeout) * 2)
    }

    public func unexpose(_ name: MachineName, _ request: UnexposeRequest) async throws {
        try await action(.unexpose, name, body: request, wait: StopTimeout.wait(request.timeout) * 2)
    }

    public func resize(_ name: MachineName, _ request: ResizeRequest) async throws -> ResizeResult { try await call(.resize, name, body: request) }
    public func confirmResize(_ name: MachineName) async throws -> ResizeResult { try await call(.confirmResize, name) }
    public func revertResize(_ name: MachineName) async throws -> ResizeResult { try await call(.revertResize, name) }

    public func rebuild(_ name: MachineName, _ request: RebuildRequest) async throws -> RebuildResult {
        // A stop, a whole root copied, and a start.
        try await call(.rebuild, name, body: request, wait: StopTimeout.wait(request.timeout) + .seconds(3600))
    }

    // A snapshot or a restore may copy a whole root.
    public func snapshot(_ name: MachineName, _ request: SnapshotRequest) async throws -> SnapshotResult {
        try await call(.createSnapshot, name, body: request, wait: .seconds(3600))
    }

    public func snapshots(_ name: MachineName) async throws -> [SnapshotInfo] { try await call(.listSnapshots, name) }

    public func restore(_ name: MachineName, _ request: RestoreRequest) async throws -> SnapshotResult {
        try await call(.restore, name, body: request, wait: .seconds(3600))
    }

    public func removeSnapshot(_ name: MachineName, _ request: SnapshotRemoveRequest) async throws {
        try await action(.removeSnapshot, name, body: request, wait: .seconds(3600))
    }

    public func events() -> AsyncThrowingStream<MachineEvent, any Error> {
        let (events, sink) = AsyncThrowingStream<MachineEvent, any Error>.makeStream()
        let transport = transport
        let task = Task {
            do {
                let (head, chunks) = try await transport.stream(HTTPRequestMessage(method: "GET", target: Endpoint.events.path()))
                guard head.status == 200 else { throw ErrorMapping.error(status: head.status, body: head.body, from: transport.peerName) }
                var parser = ServerSentEvents()
                for try await chunk in chunks {
                    for frame in parser.feed(chunk) {
                        if frame.event == "error" {
                            throw ErrorMapping.error(status: 500, body: Array(frame.data.utf8), from: transport.peerName)
                        }
                        if let event = try? WireJSON.decoder().decode(MachineEvent.self, from: Data(frame.data.utf8)) {
                            sink.yield(event)
                        }
                    }
                }
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
        sink.onTermination = { _ in task.cancel() }
        return events
    }

    public func stats(_ request: StatsRequest) async throws -> [MachineStats] {
        _ = try request.machineNames()
        return try await call(.stats, query: request.query)
    }

    /// One JSON entry per line (`application/x-ndjson`); a blank line is a heartbeat, and a
    /// line with `error` ends the stream with that error.
    public func logs(_ name: MachineName, _ request: LogRequest) async throws -> AsyncThrowingStream<[LogEntry], any Error> {
        let target = Endpoint.logs.path(name.rawValue) + (request.query.map { "?\($0)" } ?? "")
        let (head, chunks) = try await transport.stream(HTTPRequestMessage(method: "GET", target: target))
        guard head.status == 200 else { throw ErrorMapping.error(status: head.status, body: head.body, from: transport.peerName) }
        let (batches, sink) = AsyncThrowingStream<[LogEntry], any Error>.makeStream()
        let peerName = transport.peerName
        let task = Task {
            do {
                let decoder = WireJSON.decoder()
                var pending: [UInt8] = []
                for try await chunk in chunks {
                    pending += chunk
                    var batch: [LogEntry] = []
                    var heartbeat = false
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = Array(pending[..<newline])
                        pending.removeSubrange(...newline)
                        if line.isEmpty { heartbeat = true; continue }
                        if let entry = try? decoder.decode(LogEntry.self, from: Data(line)) {
                            batch.append(entry)
                        } else {
                            throw ErrorMapping.error(status: 500, body: line, from: peerName)
                        }
                    }
                    if !batch.isEmpty || heartbeat { sink.yield(batch) }
                }
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
        sink.onTermination = { _ in task.cancel() }
        return batches
    }

    // MARK: Imports

    /// The daemon fetches what it imports: a URL, a recipe from its mirror, or an image from a registry. It cannot read
    /// this host's files or stdin.
    public func importImage(_ name: MachineName?, _ job: ImportJob, cancellation: ImportCancellation,
                            progress: @escaping @Sendable (ImportProgress) -> Void) async throws -> ImportResult {
        let request: ImportRequest
        switch job {
        case .url(let url, let checksum, let signature, let keyring, let force):
            request = ImportRequest(name: name?.rawValue, url: url, checksum: checksum, signature: signature, keyring: keyring,
                                    force: force ? true : nil)
        case .recipe(let recipe, let mirror, let tarball, let checksum, let signature, let keyring, let verify, let force):
            if tarball != nil {
                throw NspawnError.invalidArgument("bootstrap --tarball reads a file on this host, which nspawnd cannot; run it as root without --api or --host")
            }
            request = ImportRequest(name: name?.rawValue, recipe: recipe, checksum: checksum, signature: signature, keyring: keyring,
                                    mirror: mirror, verify: verify ? nil : false, force: force ? true : nil)
        case .stream(let source, let remote, let force):
            request = ImportRequest(name: name?.rawValue, force: force ? true : nil,
                                    stream: String(source.dropFirst(StreamReference.prefix.count)), remote: remote)
        case .file(let path, _, _, _, let force):
            if case .oci(let source) = ImageSource(path), case .registry = source {
                request = ImportRequest(name: name?.rawValue, force: force ? true : nil, oci: path)
                break
            }
            throw NspawnError.invalidArgument("import through nspawnd takes an http(s) URL or a docker:// image, which the daemon fetches; '\(path.escapedForMessage)' is a local file or stdin, so import it as root without --api or --host")
        }
        try request.validate()
        let operation = try await startImport(request)
        return try await follow(operation, cancellation: cancellation, progress: progress)
    }

    /// Starts an import; it runs in the daemon and is followed with `operation`.
    public func startImport(_ request: ImportRequest) async throws -> Operation {
        try await call(.importImage, body: request)
    }

    public func operation(_ id: String) async throws -> Operation { try await call(.getOperation, id) }

    /// Cancels a running import (the daemon removes what it wrote) and forgets it.
    public func cancelOperation(_ id: String) async throws -> Operation { try await call(.cancelOperation, id) }

    /// Follows an operation until it ends, handing each progress report to `progress`. Once
    /// `cancellation` says so, cancels it in the daemon (which removes what it wrote) and
    /// throws `cancelled`. Polls: a poll is one short request, the same over a socket and ssh.
    public func follow(_ operation: Operation, cancellation: ImportCancellation,
                       progress: @Sendable (ImportProgress) -> Void) async throws -> ImportResult {
        var current = operation
        var interval = Duration.milliseconds(50)
        while current.state == .running {
            for _ in 0..<Int(interval / .milliseconds(50)) where !cancellation.isCancelled {
                try await Task.sleep(for: .milliseconds(50))
            }
            if cancellation.isCancelled {
                current = try await cancelOperation(current.id)
                if current.state == .running || current.state == .cancelled {
                    throw NspawnError.importCancelled(current.name)
                }
                break
            }
            interval = min(interval * 2, .seconds(1))
            do {
                current = try await self.operation(current.id)
            } catch where cancellation.isCancelled {
                // Ctrl-C reaches the whole process group, an ssh in flight too; cancel anew.
                continue
            }
            if let report = current.progress { progress(report) }
        }
        if let failure = current.failure { throw failure }
        guard let result = current.result else {
            throw NspawnError.failed("\(transport.peerName) ended import '\(current.name)' as \(current.state.rawValue) without a result")
        }
        return result
    }

    // MARK: Manifests

    /// What applying the manifest would change on the daemon's host. Synchronous: its guard
    /// commands and package queries run in the machines before the answer.
    public func plan(_ request: PlanRequest) async throws -> ProvisionPlan {
        try await call(.planManifest, body: request, wait: .seconds(3600))
    }

    /// Explained here, by this host's `nspawnctl-images`: an explanation changes nothing and
    /// reads only the manifest and the flavors, so it needs no daemon (the flavors are this host's).
    public func explain(_ request: PlanRequest, machine: MachineName) async throws -> [ExplanationLine] {
        try await LocalService().explain(request, machine: machine)
    }

    /// Starts the apply as an operation and follows it; if this process ends, the apply goes
    /// on in the daemon.
    public func apply(_ request: ApplyRequest, progress: @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport {
        try await followApply(try await startApply(request), event: progress)
    }

    /// Starts converging the daemon's host to a manifest; a refused manifest throws here,
    /// before anything starts. Follow it with `followApply`.
    public func startApply(_ request: ApplyRequest) async throws -> Operation {
        try await call(.applyManifest, body: request)
    }

    /// Follows an apply to its end, handing each of its events to `event` once and in order,
    /// and returns its report, also when a machine failed. Throws when the apply ended
    /// without a report (it could not start on the machines). Polls, as `follow` does; the
    /// apply goes on in the daemon if this process ends.
    public func followApply(_ operation: Operation, event: (ApplyEvent) -> Void) async throws -> ApplyReport {
        var current = operation
        var shown = 0
        // Events come from the operation's window while it keeps up; should more pass between
        // two polls than it holds, the rest comes from the report, still in order.
        var live = true
        func showNew() {
            guard live, let events = current.events, let count = current.eventCount else { return }
            let first = count - events.count
            guard first <= shown else {
                live = false
                return
            }
            events.dropFirst(shown - first).forEach(event)
            shown = max(shown, count)
        }
        showNew()
        var interval = Duration.milliseconds(50)
        while current.state == .running {
            try await Task.sleep(for: interval)
            interval = min(interval * 2, .seconds(1))
            current = try await self.operation(current.id)
            showNew()
        }
        guard let report = current.report else {
            throw current.failure ?? NspawnError.failed("\(transport.peerName) ended apply '\(current.name)' as \(current.state.rawValue) without a report")
        }
        report.events.dropFirst(shown).forEach(event)
        return report
    }

    // MARK: Wire

    private func action<Body: Encodable>(_ endpoint: Endpoint, _ name: MachineName, body: Body? = Empty?.none, wait: Duration = .seconds(300)) async throws {
        _ = try await send(endpoint, name.rawValue, query: nil, body: body, wait: wait)
    }

    private func call<Response: Decodable>(_ endpoint: Endpoint, _ parameter: String? = nil, query: String? = nil) async throws -> Response {
        try decode(try await send(endpoint, parameter, query: query, body: Empty?.none, wait: .zero))
    }

    private func call<Response: Decodable, Body: Encodable>(_ endpoint: Endpoint, _ name: MachineName, body: Body, wait: Duration = .seconds(300)) async throws -> Response {
        try decode(try await send(endpoint, name.rawValue, query: nil, body: body, wait: wait))
    }

    private func call<Response: Decodable, Body: Encodable>(_ endpoint: Endpoint, body: Body, wait: Duration = .seconds(300)) async throws -> Response {
        try decode(try await send(endpoint, nil, query: nil, body: body, wait: wait))
    }

    private func call<Response: Decodable>(_ endpoint: Endpoint, _ name: MachineName) async throws -> Response {
        try await call(endpoint, name.rawValue)
    }

    private func send<Body: Encodable>(_ endpoint: Endpoint, _ parameter: String?, query: String?, body: Body?, wait: Duration) async throws -> [UInt8] {
        let payload = try body.map { Array(try WireJSON.encoder(pretty: false).encode($0)) }
        let target = endpoint.path(parameter) + (query.map { "?\($0)" } ?? "")
        let response = try await transport.exchange(HTTPRequestMessage(method: endpoint.method, target: target, body: payload), wait: wait)
        guard (200..<300).contains(response.status) else {
            throw ErrorMapping.error(status: response.status, body: response.body, from: transport.peerName)
        }
        return response.body
    }

    private func decode<T: Decodable>(_ body: [UInt8]) throws -> T {
        do {
            return try WireJSON.decoder().decode(T.self, from: Data(body))
        } catch {
            throw NspawnError.failed("\(transport.peerName) answered with a \(T.self) that does not decode: \(error)")
        }
    }

    private struct Empty: Encodable {}
}

/// Server-sent events: frames of `event:` and `data:` lines ended by a blank line.
struct ServerSentEvents {
    struct Frame: Equatable {
        var event = "message"
        var data = ""
    }

    private var pending: [UInt8] = []
    private var frame = Frame()

    mutating func feed(_ bytes: [UInt8]) -> [Frame] {
        pending += bytes
        var frames: [Frame] = []
        while let newline = pending.firstIndex(of: 0x0A) {
            var line = String(decoding: pending[..<newline], as: UTF8.self)
            pending.removeSubrange(...newline)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty {
                if !frame.data.isEmpty { frames.append(frame) }
                frame = Frame()
            } else if line.hasPrefix("event:") {
                frame.event = line.dropFirst(6).trimmedWhitespace
            } else if line.hasPrefix("data:") {
                frame.data += (frame.data.isEmpty ? "" : "\n") + String(line.dropFirst(5).drop { $0 == " " })
            }
        }
        return frames
    }
}
