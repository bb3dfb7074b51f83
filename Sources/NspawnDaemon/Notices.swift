import FoundationEssentials
import NspawnKit

/// Events nspawnd makes itself (a resize's steps), for every `/v1/events` stream open now.
public actor Notices {
    private var listeners: [UUID: AsyncStream<MachineEvent>.Continuation] = [:]

    public init() {}

    func subscribe() -> (UUID, AsyncStream<MachineEvent>) {
        let (stream, continuation) = AsyncStream<MachineEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = UUID()
        listeners[key] = continuation
        return (key, stream)
    }

    func unsubscribe(_ key: UUID) {
        listeners.removeValue(forKey: key)?.finish()
    }

    func publish(_ event: MachineEvent) {
        for listener in listeners.values { listener.yield(event) }
    }
}
