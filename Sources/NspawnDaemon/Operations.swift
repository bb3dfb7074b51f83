import FoundationEssentials
import NspawnKit

/// Long work started through the API: an import, followed by `GET /v1/operations/{id}` and
/// cancelled by `DELETE`. Operations live as long as the daemon, which stays up while one runs.
public struct Operation: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case running, succeeded, failed, cancelled
    }

    public struct Failure: Sendable, Codable, Equatable {
        public var code: String
        public var message: String
    }

    public var id: String
    public var kind = "import"
    public var name: String
    public var source: String
    public var state: State
    public var progress: ImportProgress?
    public var result: ImportResult?
    public var error: Failure?
    public var created: Date
}

/// What `POST /v1/images` asks for: a tarball URL, or a recipe.
struct ImportRequest: Decodable {
    var name: String
    var url: String?
    var checksum: String?
    var signature: String?
    var keyring: String?
    var recipe: String?
    var mirror: String?
    var verify: Bool?
    var force: Bool?
    enum CodingKeys: CodingKey { case name, url, checksum, signature, keyring, recipe, mirror, verify, force }

    init(from decoder: any Decoder) throws {
        let body = try decoder.container(keyedBy: CodingKeys.self)
        name = try body.decode(String.self, forKey: .name)
        url = try body.decodeUnlessNull(String.self, forKey: .url)
        checksum = try body.decodeUnlessNull(String.self, forKey: .checksum)
        signature = try body.decodeUnlessNull(String.self, forKey: .signature)
        keyring = try body.decodeUnlessNull(String.self, forKey: .keyring)
        recipe = try body.decodeUnlessNull(String.self, forKey: .recipe)
        mirror = try body.decodeUnlessNull(String.self, forKey: .mirror)
        verify = try body.decodeUnlessNull(Bool.self, forKey: .verify)
        force = try body.decodeUnlessNull(Bool.self, forKey: .force)
    }
}

/// The running and recent operations, and who listens for their progress.
public actor OperationRegistry {
    private struct Entry {
        var operation: Operation
        let cancel: ChildCancel
        var task: Task<Void, Never>?
    }

    private var entries: [String: Entry] = [:]
    private var order: [String] = []
    private var listeners: [UUID: AsyncStream<Operation>.Continuation] = [:]
    private let importer: ChildImporter
    private let onFinish: @Sendable () async -> Void
    /// Finished operations kept for GET, oldest dropped first.
    private let keep = 100

    public init(importer: ChildImporter = ChildImporter(), onFinish: @escaping @Sendable () async -> Void = {}) {
        self.importer = importer
        self.onFinish = onFinish
    }

    public var runningCount: Int { entries.values.filter { $0.operation.state == .running }.count }

    func start(name: MachineName, job: ImportJob) -> Operation {
        var bytes = [UInt8](repeating: 0, count: 8)
        for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
        let id = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        let operation = Operation(id: id, name: name.rawValue, source: job.source, state: .running, created: Date())
        let cancel = ChildCancel()
        entries[id] = Entry(operation: operation, cancel: cancel)
        order.append(id)
        let importer = importer
        entries[id]?.task = Task {
            let outcome = await importer.run(job, name: name, cancel: cancel) { progress in
                Task { await self.update(id) { $0.progress = progress } }
            }
            await onFinish()
            self.finish(id, outcome)
        }
        broadcast(operation)
        return operation
    }

    func get(_ id: String) -> Operation? { entries[id]?.operation }

    /// Cancels a running import and waits until it has cleaned up, then forgets the operation,
    /// finished or not: the answer is its final state, and a later GET finds nothing.
    func remove(_ id: String) async -> Operation? {
        guard let entry = entries[id] else { return nil }
        entry.cancel.cancel()
        await entry.task?.value
        guard let final = entries.removeValue(forKey: id)?.operation else { return nil }
        order.removeAll { $0 == id }
        return final
    }

    func subscribe() -> (UUID, AsyncStream<Operation>) {
        let (stream, continuation) = AsyncStream<Operation>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = UUID()
        listeners[key] = continuation
        return (key, stream)
    }

    func unsubscribe(_ key: UUID) {
        listeners.removeValue(forKey: key)?.finish()
    }

    private func update(_ id: String, _ change: (inout Operation) -> Void) {
        guard var operation = entries[id]?.operation, operation.state == .running else { return }
        change(&operation)
        entries[id]?.operation = operation
        broadcast(operation)
    }

    private func finish(_ id: String, _ outcome: Result<ImportResult, NspawnError>) {
        guard var operation = entries[id]?.operation else { return }
        switch outcome {
        case .success(let result):
            operation.state = .succeeded
            operation.result = result
        case .failure(let error):
            operation.state = error.category == .cancelled ? .cancelled : .failed
            operation.error = .init(code: error.category.rawValue, message: error.description)
        }
        entries[id]?.operation = operation
        entries[id]?.task = nil
        broadcast(operation)
        let finished = order.filter { entries[$0]?.operation.state != .running }
        for old in finished.dropLast(keep) {
            entries.removeValue(forKey: old)
            order.removeAll { $0 == old }
        }
    }

    private func broadcast(_ operation: Operation) {
        for continuation in listeners.values { continuation.yield(operation) }
    }
}
