import CLinux
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A login shell that machined opens in a guest running systemd (OpenMachineShell): a PAM
/// session in the transient unit `container-shell@N.service` of the guest's own systemd, on
/// the guest's /dev/pts/N. machined hands back only the terminal; the shell's status comes
/// from that unit, which systemd keeps "failed" (with ExecMainCode and ExecMainStatus) after
/// a non-zero exit until it is reset, and forgets after a clean exit.
final class MachinedShellProcess: GuestProcess {
    let input: FileDescriptor?
    let output: FileDescriptor
    var errorOutput: FileDescriptor? { nil }
    /// Our own copy of the terminal's master side: it reports a hang-up once no process in
    /// the guest holds the terminal, whoever else has closed theirs.
    private let hangup: FileDescriptor
    let unit: String
    private let machine: String
    private let guest: Mutex<BusConnection>
    private let streamsOpen = Mutex(true)
    private let ended = Mutex<ExitOutcome?>(nil)

    private init(input: FileDescriptor?, output: FileDescriptor, hangup: FileDescriptor, unit: String, machine: String,
                 guest: sending BusConnection) {
        self.input = input
        self.output = output
        self.hangup = hangup
        self.unit = unit
        self.machine = machine
        self.guest = Mutex(guest)
    }

    deinit {
        close()
        try? hangup.close()
    }

    /// Opens the shell, or returns nil when the guest has no bus to ask for its status (then
    /// the caller runs the shell itself).
    static func open(_ name: MachineName, user: GuestUser, spec: ExecSpec, bus: BusConnection) throws(NspawnError) -> MachinedShellProcess? {
        let guest: BusConnection
        do {
            guest = try BusConnection.machine(name.rawValue)
            _ = try guest.call(SystemdManager.call("GetDefaultTarget"))
        } catch {
            return nil
        }
        let environment = (spec.terminal.map { ["TERM=\($0)"] } ?? []) + spec.environment
        let call = Machined.managerCall("OpenMachineShell", [
            .string(name.rawValue), .string(user.name ?? String(user.uid)), .string(""), .strings([]), .strings(environment),
        ])
        let reply: (descriptor: Int32, rest: [BusValue])
        do {
            reply = try bus.callReturningDescriptor(call)
        } catch {
            throw Machined.translate(error, subject: name.rawValue, action: "OpenMachineShell")
        }
        let master = FileDescriptor(rawValue: reply.descriptor)
        let path = reply.rest.first?.string ?? ""
        // machined names the unit after the terminal (src/machine/machine-dbus.c).
        guard path.hasPrefix("/dev/pts/"), let number = UInt32(path.dropFirst("/dev/pts/".count)) else {
            try? master.close()
            throw .malformedReply("OpenMachineShell terminal '\(path.escapedForMessage)'")
        }
        if let size = spec.size { _ = nspawnctl_set_window_size(master.rawValue, size.rows, size.columns) }
        do throws(Errno) {
            let hangup = try master.closeOnExecDuplicate()
            let input = spec.interactive ? try master.closeOnExecDuplicate() : nil
            return MachinedShellProcess(input: input, output: master, hangup: hangup, unit: "container-shell@\(number).service",
                                        machine: name.rawValue, guest: guest)
        } catch {
            try? master.close()
            throw .system("cannot duplicate the terminal of machine '\(name)'", error)
        }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {
        let code = nspawnctl_set_window_size(hangup.rawValue, size.rows, size.columns)
        if code < 0 { throw .system("cannot resize the terminal of machine '\(machine)'", Errno(rawValue: -code)) }
    }

    func signal(_ signal: UnixSignal) throws(NspawnError) {
        guard ended.withLock({ $0 }) == nil else { return }
        let unit = unit
        try guest.withLock { bus throws(NspawnError) in
            do throws(BusError) {
                _ = try bus.call(SystemdManager.call("KillUnit", [.string(unit), .string("main"), .int32(signal.number)]))
            } catch {
                if error.name == "org.freedesktop.systemd1.NoSuchUnit" { return }
                throw SystemdManager.translate(error, subject: unit, action: "KillUnit")
            }
        }
    }

    func wait() throws(NspawnError) -> ExitOutcome {
        if let outcome = ended.withLock({ $0 }) { return outcome }
        var watch = pollfd(fd: hangup.rawValue, events: 0, revents: 0)
        while poll(&watch, 1, -1) < 0 && errno == EINTR {}
        let unit = unit
        let machine = machine
        let outcome = try guest.withLock { bus throws(NspawnError) in
            try Self.outcome(of: unit, machine: machine, bus: bus)
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

    /// How the shell's unit ended, once it has: a unit systemd no longer knows ended cleanly.
    /// A failed unit is reset, so the next shell on the same terminal number can start.
    static func outcome(of unit: String, machine: String, bus: BusConnection,
                        timeout: Duration = .seconds(10)) throws(NspawnError) -> ExitOutcome {
        let deadline = ContinuousClock.now + timeout
        let gone = ["org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.DBus.Error.UnknownObject",
                    "org.freedesktop.DBus.Error.UnknownMethod", "org.freedesktop.DBus.Error.UnknownInterface"]
        while true {
            let reply: [BusValue]
            do {
                reply = try bus.call(SystemdManager.call("GetUnit", [.string(unit)]))
            } catch {
                if gone.contains(error.name) { return .exited(0) }
                throw .bus(error, context: "reading the status of \(unit) in machine '\(machine)'")
            }
            guard let path = reply.first?.string else { throw .malformedReply("GetUnit \(unit)") }
            let replies: [Result<[BusValue], BusError>]
            do {
                replies = try bus.callAll([
                    .getProperty("ActiveState", destination: SystemdManager.destination, path: path, interface: "org.freedesktop.systemd1.Unit"),
                    .getProperty("ExecMainCode", destination: SystemdManager.destination, path: path, interface: "org.freedesktop.systemd1.Service"),
                    .getProperty("ExecMainStatus", destination: SystemdManager.destination, path: path, interface: "org.freedesktop.systemd1.Service"),
                ])
            } catch {
                throw .bus(error, context: "reading the status of \(unit) in machine '\(machine)'")
            }
            var values: [BusValue] = []
            for reply in replies {
                switch reply {
                case .success(let value): values.append(value.first ?? .int32(0))
                case .failure(let error):
                    if gone.contains(error.name) { return .exited(0) }
                    throw .bus(error, context: "reading the status of \(unit) in machine '\(machine)'")
                }
            }
            let state = values[0].string ?? ""
            if ["active", "activating", "deactivating", "reloading"].contains(state) {
                guard ContinuousClock.now < deadline else {
                    throw .timedOut("waiting for \(unit) in machine '\(machine)' to end", waitedSeconds: timeout.seconds)
                }
                usleep(20_000)
                continue
            }
            let code = values[1].int64 ?? 0
            let status = Int32(truncatingIfNeeded: values[2].int64 ?? 0)
            if state == "failed" { try? SystemdManager(bus: bus).resetFailedUnit(unit) }
            // ExecMainCode is the siginfo code: CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3.
            return code == 2 || code == 3 ? .signaled(status) : .exited(status)
        }
    }
}
