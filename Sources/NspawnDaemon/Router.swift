import FoundationEssentials
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// Routes `/v1/...` requests: finds the endpoint, checks the peer's role, decodes the
/// endpoint's request type and makes the one service call it stands for.
public struct Router: Sendable {
    let service: any NspawnService
    let authorizer: Authorizer
    public let operations: OperationRegistry
    public let listings: ListCoalescer
    let manifests: ManifestEngine
    /// nspawnd's own events (a resize's steps), for every `/v1/events` stream.
    let notices = Listeners<MachineEvent>()
    /// Requests and latencies, for `/v1/metrics`.
    public let metrics = DaemonMetrics()

    public init(service: any NspawnService, authorizer: Authorizer = Authorizer(), importer: ImagesHelper = ImagesHelper(),
                manifests: ManifestEngine? = nil) {
        self.service = service
        self.authorizer = authorizer
        self.manifests = manifests ?? .library(importer: importer)
        let listings = ListCoalescer()
        self.listings = listings
        // A finished import adds an image, which machined announces to nobody.
        self.operations = OperationRegistry(importer: importer, onFinish: { await listings.invalidate() })
    }

    /// Where a request goes, decided once: an answer, or one of the streams the server runs
    /// itself (events; a machine's logs; exec, authorized and decoded, before its protocol switch).
    public enum Routed: Sendable {
        case answer(APIResponse)
        case events
        case logs(MachineName, LogRequest)
        case exec(MachineName, ExecSpec)
    }

    public func route(_ request: APIRequest) async -> Routed {
        switch Endpoint.match(method: request.method, path: request.path) {
        case .unknown:
            let hint = request.path.hasPrefix("/v1/") ? "" : "; the API lives under /v1"
            return .answer(.error(status: 404, code: "not_found", message: "no such resource '\(request.path.escapedForMessage)'\(hint)"))
        case .methodNotAllowed(let allowed):
            var refusal = APIResponse.error(status: 405, code: "invalid_input",
                                            message: "\(request.method.escapedForMessage) is not allowed on \(request.path.escapedForMessage)")
            refusal.headers.append(("Allow", allowed.joined(separator: ", ")))
            return .answer(refusal)
        case .found(let endpoint, let parameter):
            if let refusal = refusal(endpoint, peer: request.peer) { return .answer(refusal) }
            return await answering {
                switch endpoint {
                case .events: return .events
                case .logs: return .logs(try MachineName(parameter ?? ""), try LogRequest(query: request.query))
                case .exec:
                    let (name, spec) = try execSpec(parameter ?? "", request)
                    return .exec(name, spec)
                default: return .answer(try await dispatch(endpoint, parameter ?? "", request))
                }
            }
        }
    }

    /// The metrics listener's one route: `GET /metrics` (or `/v1/metrics`) for anyone who can
    /// connect; everything else is 404, so nothing but numbers leaves through it.
    public func routeMetricsOnly(_ request: APIRequest) async -> APIResponse {
        guard request.path == "/metrics" || request.path == Endpoint.metrics.template else {
            return .error(status: 404, code: "not_found", message: "this listener serves only GET /metrics")
        }
        guard request.method == "GET" else {
            var refusal = APIResponse.error(status: 405, code: "invalid_input", message: "\(request.method.escapedForMessage) is not allowed on \(request.path)")
            refusal.headers.append(("Allow", "GET"))
            return refusal
        }
        do {
            return try await metricsResponse()
        } catch let error as NspawnError {
            return .error(error)
        } catch {
            return .error(status: 500, code: "failure", message: "\(error)")
        }
    }

    /// Answers every request, the streams with the error a caller without a server gets.
    public func handle(_ request: APIRequest) async -> APIResponse {
        switch await route(request) {
        case .answer(let response): return response
        case .events:
            return .error(.remote(.invalidInput, message: "GET /v1/events is a stream; read it as one", busError: nil))
        case .logs(let name, _):
            return .error(.remote(.invalidInput, message: "GET /v1/machines/\(name)/logs is a stream; read it as one", busError: nil))
        case .exec(let name, _):
            return .error(status: 400, code: "invalid_input", message: Self.upgradeRequired(name.rawValue))
        }
    }

    /// Errors thrown while routing, as the JSON error every route gives.
    private func answering(_ body: () async throws -> Routed) async -> Routed {
        do {
            return try await body()
        } catch let error as NspawnError {
            return .answer(.error(error))
        } catch let error as BodyError {
            return .answer(.error(status: error.status, code: "invalid_input", message: error.message))
        } catch {
            return .answer(.error(status: 500, code: "failure", message: "\(error)"))
        }
    }

