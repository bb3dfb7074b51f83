import CLinux
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A login shell that machined opens in a guest running systemd (OpenMachineShell): a PAM
/// session in the transient unit `container-shell@N.service` of the guest's own systemd, on
/// the guest's /dev/pts/N. machined hands back only the terminal, and starts the shell with
/// its failure ignored (ExecStart=-…), so the unit ends "successfully" and is collected at
/// once whatever the status. The status comes from the guest's systemd as it happens: the
/// PropertiesChanged signal with ExecMainCode and ExecMainStatus, subscribed to before the
/// shell is opened so even one that ends at once is seen.
final class MachinedShellProcess: GuestProcess {
    let input: FileDescriptor?
    let output: FileDescriptor
    var errorOutput: FileDescriptor? { nil }
    let unit: String
    private let machine: String
    private let watch: UnitWatch
    /// sd-bus connections are for one thread at a time: `wait()` holds this while it uses `watch`.
    private let waiting = Mutex(())
    private let streamsOpen = Mutex(true)
    private let ended = Mutex<ExitOutcome?>(nil)

    private init(input: FileDescriptor?, output: FileDescriptor, unit: String, machine: String,
                 watch: UnitWatch) {
        self.input = input
        self.output = output
        self.unit = unit
        self.machine = machine
        self.watch = watch
    }

    deinit {
        close()
    }

    static let serviceChanges = "type='signal',sender='\(SystemdManager.destination)',interface='org.freedesktop.DBus.Properties',"
        + "member='PropertiesChanged',path_namespace='/org/freedesktop/systemd1/unit',arg0='org.freedesktop.systemd1.Service'"

    /// Opens the shell, or returns nil when the guest has no bus to ask for its status (then
    /// the caller runs the shell itself).
    static func open(_ name: MachineName, user: GuestUser, spec: ExecSpec, bus: BusConnection) throws(NspawnError) -> MachinedShellProcess? {
        guard let watch = watchUnits(of: name) else { return nil }
        let environment = (spec.terminal.map { ["TERM=\($0)"] } ?? []) + spec.environment
        let call = Machined.managerCall("OpenMachineShell", [
            .string(name.rawValue), .string(user.name ?? String(user.uid)), .string(""), .strings([]), .strings(environment),
        ])
        let reply: (descriptor: FileDescriptor, rest: [BusValue])
        do {
            reply = try bus.callReturningDescriptor(call)
        } catch {
            throw Machined.translate(error, subject: name.rawValue, action: "OpenMachineShell")
        }
        let master = reply.descriptor
        let path = reply.rest.first?.string ?? ""
        // machined names the unit after the terminal (src/machine/machine-dbus.c).
        guard path.hasPrefix("/dev/pts/"), let number = UInt32(path.dropFirst("/dev/pts/".count)) else {
            try? master.close()
            throw .malformedReply("OpenMachineShell terminal '\(path.escapedForMessage)'")
        }
        if let size = spec.size { _ = nspawnctl_set_window_size(master.rawValue, size.rows, size.columns) }
        let input: FileDescriptor?
        do {
            input = spec.interactive ? try master.closeOnExecDuplicate() : nil
        } catch {
            try? master.close()
            throw .system("cannot duplicate the terminal of machine '\(name)'", error)
        }
        return MachinedShellProcess(input: input, output: master, unit: "container-shell@\(number).service",
                                    machine: name.rawValue, watch: watch)
    }

    /// The guest's bus, subscribed to its units' Service properties; nil when it has none.
    private static func watchUnits(of name: MachineName) -> UnitWatch? {
        do throws(BusError) {
            let guest = try BusConnection.machine(name.rawValue)
            let changes = try guest.subscribe(match: serviceChanges)
            // systemd sends unit signals only to clients that asked for them.
            do {
                _ = try guest.call(SystemdManager.call("Subscribe"))
            } catch where error.name == "org.freedesktop.systemd1.AlreadySubscribed" {}
            return UnitWatch(bus: guest, changes: changes)
        } catch {
            return nil
        }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {
        guard streamsOpen.withLock({ $0 }) else { return }
        let code = nspawnctl_set_window_size(output.rawValue, size.rows, size.columns)
        if code < 0 { throw .system("cannot resize the terminal of machine '\(machine)'", Errno(rawValue: -code)) }
    }

    /// On a connection of its own: `wait()` may hold the other one meanwhile.
    func signal(_ signal: UnixSignal) throws(NspawnError) {
        guard ended.withLock({ $0 }) == nil else { return }
        do {
            let bus = try BusConnection.machine(machine)
            _ = try bus.call(SystemdManager.call("KillUnit", [.string(unit), .string("main"), .int32(signal.number)]))
        } catch {
            if error.name == "org.freedesktop.systemd1.NoSuchUnit" { return }
            throw SystemdManager.translate(error, subject: unit, action: "KillUnit")
        }
    }

    func wait() throws(NspawnError) -> ExitOutcome {
        if let outcome = ended.withLock({ $0 }) { return outcome }
        let path = Self.objectPath(unit)
        let (unit, machine, watch) = (unit, machine, watch)
        let outcome = try waiting.withLock { _ throws(NspawnError) -> ExitOutcome in
            let signal: BusSignal?
            do throws(BusError) {
                signal = try watch.bus.waitForSignal(on: watch.changes, timeout: nil) {
                    $0.path == path && Self.outcome(from: $0.arguments) != nil
                }
            } catch {
                throw .bus(error, context: "waiting for \(unit) in machine '\(machine)' to end")
            }
            guard let signal, let outcome = Self.outcome(from: signal.arguments) else {
                throw .failed("machine '\(machine)' did not say how \(unit) ended")
            }
            return outcome
        }
        ended.withLock { $0 = outcome }
        return outcome
    }

    /// A terminal's input ends only with the terminal.
    func closeInput() {}

    func close() {
        let wasOpen = streamsOpen.withLock { open in
            defer { open = false }
            return open
        }
        guard wasOpen else { return }
        try? input?.close()
        try? output.close()
    }

    /// How the main process ended, from the Service properties in a PropertiesChanged signal
    /// (`s`, `a{sv}`, `as`); nil while it has not. ExecMainCode is the siginfo code:
    /// CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3.
    static func outcome(from arguments: [BusValue]) -> ExitOutcome? {
        guard arguments.count >= 2, arguments[0].string == "org.freedesktop.systemd1.Service",
              let changed = arguments[1].stringKeyedDictionary,
              let code = changed["ExecMainCode"]?.int64, code != 0,
              let status = changed["ExecMainStatus"]?.int64
        else { return nil }
        let value = Int32(truncatingIfNeeded: status)
        return code == 2 || code == 3 ? .signaled(value) : .exited(value)
    }

    /// systemd's object path of a unit: bus_label_escape, every byte but [A-Za-z0-9] as _XX.
    static func objectPath(_ unit: String) -> String {
        var label = ""
        for byte in unit.utf8 {
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) {
                label.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                label += "_" + String(byte, radix: 16).leftPadded(to: 2)
            }
        }
        return "/org/freedesktop/systemd1/unit/" + (label.isEmpty ? "_" : label)
    }
}

/// The guest's bus and the subscription to its units' Service properties. Neither is
/// thread-safe: `MachinedShellProcess.wait()` uses them only under its lock.
private final class UnitWatch: @unchecked Sendable {
    let bus: BusConnection
    let changes: SignalSubscription

    init(bus: BusConnection, changes: SignalSubscription) {
        self.bus = bus
        self.changes = changes
    }
}
