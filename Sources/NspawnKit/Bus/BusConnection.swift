import CSystemd
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One method call to make on the bus.
public struct MethodCall: Sendable, Equatable {
    public var destination: String
    public var path: String
    public var interface: String
    public var member: String
    public var arguments: [BusValue]

    public init(destination: String, path: String, interface: String, member: String, arguments: [BusValue] = []) {
        self.destination = destination
        self.path = path
        self.interface = interface
        self.member = member
        self.arguments = arguments
    }
}

/// How long a method call may take.
public enum BusTimeout: Sendable, Equatable {
    /// sd-bus's default (25 s): for queries.
    case standard
    /// For calls whose reply comes only when the work is done (copying or deleting an image).
    case none
    case after(Duration)

    var microseconds: UInt64 {
        switch self {
        case .standard: 0
        case .none: UInt64.max
        case .after(let duration): BusConnection.microseconds(duration)
        }
    }
}

/// A signal received on a subscription.
public struct BusSignal: Sendable, Equatable {
    public var path: String
    public var interface: String
    public var member: String
    public var arguments: [BusValue]
}

/// A connection to a D-Bus bus, owning its `sd_bus` handle.
///
/// sd-bus connections are not thread-safe: use one connection from one thread at a time.
/// Calls block the calling thread; async code goes through `OSThread.run`.
public final class BusConnection {
    let handle: OpaquePointer
    /// The silent far end of an `unconnected()` bus, kept open so sd-bus can write its greeting.
    private var silentPeer: FileDescriptor?

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        if let silentPeer {
            // Flushing would wait for a peer that never answers.
            sd_bus_close_unref(handle)
            try? silentPeer.close()
        } else {
            sd_bus_flush_close_unref(handle)
        }
    }

    /// Connects to the system bus (honouring `DBUS_SYSTEM_BUS_ADDRESS`).
    public static func system() throws(BusError) -> BusConnection {
        var bus: OpaquePointer?
        let r = sd_bus_open_system(&bus)
        guard r >= 0, let bus else { throw BusError(code: r, error: nil, operation: "sd_bus_open_system") }
        return BusConnection(handle: bus)
    }

    /// Connects to the system bus inside a local container (its own dbus, reached through its
    /// namespaces by libsystemd), as `systemctl -M NAME` does.
    public static func machine(_ name: String) throws(BusError) -> BusConnection {
        var bus: OpaquePointer?
        let r = name.withCString { sd_bus_open_system_machine(&bus, $0) }
        guard r >= 0, let bus else { throw BusError(code: r, error: nil, operation: "connect to the bus of machine '\(name)'") }
        return BusConnection(handle: bus)
    }

    /// Calls a method whose reply starts with a file descriptor (`h`), such as machined's
    /// OpenMachineShell. The descriptor is ours (a close-on-exec duplicate); the rest follows.
    public func callReturningDescriptor(_ call: MethodCall, timeout: BusTimeout = .standard)
        throws(BusError) -> (descriptor: FileDescriptor, rest: [BusValue]) {
        let message = try makeMessage(call)
        var error = sd_bus_error(name: nil, message: nil, _need_free: 0)
        defer { sd_bus_error_free(&error) }
        var raw: OpaquePointer?
        let r = sd_bus_call(handle, message.handle, timeout.microseconds, &error, &raw)
        if r < 0 { throw BusError(code: r, error: &error, operation: "\(call.interface).\(call.member)") }
        guard let raw else { throw BusError(name: "System.Error.EBADMSG", message: "\(call.member): empty reply", errno: EBADMSG) }
        let reply = BusMessage(owning: raw)
        let descriptor = try reply.readDescriptor()
        do {
            return (descriptor, try reply.readAll())
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    /// A bus that is started on one end of a socket pair but never talks to a peer.
    /// Messages can be built, sealed and read back on it, which is what encoding tests need.
    static func unconnected() throws(BusError) -> BusConnection {
        let (ours, peer): (FileDescriptor, FileDescriptor)
        do { (ours, peer) = try UnixSocket.pair() } catch { throw BusError(code: -error.rawValue, error: nil, operation: "socketpair") }
        var bus: OpaquePointer?
        var r = sd_bus_new(&bus)
        guard r >= 0, let bus else {
            try? ours.close()
            try? peer.close()
            throw BusError(code: r, error: nil, operation: "sd_bus_new")
        }
        let connection = BusConnection(handle: bus)
        connection.silentPeer = peer
        // sd-bus owns `ours` from here (it closes it with the bus).
        r = sd_bus_set_fd(bus, ours.rawValue, ours.rawValue)
        if r < 0 { try? ours.close(); throw BusError(code: r, error: nil, operation: "sd_bus_set_fd") }
        r = sd_bus_start(bus)
        if r < 0 { throw BusError(code: r, error: nil, operation: "sd_bus_start") }
        return connection
    }

    func makeMessage(_ call: MethodCall) throws(BusError) -> BusMessage {
        var raw: OpaquePointer?
        let r = call.destination.withCString { destination in
            call.path.withCString { path in
                call.interface.withCString { interface in
                    call.member.withCString { member in
                        sd_bus_message_new_method_call(handle, &raw, destination, path, interface, member)
                    }
                }
            }
        }
        guard r >= 0, let raw else {
            throw BusError(code: r, error: nil, operation: "build \(call.interface).\(call.member)")
        }
        let message = BusMessage(owning: raw)
        try message.append(call.arguments)
        return message
    }

    /// Calls a method and waits for its reply.
    /// - Throws: `BusError` carrying the D-Bus error name when the peer answers with an error.
    public func call(_ call: MethodCall, timeout: BusTimeout = .standard) throws(BusError) -> [BusValue] {
        let message = try makeMessage(call)
        var error = sd_bus_error(name: nil, message: nil, _need_free: 0)
        defer { sd_bus_error_free(&error) }
        var reply: OpaquePointer?
        let r = sd_bus_call(handle, message.handle, timeout.microseconds, &error, &reply)
        if r < 0 { throw BusError(code: r, error: &error, operation: "\(call.interface).\(call.member)") }
        guard let reply else { return [] }
        return try BusMessage(owning: reply).readAll()
    }

    /// Sends all calls at once and collects their replies, in order.
    ///
    /// Pipelining matters for views like `ls` that ask one question per machine:
    /// the round trips overlap instead of adding up.
    public func callAll(_ calls: [MethodCall]) throws(BusError) -> [Result<[BusValue], BusError>] {
        let pending = calls.map { _ in PendingReply() }
        var slots: [OpaquePointer?] = []
        slots.reserveCapacity(calls.count)
        defer { for slot in slots { sd_bus_slot_unref(slot) } }
        var issued = 0
        // dbus-daemon refuses more than 128 outstanding replies per connection; stay well below.
        func issueWithinWindow() {
            while issued < calls.count, issued - pending[..<issued].count(where: { $0.result != nil }) < Self.maximumCallsInFlight {
                let index = issued
                issued += 1
                let call = calls[index]
                do {
                    let message = try makeMessage(call)
                    var slot: OpaquePointer?
                    let r = sd_bus_call_async(handle, &slot, message.handle, { reply, userdata, _ in
                        guard let reply, let userdata else { return 0 }
                        let box = Unmanaged<PendingReply>.fromOpaque(userdata).takeUnretainedValue()
                        box.complete(with: BusMessage(retaining: reply))
                        return 0
                    }, Unmanaged.passUnretained(pending[index]).toOpaque(), 0)
                    if r < 0 {
                        pending[index].result = .failure(BusError(code: r, error: nil, operation: "\(call.interface).\(call.member)"))
                    }
                    slots.append(slot)
                } catch {
                    pending[index].result = .failure(error)
                }
            }
        }
        _ = try process(until: nil) {
            issueWithinWindow()
            return issued == calls.count && pending.allSatisfy { $0.result != nil }
        }
        return pending.map { $0.result! }
    }

    static let maximumCallsInFlight = 64

    /// Installs a match rule; signals matching it queue up on the returned subscription.
    /// Subscribe before the action that causes the signal, so none is missed.
    public func subscribe(match rule: String) throws(BusError) -> SignalSubscription {
        let subscription = SignalSubscription(connection: self)
        var slot: OpaquePointer?
        let r = rule.withCString { ruleC in
            sd_bus_add_match(handle, &slot, ruleC, { message, userdata, _ in
                guard let message, let userdata else { return 0 }
                let box = Unmanaged<SignalSubscription>.fromOpaque(userdata).takeUnretainedValue()
                box.receive(BusMessage(retaining: message))
                return 0
            }, Unmanaged.passUnretained(subscription).toOpaque())
        }
        if r < 0 { throw BusError(code: r, error: nil, operation: "add match \(rule)") }
        subscription.slot = slot
        return subscription
    }

    /// Waits until a queued or newly arriving signal satisfies `predicate`.
    /// - Returns: the signal, or nil when `timeout` passes first (nil timeout waits forever).
    public func waitForSignal(
        on subscription: SignalSubscription,
        timeout: Duration?,
        where predicate: (BusSignal) -> Bool
    ) throws(BusError) -> BusSignal? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var found: BusSignal?
        _ = try process(until: deadline) {
            if let match = subscription.takeFirst(where: predicate) { found = match }
            return found != nil
        }
        return found
    }

    /// Dispatches incoming messages until `done` holds or the deadline passes.
    /// - Returns: whether `done` held.
    private func process(until deadline: ContinuousClock.Instant?, _ done: () -> Bool) throws(BusError) -> Bool {
        while !done() {
            let r = sd_bus_process(handle, nil)
            if r < 0 { throw BusError(code: r, error: nil, operation: "process bus messages") }
            var waitMicroseconds = UInt64.max
            if let deadline {
                // Checked on every pass: a busy bus can keep sd_bus_process returning work.
                let remaining = deadline - ContinuousClock.now
                if remaining <= .zero { return done() }
                waitMicroseconds = Self.microseconds(remaining)
            }
            if r > 0 { continue }
            let w = sd_bus_wait(handle, waitMicroseconds)
            if w < 0 && w != -EINTR { throw BusError(code: w, error: nil, operation: "wait for bus messages") }
        }
        return true
    }

    static func microseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 { return 0 }
        return UInt64(seconds) * 1_000_000 + UInt64(attoseconds / 1_000_000_000_000)
    }
}