    /// Nil when `peer` may use `endpoint`, else the 403 that says what it would need.
    public func refusal(_ endpoint: Endpoint, peer: Peer) -> APIResponse? {
        let role = authorizer.role(of: peer)
        guard role < endpoint.role else { return nil }
        let message = endpoint.role == .admin && role == .operator
            ? "permission denied: \(endpoint.purpose) needs root; uid \(peer.uid) (group '\(authorizer.group)') may read and run machines"
            : "permission denied: uid \(peer.uid) is neither root nor in group '\(authorizer.group)'"
        return .error(status: 403, code: "permission_denied", message: message)
    }

    private func dispatch(_ endpoint: Endpoint, _ parameter: String, _ request: APIRequest) async throws -> APIResponse {
        switch endpoint {
        case .version:
            return .json(VersionInfo())
        case .listMachines:
            let query = try ListRequest(query: request.query)
            if query.all == true { return .json(try await service.list(query)) }
            let service = service
            return APIResponse(status: 200, body: try await listings.listJSON { try await service.list(ListRequest()) })
        case .listImages:
            let service = service
            return .json(try await listings.list { try await service.list(ListRequest()) }.filter { $0.imageType != nil })
        case .getMachine:
            return .json(try await service.status(try MachineName(parameter)))
        case .getConfig:
            return .json(try await service.config(try MachineName(parameter)))
        case .listSnapshots:
            return .json(try await service.snapshots(try MachineName(parameter)))
        case .stats:
            return .json(try await service.stats(try StatsRequest(query: request.query)))
        case .metrics:
            guard request.query == nil else { throw BodyError(status: 400, message: "GET /v1/metrics takes no query") }
            return try await metricsResponse()
        case .listFlavors:
            // The host's presets, for a client's choice of flavor. A broken file is the host's
            // fault, not the request's: 500, naming the file as a use of it would.
            do {
                return .json(try Flavor.available().map { name throws(NspawnError) in try Flavor.load(name) })
            } catch {
                throw NspawnError.remote(.failure, message: error.description, busError: nil)
            }
        case .importImage:
            return try await startImport(try decode(ImportRequest.self, request))
        case .getOperation:
            guard let operation = await operations.get(parameter) else { throw NspawnError.remote(.notFound, message: "no operation '\(parameter.escapedForMessage)'", busError: nil) }
            return .json(operation)
        case .cancelOperation:
            guard let operation = try await operations.remove(parameter) else { throw NspawnError.remote(.notFound, message: "no operation '\(parameter.escapedForMessage)'", busError: nil) }
            return .json(operation)
        case .createMachine:
            // The service checks the image exists before the values, so an unknown image is 404.
            let body = try decode(CreateRequest.self, request)
            return try await changing { .json(try await service.create(body), status: 201) }
        case .planManifest:
            return try await planManifest(try decode(PlanRequest.self, request))
        case .applyManifest:
            return try await startApply(try decode(ApplyRequest.self, request))
        case .events, .exec, .logs:
            // route(_:) hands these to the server before any dispatch; never a crash of the daemon.
            throw NspawnError.failed("\(endpoint) is a stream, routed by route(_:)")
        default:
            let name = try MachineName(parameter)
            return try await changing { try await change(endpoint, name, request) }
        }
    }

    /// What an exec stream routed by `route(_:)` gets before the switch: the command started,
    /// or the JSON error any other route would give. `upgrade` is the protocol the request
    /// asked to switch to, if any.
    public func startExec(_ name: MachineName, _ spec: ExecSpec, upgrade: String?) async -> ExecStart {
        guard let upgrade, upgrade.lowercased() == ExecStream.upgradeToken else {
            let offered = upgrade.map { "; '\(String($0.prefix(80)).escapedForMessage)' is not a protocol nspawnd speaks" } ?? ""
            return .refused(.error(status: 400, code: "invalid_input", message: Self.upgradeRequired(name.rawValue) + offered))
        }
        do {
            return .started(try await service.exec(name, spec))
        } catch let error as NspawnError {
            return .refused(.error(error))
        } catch {
            return .refused(.error(status: 500, code: "failure", message: "\(error)"))
        }
    }

    /// Routes `request` and starts it when it is an exec stream (for callers without a server).
    public func startExec(_ request: APIRequest, upgrade: String?) async -> ExecStart {
        switch await route(request) {
        case .exec(let name, let spec): return await startExec(name, spec, upgrade: upgrade)
        case .answer(let response): return .refused(response)
        case .events, .logs: return .refused(.error(status: 404, code: "not_found", message: "no such resource '\(request.path.escapedForMessage)'"))
        }
    }

    public enum ExecStart: Sendable {
        case started(any GuestProcess)
        case refused(APIResponse)
    }

    private func execSpec(_ parameter: String, _ request: APIRequest) throws -> (MachineName, ExecSpec) {
        let name = try MachineName(parameter)
        return (name, try decode(ExecRequest.self, request).spec)
    }

