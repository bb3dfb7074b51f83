import FoundationEssentials
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// One decoded HTTP request, as the router sees it.
public struct APIRequest: Sendable {
    public var method: String
    /// The path without the query, percent-decoding not applied (names never need it).
    public var path: String
    public var body: [UInt8]
    public var contentType: String?
    public var peer: Peer

    public init(method: String, path: String, body: [UInt8] = [], contentType: String? = nil, peer: Peer) {
        self.method = method
        self.path = path
        self.body = body
        self.contentType = contentType
        self.peer = peer
    }
}

public struct APIResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var headers: [(String, String)] = []

    public init(status: Int, body: [UInt8], headers: [(String, String)] = []) {
        self.status = status
        self.body = body
        self.headers = headers
    }

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        do {
            return APIResponse(status: status, body: Array(try WireJSON.encoder(pretty: false).encode(value)) + [0x0A])
        } catch {
            return .error(status: 500, code: "failure", message: "cannot encode the response: \(error)")
        }
    }

    static func error(status: Int, code: String, message: String, busError: String? = nil) -> APIResponse {
        json(ErrorBody(code: code, message: message, busError: busError), status: status)
    }

    static func error(_ error: NspawnError) -> APIResponse {
        .error(status: httpStatus(error.category), code: error.category.rawValue, message: error.description, busError: error.busErrorName)
    }
}

/// The HTTP status for each error category.
func httpStatus(_ category: NspawnError.Category) -> Int {
    switch category {
    case .invalidInput: 400
    case .permissionDenied: 403
    case .notFound: 404
    case .conflict: 409
    case .verificationFailed: 422
    case .cancelled: 409
    case .failure: 500
    }
}

public struct VersionInfo: Codable, Sendable {
    public var name = "nspawnd"
    public var version: String
    public var api = "v1"
}

/// Routes `/v1/...` requests to the library, after checking the peer's role.
public struct Router: Sendable {
    public static let version = "0.5.0"
    let service: any MachineService
    let authorizer: Authorizer
    public let operations: OperationRegistry
    public let listings: ListCoalescer

    public init(service: any MachineService, authorizer: Authorizer = Authorizer(), importer: ChildImporter = ChildImporter()) {
        self.service = service
        self.authorizer = authorizer
        let listings = ListCoalescer()
        self.listings = listings
        // A finished import adds an image, which machined announces to nobody.
        self.operations = OperationRegistry(importer: importer, onFinish: { await listings.invalidate() })
    }

    /// Nil when `peer` may follow `GET /v1/events` (the server streams it itself), else the refusal.
    public func eventsRefusal(for peer: Peer) -> APIResponse? {
        authorizer.role(of: peer) >= .operator ? nil
            : .error(status: 403, code: "permission_denied", message: "permission denied: uid \(peer.uid) is neither root nor in group '\(authorizer.group)'")
    }