/// Receives signals for one match rule. Freed with the match.
public final class SignalSubscription {
    fileprivate var slot: OpaquePointer?
    private var queue: [BusSignal] = []
    // Keeps the connection alive while its slot exists.
    private let connection: BusConnection

    fileprivate init(connection: BusConnection) {
        self.connection = connection
    }

    deinit {
        sd_bus_slot_unref(slot)
    }

    fileprivate func receive(_ message: BusMessage) {
        // A signal that cannot be decoded is not one anything here waits for.
        guard let arguments = try? message.readAll() else { return }
        queue.append(BusSignal(
            path: message.path ?? "",
            interface: message.interface ?? "",
            member: message.member ?? "",
            arguments: arguments))
    }

    fileprivate func takeFirst(where predicate: (BusSignal) -> Bool) -> BusSignal? {
        guard let index = queue.firstIndex(where: predicate) else { return nil }
        return queue.remove(at: index)
    }
}

private final class PendingReply {
    var result: Result<[BusValue], BusError>?

    func complete(with reply: BusMessage) {
        if let error = sd_bus_message_get_error(reply.handle), error.pointee.name != nil {
            result = .failure(BusError(code: -sd_bus_message_get_errno(reply.handle), error: error, operation: "call"))
            return
        }
        result = Result { () throws(BusError) in try reply.readAll() }
    }
}