    static func upgradeRequired(_ name: String) -> String {
        "POST /v1/machines/\(name.escapedForMessage)/exec switches to a framed stream: send 'Connection: Upgrade' and "
            + "'Upgrade: \(ExecStream.upgradeToken)' (see units/openapi.yaml)"
    }

    /// The endpoints that change a machine or an image. Decoding only: the service validates
    /// each request, so a refusal reads the same on every route.
    private func change(_ endpoint: Endpoint, _ name: MachineName, _ request: APIRequest) async throws -> APIResponse {
        let done = ActionResult(name: name.rawValue, result: endpoint.rawValue)
        switch endpoint {
        case .start:
            try await service.start(name)
        case .stop:
            let body = try decodeOptional(StopRequest.self, request) ?? StopRequest()
            try await service.stop(name, body)
        case .reboot:
            try await service.reboot(name, try decodeOptional(RebootRequest.self, request) ?? RebootRequest())
        case .terminate:
            try await service.terminate(name)
        case .kill:
            let body = try decodeOptional(KillRequest.self, request) ?? KillRequest()
            try await service.kill(name, body)
        case .enable:
            return .json(try await service.enable(name))
        case .disable:
            return .json(try await service.disable(name))
        case .configure:
            let body = try decode(ConfigRequest.self, request)
            return .json(try await service.configure(name, body))
        case .expose:
            let body = try decode(ExposeRequest.self, request)
            return .json(try await service.expose(name, body))
        case .unexpose:
            let body = try decodeOptional(UnexposeRequest.self, request) ?? UnexposeRequest()
            try await service.unexpose(name, body)
            return .json(ActionResult(name: name.rawValue, result: "unexposed"))
        case .resize:
            let body = try decode(ResizeRequest.self, request)
            return try await announced(try await service.resize(name, body))
        case .confirmResize:
            return try await announced(try await service.confirmResize(name))
        case .revertResize:
            return try await announced(try await service.revertResize(name))
        case .rebuild:
            let body = try decodeOptional(RebuildRequest.self, request) ?? RebuildRequest()
            return .json(try await service.rebuild(name, body))
        case .removeImage:
            let body = try decodeOptional(RemoveRequest.self, request) ?? RemoveRequest()
            try await service.remove(name, body)
            return .json(ActionResult(name: name.rawValue, result: "removed"))
        case .cloneImage:
            let body = try decode(CloneRequest.self, request)
            try await service.clone(name, body)
            return .json(ActionResult(name: body.name, result: "cloned from \(name)"), status: 201)
        case .renameImage:
            let body = try decode(RenameRequest.self, request)
            try await service.rename(name, body)
            return .json(ActionResult(name: body.name, result: "renamed from \(name)"))
        case .setReadOnly:
            let body = try decode(ReadOnlyRequest.self, request)
            try await service.setReadOnly(name, body)
            return .json(ActionResult(name: name.rawValue, result: body.readOnly ? "read-only" : "writable"))
        case .createSnapshot:
            let body = try decodeOptional(SnapshotRequest.self, request) ?? SnapshotRequest()
            return .json(try await service.snapshot(name, body), status: 201)
        case .restore:
            let body = try decode(RestoreRequest.self, request)
            return .json(try await service.restore(name, body))
        case .removeSnapshot:
            let body = try decode(SnapshotRemoveRequest.self, request)
            try await service.removeSnapshot(name, body)
            return .json(ActionResult(name: name.rawValue, result: "snapshot '\(body.snapshot)' removed"))
        default:
            throw NspawnError.remote(.notFound, message: "no such resource '\(request.path.escapedForMessage)'", busError: nil)
        }
        return .json(done)
    }

