import FoundationEssentials
import Synchronization

/// Streams that each get every value published while they are open: the operations' progress
/// and nspawnd's own events, for every `/v1/events` stream. Publishing never waits.
final class Listeners<Element: Sendable>: Sendable {
    private let continuations = Mutex<[UUID: AsyncStream<Element>.Continuation]>([:])

    func subscribe() -> (UUID, AsyncStream<Element>) {
        let (stream, continuation) = AsyncStream<Element>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = UUID()
        continuations.withLock { $0[key] = continuation }
        return (key, stream)
    }

    func unsubscribe(_ key: UUID) {
        continuations.withLock { $0.removeValue(forKey: key) }?.finish()
    }

    func publish(_ element: Element) {
        for continuation in continuations.withLock({ Array($0.values) }) { continuation.yield(element) }
    }
}