    public func handle(_ request: APIRequest) async -> APIResponse {
        let segments = request.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        guard request.path.hasPrefix("/"), segments.first == "v1" else {
            return .error(status: 404, code: "not_found", message: "no such resource '\(request.path.escapedForJSONMessage)'; the API lives under /v1")
        }
        let route = Route(Array(segments.dropFirst()))
        let role = authorizer.role(of: request.peer)
        do {
            if case .version = route, request.method == "GET" {
                return .json(VersionInfo(version: Self.version))
            }
            guard role >= .operator else {
                return .error(status: 403, code: "permission_denied",
                              message: "permission denied: uid \(request.peer.uid) is neither root nor in group '\(authorizer.group)'")
            }
            switch (request.method, route) {
            case ("GET", .machines):
                return APIResponse(status: 200, body: try await listings.listJSON(service))
            case ("GET", .machine(let name)):
                return .json(try await service.status(try MachineName(name)))
            case ("POST", .machineAction(let name, let action)):
                return try await machineAction(try MachineName(name), action, request)
            case ("GET", .images):
                return .json(try await listings.list(service).filter { $0.imageType != nil })
            case ("POST", .images):
                guard role >= .admin else {
                    return .error(status: 403, code: "permission_denied",
                                  message: "permission denied: importing images needs root; uid \(request.peer.uid) may read and run machines")
                }
                return try await startImport(request)
            case ("GET", .operation(let id)):
                guard let operation = await operations.get(id) else {
                    return .error(status: 404, code: "not_found", message: "no operation '\(id.escapedForJSONMessage)'")
                }
                return .json(operation)
            case ("DELETE", .operation(let id)):
                guard role >= .admin else {
                    return .error(status: 403, code: "permission_denied", message: "permission denied: cancelling imports needs root")
                }
                guard let operation = await operations.remove(id) else {
                    return .error(status: 404, code: "not_found", message: "no operation '\(id.escapedForJSONMessage)'")
                }
                return .json(operation)
            case ("DELETE", .image(let name)), ("POST", .imageAction(let name, _)):
                guard role >= .admin else {
                    return .error(status: 403, code: "permission_denied",
                                  message: "permission denied: changing images needs root; uid \(request.peer.uid) may read and run machines")
                }
                return try await imageAction(try MachineName(name), route, request)
            case (_, .unknown):
                return .error(status: 404, code: "not_found", message: "no such resource '\(request.path.escapedForJSONMessage)'")
            default:
                var refusal = APIResponse.error(status: 405, code: "invalid_input",
                                                message: "\(request.method.escapedForJSONMessage) is not allowed on \(request.path.escapedForJSONMessage)")
                refusal.headers.append(("Allow", route.allowedMethods.joined(separator: ", ")))
                return refusal
            }
        } catch let error as NspawnError {
            return .error(error)
        } catch let error as BodyError {
            return .error(status: error.status, code: "invalid_input", message: error.message)
        } catch {
            return .error(status: 500, code: "failure", message: "\(error)")
        }
    }

