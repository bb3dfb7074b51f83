import FoundationEssentials
import NspawnAPI
import NspawnKit

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
