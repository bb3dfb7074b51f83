import FoundationEssentials
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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
        /// A machine's health check verdict changed (its timer's check, with or without nspawnd).
        case machineHealth = "machine_health"
    }

    public var event: Kind
    public var name: String?
    /// The state the change leaves the machine in.
    public var state: MachineState?
    public var time: Date
    /// A resize event's flavor in force afterwards, and the resize still pending.
    public var flavor: String?
    public var pendingResize: PendingResize?
    /// A health event's new verdict.
    public var health: MachineHealth?

    public init(event: Kind, name: String? = nil, state: MachineState? = nil, time: Date = Date(),
                flavor: String? = nil, pendingResize: PendingResize? = nil, health: MachineHealth? = nil) {
        self.event = event
        self.name = name
        self.state = state
        self.time = time
        self.flavor = flavor
        self.pendingResize = pendingResize
        self.health = health
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
                var healthChanges = HealthChanges()
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
                    }
                    let changes = healthChanges.next()
                    for event in changes { continuation.yield(event) }
                    if signal != nil || !changes.isEmpty {
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

/// The verdicts health checks wrote since the last look. Checks replace their machine's file
/// by rename, which changes the directory's mtime: one stat per look while nothing changes.
struct HealthChanges {
    private var statuses: [String: MachineHealth.Status]
    private var directoryChanged: timespec?

    init() {
        statuses = [:]
        directoryChanged = Self.modified()
        statuses = Self.read().mapValues(\.status)
    }

    mutating func next() -> [MachineEvent] {
        let changed = Self.modified()
        guard changed?.tv_sec != directoryChanged?.tv_sec || changed?.tv_nsec != directoryChanged?.tv_nsec else { return [] }
        directoryChanged = changed
        let current = Self.read()
        var events: [MachineEvent] = []
        for (name, health) in current.sorted(by: { $0.key < $1.key }) where statuses[name] != health.status {
            events.append(MachineEvent(event: .machineHealth, name: name, time: health.lastCheck ?? Date(), health: health))
        }
        statuses = current.mapValues(\.status)
        return events
    }

    private static func modified() -> timespec? {
        var info = stat()
        return stat(MachineHealth.directory, &info) == 0 ? info.st_mtim : nil
    }

    private static func read() -> [String: MachineHealth] {
        guard let directory = try? Directory(path: MachineHealth.directory), let names = try? directory.entries() else { return [:] }
        var found: [String: MachineHealth] = [:]
        for file in names where file.hasSuffix(".json") {
            let machine = String(file.dropLast(".json".count))
            guard let name = try? MachineName(machine), let health = try? MachineManager.recordedHealth(of: name) else { continue }
            found[machine] = health
        }
        return found
    }
}

/// Tells a thread that its consumer has gone.
package final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    package init() {}
    package func stop() { flag.store(true, ordering: .relaxed) }
    package var isStopped: Bool { flag.load(ordering: .relaxed) }
}
