import FoundationEssentials
import Synchronization

/// Something that happened to a machine, from machined's MachineNew and MachineRemoved signals.
public struct MachineEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// The subscription is in place: every later change is reported.
        case subscribed
        case machineNew = "machine_new"
        case machineRemoved = "machine_removed"
        /// Nothing happened for a while; lets a consumer notice a dead peer.
        case heartbeat
        /// A resize done through nspawnd: applied and pending, confirmed, or reverted.
        case resizePending = "resize_pending"
        case resizeConfirmed = "resize_confirmed"
        case resizeReverted = "resize_reverted"
    }

    public var event: Kind
    public var name: String?
    /// The state the change leaves the machine in.
    public var state: MachineState?
    public var time: Date
    /// A resize event's flavor in force afterwards, and the resize still pending.
    public var flavor: String?
    public var pendingResize: PendingResize?

    public init(event: Kind, name: String? = nil, state: MachineState? = nil, time: Date = Date(),
                flavor: String? = nil, pendingResize: PendingResize? = nil) {
        self.event = event
        self.name = name
        self.state = state
        self.time = time
        self.flavor = flavor
        self.pendingResize = pendingResize
    }

    /// The event a resize, its confirmation or its revert makes.
    public init(_ result: ResizeResult) {
        let kind: Kind = switch result.action {
        case .resized: result.pending == nil ? .resizeConfirmed : .resizePending
        case .confirmed: .resizeConfirmed
        case .reverted: .resizeReverted
        }
        self.init(event: kind, name: result.name, flavor: result.flavor?.name, pendingResize: result.pending)
    }
}

public enum MachineEvents {
    /// Follows machined's signals on a thread of its own with its own bus connection, until the
    /// consumer stops iterating. The first element is `.subscribed`; `.heartbeat` comes after
    /// `heartbeat` without a change.
    public static func stream(heartbeat: Duration = .seconds(15)) -> AsyncThrowingStream<MachineEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<MachineEvent, any Error>.makeStream()
        let stopped = StopFlag()
        continuation.onTermination = { _ in stopped.stop() }
        _ = OSThread {
            do {
                let bus = try connectSystemBus()
                let subscription: SignalSubscription
                do throws(BusError) {
                    subscription = try bus.subscribe(match: "type='signal',sender='\(Machined.destination)',path='\(Machined.managerPath)',interface='\(Machined.managerInterface)'")
                } catch {
                    throw NspawnError.bus(error, context: "subscribe to machine signals")
                }
                continuation.yield(MachineEvent(event: .subscribed))
                var quietSince = ContinuousClock.now
                while !stopped.isStopped {
                    let signal: BusSignal?
                    do throws(BusError) {
                        // Short waits, so a consumer that went away is noticed promptly.
                        signal = try bus.waitForSignal(on: subscription, timeout: .milliseconds(250)) {
                            $0.member == "MachineNew" || $0.member == "MachineRemoved"
                        }
                    } catch {
                        throw NspawnError.bus(error, context: "waiting for machine signals")
                    }
                    if let signal, let name = signal.arguments.first?.string {
                        let isNew = signal.member == "MachineNew"
                        continuation.yield(MachineEvent(event: isNew ? .machineNew : .machineRemoved, name: name,
                                                        state: isNew ? .running : .stopped))
                        quietSince = .now
                    } else if ContinuousClock.now - quietSince >= heartbeat {
                        continuation.yield(MachineEvent(event: .heartbeat))
                        quietSince = .now
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        return stream
    }
}

/// Tells a thread that its consumer has gone.
package final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    package init() {}
    package func stop() { flag.store(true, ordering: .relaxed) }
    package var isStopped: Bool { flag.load(ordering: .relaxed) }
}