    struct StopBody: Decodable {
        var timeout: Double?
        enum CodingKeys: CodingKey { case timeout }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            timeout = try body.decodeUnlessNull(Double.self, forKey: .timeout)
        }
    }

    struct KillBody: Decodable {
        var signal: String?
        var whom: String?
        enum CodingKeys: CodingKey { case signal, whom }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            signal = try body.decodeUnlessNull(String.self, forKey: .signal)
            whom = try body.decodeUnlessNull(String.self, forKey: .whom)
        }
    }

    struct NameBody: Decodable {
        var name: String
        var readOnly: Bool?
        enum CodingKeys: CodingKey { case name, readOnly }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            name = try body.decode(String.self, forKey: .name)
            readOnly = try body.decodeUnlessNull(Bool.self, forKey: .readOnly)
        }
    }

    struct ForceBody: Decodable {
        var force: Bool?
        enum CodingKeys: CodingKey { case force }

        init(from decoder: any Decoder) throws {
            force = try decoder.container(keyedBy: CodingKeys.self).decodeUnlessNull(Bool.self, forKey: .force)
        }
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

    private func machineAction(_ name: MachineName, _ action: String, _ request: APIRequest) async throws -> APIResponse {
        try await changing { try await machineAction0(name, action, request) }
    }

    private func machineAction0(_ name: MachineName, _ action: String, _ request: APIRequest) async throws -> APIResponse {
        switch action {
        case "start":
            try await service.start(name)
        case "stop":
            let body = try decodeBody(StopBody.self, request, optional: true)
            let seconds = body?.timeout ?? 90
            guard seconds.isFinite, seconds >= 0, seconds <= 86_400 else {
                throw BodyError(status: 400, message: "invalid timeout \(seconds): expected seconds between 0 and 86400")
            }
            try await service.stop(name, timeout: .milliseconds(Int64(seconds * 1000)))
        case "reboot":
            try await service.reboot(name)
        case "terminate":
            try await service.terminate(name)
        case "kill":
            let body = try decodeBody(KillBody.self, request, optional: true)
            let signal = try UnixSignal(parsing: body?.signal ?? "TERM")
            let whom: KillWhom
            switch body?.whom ?? "all" {
            case "all": whom = .all
            case "leader": whom = .leader
            case let other: throw BodyError(status: 400, message: "invalid whom '\(other.escapedForJSONMessage)': expected leader or all")
            }
            try await service.kill(name, signal: signal, whom: whom)
        default:
            return .error(status: 404, code: "not_found", message: "no action '\(action.escapedForJSONMessage)'; expected start, stop, reboot, terminate or kill")
        }
        return .json(ActionResult(name: name.rawValue, result: action))
    }

    private func imageAction(_ name: MachineName, _ route: Route, _ request: APIRequest) async throws -> APIResponse {
        try await changing { try await imageAction0(name, route, request) }
    }

    private func imageAction0(_ name: MachineName, _ route: Route, _ request: APIRequest) async throws -> APIResponse {
        switch (request.method, route) {
        case ("DELETE", .image):
            let force = try decodeBody(ForceBody.self, request, optional: true)?.force ?? false
            try await service.remove(name, force: force, stopTimeout: .seconds(90))
            return .json(ActionResult(name: name.rawValue, result: "removed"))
        case ("POST", .imageAction(_, "clone")):
            let body = try decodeBody(NameBody.self, request, optional: false)!
            let newName = try MachineName(body.name)
            try await service.clone(name, to: newName, readOnly: body.readOnly ?? false)
            return .json(ActionResult(name: newName.rawValue, result: "cloned from \(name)"), status: 201)
        case ("POST", .imageAction(_, "rename")):
            let body = try decodeBody(NameBody.self, request, optional: false)!
            let newName = try MachineName(body.name)
            try await service.rename(name, to: newName)
            return .json(ActionResult(name: newName.rawValue, result: "renamed from \(name)"))
        default:
            return .error(status: 404, code: "not_found", message: "no such image action '\(request.path.escapedForJSONMessage)'; expected clone or rename")
        }
    }

    /// Validates an import request whole, then starts it and answers 202 with the operation.
    private func startImport(_ request: APIRequest) async throws -> APIResponse {
        guard let body = try decodeBody(ImportRequest.self, request, optional: false) else {
            throw BodyError(status: 400, message: "a JSON body is required")
        }
        let name = try MachineName(body.name)
        // What verifies the tarball is checked the same for both kinds and handed to the child.
        if let checksum = body.checksum, !Self.isSHA256Checksum(checksum) {
            throw BodyError(status: 400, message: "invalid checksum '\(checksum.escapedForJSONMessage)': expected sha256:64-HEX")
        }
        if let signature = body.signature, (!Self.isURL(signature) && !signature.hasPrefix("/")) || signature.unicodeScalars.count > 4096 {
            throw BodyError(status: 400, message: "invalid signature '\(signature.escapedForJSONMessage)': expected a URL or an absolute path")
        }
        if let keyring = body.keyring, !keyring.hasPrefix("/") || keyring.unicodeScalars.count > 4096 {
            throw BodyError(status: 400, message: "invalid keyring '\(keyring.escapedForJSONMessage)': expected an absolute path")
        }
        if (body.signature == nil) != (body.keyring == nil) {
            throw BodyError(status: 400, message: "signature and keyring go together")
        }
        let job: ImportJob
        switch (body.url, body.recipe) {
        case (let url?, nil):
            guard Self.isDownloadURL(url) else {
                throw BodyError(status: 400, message: "invalid url '\(url.escapedForJSONMessage)': expected http:// or https://")
            }
            if body.mirror != nil || body.verify != nil {
                throw BodyError(status: 400, message: "mirror and verify belong to recipe imports; a url import verifies with checksum or signature")
            }
            job = .url(url, checksum: body.checksum, signature: body.signature, keyring: body.keyring, force: body.force ?? false)
        case (nil, let recipeName?):
            guard !recipeName.contains("/"), !recipeName.hasPrefix("."), recipeName.utf8.count <= 64 else {
                throw BodyError(status: 400, message: "invalid recipe '\(recipeName.escapedForJSONMessage)': give a recipe name, not a path")
            }
            if let mirror = body.mirror, !Self.isDownloadURL(mirror) {
                throw BodyError(status: 400, message: "invalid mirror '\(mirror.escapedForJSONMessage)': expected http:// or https://")
            }
            if body.verify == false && (body.checksum != nil || body.signature != nil) {
                throw BodyError(status: 400, message: "verify false contradicts checksum and signature")
            }
            // An unknown recipe or a bad mirror is refused now; fetching the checksum list and
            // checking it is the import's own first step.
            guard Recipe.searchDirectories.contains(where: { access("\($0)/\(recipeName).recipe", F_OK) == 0 }) else {
                return .error(status: 404, code: "not_found", message: "no recipe '\(recipeName.escapedForJSONMessage)'")
            }
            _ = try Recipe.load(recipeName).resolved(mirror: body.mirror)
            job = .recipe(recipeName, mirror: body.mirror, checksum: body.checksum, signature: body.signature, keyring: body.keyring,
                          verify: body.verify ?? true, force: body.force ?? false)
        default:
            throw BodyError(status: 400, message: "give exactly one of url or recipe")
        }
        let operation = await operations.start(name: name, job: job)
        var response = APIResponse.json(operation, status: 202)
        response.headers.append(("Location", "/v1/operations/\(operation.id)"))
        return response
    }

    /// A URL the child may be told to fetch: no spaces or control characters, at most 4096 long.
    static func isDownloadURL(_ text: String) -> Bool {
        isURL(text) && text.unicodeScalars.count <= 4096
            && !text.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7f }
    }

    /// http:// or https:// and something after it.
    static func isURL(_ text: String) -> Bool {
        guard ImageSource.isURL(text) else { return false }
        // "http:" has its colon at byte 4, "https:" at byte 5.
        let schemeLength = Array(text.utf8.prefix(5)).last == UInt8(ascii: ":") ? 7 : 8
        return text.utf8.count > schemeLength
    }

    static func isSHA256Checksum(_ text: String) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.dropFirst("sha256:".count)
        return hex.count == 64 && hex.unicodeScalars.allSatisfy { $0.properties.isASCIIHexDigit }
    }

    /// Decodes a JSON body. An empty body is nil when `optional`; anything else must be JSON.
    func decodeBody<T: Decodable>(_ type: T.Type, _ request: APIRequest, optional: Bool) throws -> T? {
        if request.body.isEmpty {
            if optional { return nil }
            throw BodyError(status: 400, message: "a JSON body is required")
        }
        if let contentType = request.contentType, !contentType.lowercased().hasPrefix("application/json") {
            throw BodyError(status: 415, message: "expected Content-Type application/json, not '\(contentType.escapedForJSONMessage)'")
        }
        do {
            return try WireJSON.decoder().decode(T.self, from: Data(request.body))
        } catch {
            throw BodyError(status: 400, message: "malformed JSON body: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing key '\(key.stringValue)'"
        case DecodingError.valueNotFound(_, let context):
            "'\(context.codingPath.map(\.stringValue).joined(separator: "."))' must not be null"
        case DecodingError.typeMismatch(_, let context):
            "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted: "not valid JSON"
        default: "not valid JSON"
        }
    }
}