    /// `GET /v1/events` as server-sent event frames: machined's changes, operations'
    /// progress and nspawnd's own resize events merged in order, with a comment for each heartbeat. The producers hold the
    /// stream open, so its consumer calls `stop` when it is done.
    public func eventFrames() async -> (frames: AsyncStream<String>, stop: @Sendable () -> Void) {
        let (frames, sink) = AsyncStream<String>.makeStream()
        let (key, progress) = await operations.subscribe()
        let (noticeKey, noticed) = notices.subscribe()
        let (operations, service, notices) = (operations, service, notices)
        let machineTask = Task {
            let encoder = WireJSON.encoder(pretty: false)
            do {
                for try await event in service.events() {
                    if event.event == .heartbeat {
                        sink.yield(": heartbeat\n\n")
                    } else {
                        sink.yield("event: \(event.event.rawValue)\ndata: \(String(decoding: try encoder.encode(event), as: UTF8.self))\n\n")
                    }
                }
            } catch {
                sink.yield("event: error\ndata: \(String(decoding: APIResponse.error(status: 500, code: "failure", message: "\(error)").body.dropLast(), as: UTF8.self))\n\n")
            }
            sink.finish()
        }
        let operationTask = Task {
            let encoder = WireJSON.encoder(pretty: false)
            for await operation in progress {
                guard let data = try? encoder.encode(operation) else { continue }
                sink.yield("event: operation\ndata: \(String(decoding: data, as: UTF8.self))\n\n")
            }
        }
        let noticeTask = Task {
            let encoder = WireJSON.encoder(pretty: false)
            for await event in noticed {
                guard let data = try? encoder.encode(event) else { continue }
                sink.yield("event: \(event.event.rawValue)\ndata: \(String(decoding: data, as: UTF8.self))\n\n")
            }
        }
        return (frames, {
            machineTask.cancel()
            operationTask.cancel()
            noticeTask.cancel()
            sink.finish()
            Task {
                await operations.unsubscribe(key)
                notices.unsubscribe(noticeKey)
            }
        })
    }

    /// A machine's journal as `application/x-ndjson` text: a line per entry, a blank line per
    /// heartbeat, and after a failure a last line holding the error. A refusal comes before any.
    public func startLogs(_ name: MachineName, _ request: LogRequest) async -> LogStart {
        let batches: AsyncThrowingStream<[LogEntry], any Error>
        do {
            batches = try await service.logs(name, request)
        } catch {
            return .refused(.error(error as? NspawnError ?? .failed("\(error)")))
        }
        let (chunks, sink) = AsyncStream<String>.makeStream()
        let task = Task {
            let encoder = WireJSON.encoder(pretty: false)
            do {
                for try await batch in batches {
                    var text = batch.isEmpty ? "\n" : ""
                    for entry in batch { text += String(decoding: try encoder.encode(entry), as: UTF8.self) + "\n" }
                    sink.yield(text)
                }
            } catch {
                sink.yield(String(decoding: APIResponse.error(error as? NspawnError ?? .failed("\(error)")).body, as: UTF8.self) + "\n")
            }
            sink.finish()
        }
        sink.onTermination = { _ in task.cancel() }
        return .started(chunks)
    }

    public enum LogStart: Sendable {
        case started(AsyncStream<String>)
        case refused(APIResponse)
    }

    /// A resize step's answer, announced on `/v1/events` too.
    private func announced(_ result: ResizeResult) async throws -> APIResponse {
        notices.publish(MachineEvent(result))
        return .json(result)
    }

    /// Runs a change, then retires any listing that began before it ended, whatever the outcome.
    private func changing(_ body: () async throws -> APIResponse) async throws -> APIResponse {
        do {
            let response = try await body()
            await listings.invalidate()
            return response
        } catch {
            await listings.invalidate()
            throw error
        }
    }

    /// Validates an import request whole, then starts it and answers 202 with the operation.
    private func startImport(_ body: ImportRequest) async throws -> APIResponse {
        try body.validate()
        let job: ImportJob
        if let url = body.url {
            job = .url(url, checksum: body.checksum, signature: body.signature, keyring: body.keyring, force: body.force ?? false)
        } else if let recipeName = body.recipe {
            // An unknown recipe or a bad mirror is refused now, with the error the direct path
            // gives; fetching the checksum list and checking it is the import's own first step.
            _ = try Recipe.load(recipeName).resolved(mirror: body.mirror)
            job = .recipe(recipeName, mirror: body.mirror, tarball: nil, checksum: body.checksum, signature: body.signature, keyring: body.keyring,
                          verify: body.verify ?? true, force: body.force ?? false)
        } else if let stream = body.stream {
            job = .stream(StreamReference.prefix + stream, remote: body.remote, force: body.force ?? false)
        } else if let reference = body.oci {
            job = .file(reference, checksum: nil, signature: nil, keyring: nil, force: body.force ?? false)
        } else {
            throw BodyError(status: 400, message: "give exactly one of url, recipe, oci or stream")
        }
        let name = try body.name.map { try MachineName($0) } ?? ImageStore.system.nextFreeName()
        let operation = await operations.start(name: name, job: job)
        var response = APIResponse.json(operation, status: 202)
        response.headers.append(("Location", Endpoint.getOperation.path(operation.id)))
        return response
    }
}

extension ListRequest {
    /// `all=true` or `all=false`; nothing else is a listing's query.
    init(query: String?) throws {
        self.init()
        for pair in (query ?? "").split(separator: "&") {
            switch pair {
            case "all=true", "all=1": all = true
            case "all=false", "all=0": all = false
            default: throw BodyError(status: 400, message: "invalid query '\(String(pair).escapedForMessage)': expected all=true or all=false")
            }
        }
    }
}

