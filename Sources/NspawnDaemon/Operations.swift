import FoundationEssentials
import NspawnAPI
import NspawnKit

/// The running and recent operations, and who listens for their progress.
public actor OperationRegistry {
    private struct Entry {
        var operation: Operation
        /// Nil for an apply, which runs to its end: a step cut short would undo itself only in part.
        let cancel: ChildCancel?
        var task: Task<Void, Never>?
    }

    private var entries: [String: Entry] = [:]
    private var order: [String] = []
    private let listeners = Listeners<Operation>()
    private let importer: ImagesHelper
    private let onFinish: @Sendable () async -> Void
    /// Finished operations kept for GET, oldest dropped first.
    private let keep = 100
    /// Operations ended since the daemon started, by kind and final state (for /v1/metrics).
    public private(set) var finishedCounts: [String: [Operation.State: Int]] = [:]

    public init(importer: ImagesHelper = ImagesHelper(), onFinish: @escaping @Sendable () async -> Void = {}) {
        self.importer = importer
        self.onFinish = onFinish
    }

    public var runningCount: Int { entries.values.filter { $0.operation.state == .running }.count }

    /// Running operations by kind.
    public var runningByKind: [String: Int] {
        entries.values.filter { $0.operation.state == .running }.reduce(into: [:]) { $0[$1.operation.kind, default: 0] += 1 }
    }

    static func newID() -> String {
        var bytes = [UInt8](repeating: 0, count: 8)
        for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
        return bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    func start(name: MachineName, job: ImportJob) -> Operation {
        let id = Self.newID()
        let operation = Operation(id: id, name: name.rawValue, source: job.source, state: .running, created: Date())
        let cancel = ChildCancel()
        entries[id] = Entry(operation: operation, cancel: cancel)
        order.append(id)
        let importer = importer
        entries[id]?.task = Task {
            let outcome = await importer.importImage(job, name: name, cancel: cancel) { progress in
                Task { await self.update(id) { $0.progress = progress } }
            }
            await onFinish()
            self.finish(id, outcome)
        }
        broadcast(operation)
        return operation
    }

    /// The running apply, if any: one at a time, since two could fight over one machine.
    var runningApply: Operation? {
        entries.values.map(\.operation).first { $0.kind == Operation.applyKind && $0.state == .running }
    }

    /// Starts converging to a manifest, unless another apply runs. Each progress line `run` reports joins the operation's
    /// lines and goes to listeners; a report with a failed machine ends it as `failed`, with
    /// the report.
    func startApply(name: String, source: String,
                    run: @escaping @Sendable (_ progress: @escaping @Sendable (ApplyEvent) -> Void) async throws -> ApplyReport) throws(NspawnError) -> Operation {
        if let running = runningApply {
            throw .remote(.conflict, message: "apply '\(running.name.escapedForMessage)' is running (operation \(running.id)); one apply at a time", busError: nil)
        }
        let id = Self.newID()
        var operation = Operation(id: id, name: name, source: source, state: .running, created: Date())
        operation.kind = Operation.applyKind
        operation.events = []
        operation.eventCount = 0
        entries[id] = Entry(operation: operation, cancel: nil)
        order.append(id)
        entries[id]?.task = Task {
            // The progress callback is synchronous; a stream keeps its lines in order, and all
            // of them are in before the operation ends.
            let (events, sink) = AsyncStream<ApplyEvent>.makeStream()
            let recorder = Task { for await event in events { self.append(id, event) } }
            let outcome: Result<ApplyReport, NspawnError>
            do {
                outcome = .success(try await run { sink.yield($0) })
            } catch let error as NspawnError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(.failed("\(error)"))
            }
            sink.finish()
            await recorder.value
            await onFinish()
            self.finishApply(id, outcome)
        }
        broadcast(operation)
        return operation
    }

    private func append(_ id: String, _ event: ApplyEvent) {
        update(id) { operation in
            operation.events = Array(((operation.events ?? []) + [event]).suffix(Operation.eventsKept))
            operation.eventCount = (operation.eventCount ?? 0) + 1
        }
    }

    private func finishApply(_ id: String, _ outcome: Result<ApplyReport, NspawnError>) {
        guard var operation = entries[id]?.operation else { return }
        switch outcome {
        case .success(let report):
            operation.report = report
            if report.failed > 0 {
                operation.state = .failed
                let names = report.machines.filter { $0.result == .failed }.map(\.name)
                operation.error = .init(code: NspawnError.Category.failure.rawValue,
                                        message: "\(names.count) of \(report.machines.count) machines failed: \(names.joined(separator: ", "))")
            } else {
                operation.state = .succeeded
            }
        case .failure(let error):
            operation.state = .failed
            operation.error = .init(code: error.category.rawValue, message: error.description)
        }
        settle(id, operation)
    }

    func get(_ id: String) -> Operation? { entries[id]?.operation }

    /// Cancels a running import and waits until it has cleaned up, then forgets the operation,
    /// finished or not: the answer is its final state, and a later GET finds nothing. A running
    /// apply is not cancelled (a conflict); a finished one is forgotten.
    func remove(_ id: String) async throws(NspawnError) -> Operation? {
        guard let entry = entries[id] else { return nil }
        guard let cancel = entry.cancel else {
            if entry.operation.state == .running {
                throw .remote(.conflict, message: "apply '\(entry.operation.name.escapedForMessage)' is running; an apply runs to its end, so wait for it and then forget it", busError: nil)
            }
            order.removeAll { $0 == id }
            return entries.removeValue(forKey: id)?.operation
        }
        cancel.cancel()
        await entry.task?.value
        guard let final = entries.removeValue(forKey: id)?.operation else { return nil }
        order.removeAll { $0 == id }
        return final
    }

    func subscribe() -> (UUID, AsyncStream<Operation>) { listeners.subscribe() }
    func unsubscribe(_ key: UUID) { listeners.unsubscribe(key) }

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
        settle(id, operation)
    }

    /// Records an operation's final state, tells listeners, and forgets the oldest finished ones.
    private func settle(_ id: String, _ operation: Operation) {
        finishedCounts[operation.kind, default: [:]][operation.state, default: 0] += 1
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
        listeners.publish(operation)
    }
}