/// `GET /v1/machines` answers from one listing at a time. machined serves one client at a time,
/// so 50 clients asking at once would otherwise queue 50 identical rounds.
/// - Requests that arrive while a listing runs share it.
/// - A finished listing answers for `maxAge` more, until anything changes: a change made through
///   the daemon, or machined's MachineNew/MachineRemoved (the server invalidates on both).
/// - Once it is older, the first request starts a new listing and waits for it; requests that
///   arrive meanwhile get the previous one rather than queue behind machined.
/// A client therefore never sees a list older than its own last action, and a change made
/// elsewhere shows within `maxAge` plus one listing's run time.
public actor ListCoalescer {
    private var generation = 0
    private var running: (generation: Int, task: Task<[MachineSummary], any Error>)?
    private var last: (generation: Int, started: ContinuousClock.Instant, machines: [MachineSummary])?
    let maxAge: Duration

    init(maxAge: Duration = .seconds(1)) {
        self.maxAge = maxAge
    }

    /// The listing as the response body, encoded once per listing.
    func listJSON(_ service: any MachineService) async throws -> [UInt8] {
        let machines = try await list(service)
        if let lastJSON, lastJSON.generation == generation, lastJSON.machines == machines { return lastJSON.body }
        let body = APIResponse.json(machines).body
        lastJSON = (generation, machines, body)
        return body
    }

    private var lastJSON: (generation: Int, machines: [MachineSummary], body: [UInt8])?

    func list(_ service: any MachineService) async throws -> [MachineSummary] {
        let maxAge = maxAgeOverride ?? maxAge
        if let last, last.generation == generation, maxAge > .zero {
            if ContinuousClock.now - last.started < maxAge { return last.machines }
            if let running, running.generation == generation { return last.machines }
        }
        if let running, running.generation == generation {
            return try await running.task.value
        }
        let task = Task { try await service.list(includeHidden: false) }
        let mine = generation
        let started = ContinuousClock.now
        running = (mine, task)
        defer {
            if running?.generation == mine, running?.task == task { running = nil }
        }
        let machines = try await task.value
        if generation == mine { last = (mine, started, machines) }
        return machines
    }

    public func invalidate() {
        generation += 1
        last = nil
    }

    /// Without machined's signals a finished listing could be stale: answer each request anew.
    public func disable() {
        maxAgeOverride = .zero
        invalidate()
    }

    private var maxAgeOverride: Duration?
}

/// The resources under /v1, parsed from path segments.
enum Route: Equatable {
    case version, machines, images, events
    case operation(String)
    case machine(String)
    case machineAction(String, String)
    case image(String)
    case imageAction(String, String)
    case unknown

    /// What a 405 names in its Allow header (RFC 9110).
    var allowedMethods: [String] {
        switch self {
        case .version, .machines, .events, .machine: ["GET"]
        case .images: ["GET", "POST"]
        case .operation: ["GET", "DELETE"]
        case .image: ["DELETE"]
        case .machineAction, .imageAction: ["POST"]
        case .unknown: []
        }
    }

    init(_ segments: [String]) {
        switch segments.count {
        case 1:
            switch segments[0] {
            case "version": self = .version
            case "machines": self = .machines
            case "images": self = .images
            case "events": self = .events
            default: self = .unknown
            }
        case 2 where segments[0] == "machines": self = .machine(segments[1])
        case 2 where segments[0] == "images": self = .image(segments[1])
        case 2 where segments[0] == "operations": self = .operation(segments[1])
        case 3 where segments[0] == "machines": self = .machineAction(segments[1], segments[2])
        case 3 where segments[0] == "images": self = .imageAction(segments[1], segments[2])
        default: self = .unknown
        }
    }
}

/// The result of an action on one machine, as `nspawnctl --json` prints it.
struct ActionResult: Codable {
    var name: String
    var result: String
}

struct BodyError: Error {
    var status: Int
    var message: String
}

extension String {
    /// Hostile paths and names are echoed without control characters.
    var escapedForJSONMessage: String {
        String(String.UnicodeScalarView(unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : $0 }.prefix(200)))
    }
}

extension KeyedDecodingContainer {
    /// An absent key is nil, an explicit null an error: the API document has no nullable field,
    /// and `"url": null` beside a recipe must not pass for "no url".
    func decodeUnlessNull<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key) else { return nil }
        if try decodeNil(forKey: key) {
            throw DecodingError.valueNotFound(T.self, .init(codingPath: codingPath + [key], debugDescription: "null"))
        }
        return try decode(T.self, forKey: key)
    }
}
