import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A client for `org.freedesktop.systemd1`: unit jobs and unit-file enablement.
struct SystemdManager {
    let bus: BusConnection

    static let destination = "org.freedesktop.systemd1"
    static let path = "/org/freedesktop/systemd1"
    static let interface = "org.freedesktop.systemd1.Manager"

    static func call(_ member: String, _ arguments: [BusValue] = []) -> MethodCall {
        MethodCall(destination: destination, path: path, interface: interface, member: member, arguments: arguments)
    }

    private func call(_ member: String, _ arguments: [BusValue] = [], subject: String,
                      timeout: BusTimeout = .standard) throws(NspawnError) -> [BusValue] {
        do {
            return try bus.call(Self.call(member, arguments), timeout: timeout)
        } catch {
            throw Self.translate(error, subject: subject, action: member)
        }
    }

    /// Starts `unit` and waits until its job has finished successfully.
    func startUnit(_ unit: String) throws(NspawnError) {
        // "replace", as systemctl start: a start request overrides a queued stop.
        try runJobExpectingSuccess("StartUnit", unit: unit, mode: "replace")
    }

    func restartUnit(_ unit: String) throws(NspawnError) {
        try runJobExpectingSuccess("RestartUnit", unit: unit, mode: "replace")
    }

    func stopUnit(_ unit: String) throws(NspawnError) {
        try runJobExpectingSuccess("StopUnit", unit: unit, mode: "replace")
    }

    /// Changes resource properties of a unit. `runtime` changes last until reboot
    /// (systemd keeps them under /run/systemd/system.control).
    func setUnitProperties(_ unit: String, runtime: Bool, _ properties: [(String, BusValue)]) throws(NspawnError) {
        let values = properties.map { BusValue.structure([.string($0.0), .variant($0.1)]) }
        _ = try call("SetUnitProperties", [.string(unit), .bool(runtime), .array(elementSignature: "(sv)", values)], subject: unit)
    }

    /// The active state ("active", "inactive", "failed", …) and sub-state of each unit, in one call.
    /// Units systemd does not know are reported "inactive".
    func unitStates(_ units: [String]) throws(NspawnError) -> [String: (active: String, sub: String)] {
        guard !units.isEmpty else { return [:] }
        let reply = try call("ListUnitsByNames", [.strings(units)], subject: units.joined(separator: " "))
        return Self.unitStates(from: reply)
    }

    static func unitStates(from reply: [BusValue]) -> [String: (active: String, sub: String)] {
        var states: [String: (active: String, sub: String)] = [:]
        for row in reply.first?.elements ?? [] {
            guard let fields = row.elements, fields.count >= 5, let name = fields[0].string,
                  let active = fields[3].string, let sub = fields[4].string else { continue }
            states[name] = (active, sub)
        }
        return states
    }

    /// All properties of one interface of a unit, loading the unit if needed.
    func unitProperties(_ unit: String, interface: String) throws(NspawnError) -> [String: BusValue] {
        let reply = try call("LoadUnit", [.string(unit)], subject: unit)
        guard let path = reply.first?.string else { throw .malformedReply("LoadUnit path") }
        return try bus.allProperties(destination: Self.destination, path: path, interface: interface) {
            Self.translate($0, subject: unit, action: "GetAll")
        }
    }

    /// systemd sends a job's JobRemoved to the client that queued it (the job tracks its
    /// sender) without a Subscribe call, as systemctl and machinectl rely on. Subscribing
    /// would also make systemd broadcast every unit's property changes while we wait.
    private func subscribeToJobs(subject: String) throws(NspawnError) -> SignalSubscription {
        do {
            return try bus.subscribe(match: "type='signal',sender='\(Self.destination)',path='\(Self.path)',interface='\(Self.interface)',member='JobRemoved'")
        } catch {
            throw .bus(error, context: "subscribe to job signals for \(subject)")
        }
    }

    /// Clears a unit's failed state. Units that are not loaded have none to clear.
    func resetFailedUnit(_ unit: String) throws(NspawnError) {
        do {
            _ = try bus.call(Self.call("ResetFailedUnit", [.string(unit)]))
        } catch {
            if error.name == "org.freedesktop.systemd1.NoSuchUnit" { return }
            throw Self.translate(error, subject: unit, action: "ResetFailedUnit")
        }
    }

    /// Waits until `unit` is no longer running: inactive, failed, unknown to systemd, or being
    /// started again by someone else. False when it still runs at the deadline.
    func waitUntilStopped(_ unit: String, timeout: Duration) throws(NspawnError) -> Bool {
        let reply: [BusValue]
        do {
            reply = try bus.call(Self.call("GetUnit", [.string(unit)]))
        } catch {
            if error.name == "org.freedesktop.systemd1.NoSuchUnit" { return true }
            throw Self.translate(error, subject: unit, action: "GetUnit")
        }
        guard let path = reply.first?.string else { throw .malformedReply("GetUnit") }
        let deadline = ContinuousClock.now + timeout
        while true {
            let reply: [BusValue]
            do {
                reply = try bus.call(.getProperty("ActiveState", destination: Self.destination, path: path,
                                                  interface: "org.freedesktop.systemd1.Unit"))
            } catch {
                // A unit that is gone and garbage-collected has no object left to ask.
                if Machined.isVanishedObject(error) { return true }
                throw Self.translate(error, subject: unit, action: "Get ActiveState")
            }
            guard let state = reply.first?.string,
                  ["active", "deactivating", "reloading"].contains(state) else { return true }
            if ContinuousClock.now >= deadline { return false }
            usleep(20_000)
        }
    }

    /// The `Result` of a service unit ("success", "exit-code", "start-limit-hit", …), if systemd knows it.
    func serviceResult(_ unit: String) -> String? {
        guard let path = try? bus.call(Self.call("GetUnit", [.string(unit)])).first?.string,
              let reply = try? bus.call(.getProperty("Result", destination: Self.destination, path: path,
                                                     interface: "org.freedesktop.systemd1.Service"))
        else { return nil }
        return reply.first?.string
    }

    /// Queues one job per unit in one pipelined batch, then waits for all of them; each unit's
    /// entry is nil when its job finished "done", else the error that says why. The match is
    /// installed before the jobs are queued so a fast job cannot finish unseen.
    func runJobs(_ member: String, units: [String], mode: String) throws(NspawnError) -> [NspawnError?] {
        guard !units.isEmpty else { return [] }
        let subscription = try subscribeToJobs(subject: units.count == 1 ? units[0] : "\(units.count) units")
        let replies: [Result<[BusValue], BusError>]
        do {
            replies = try bus.callAll(units.map { Self.call(member, [.string($0), .string(mode)]) })
        } catch {
            throw .bus(error, context: "queue \(member) jobs")
        }
        var outcomes: [NspawnError?] = Array(repeating: nil, count: units.count)
        var pending: [String: Int] = [:]
        for (index, reply) in replies.enumerated() {
            switch reply {
            case .success(let values):
                if let job = values.first?.string { pending[job] = index } else { outcomes[index] = .malformedReply("\(member) job path") }
            case .failure(let error):
                outcomes[index] = Self.translate(error, subject: units[index], action: member)
            }
        }
        while !pending.isEmpty {
            let signal: BusSignal?
            do {
                signal = try bus.waitForSignal(on: subscription, timeout: nil) {
                    $0.arguments.count == 4 && $0.arguments[1].string.map { pending[$0] != nil } == true
                }
            } catch {
                throw .bus(error, context: units.count == 1 ? "waiting for the \(member) job of \(units[0])" : "waiting for \(pending.count) \(member) jobs")
            }
            guard let signal, let job = signal.arguments[1].string, let index = pending.removeValue(forKey: job) else { continue }
            guard let result = signal.arguments[3].string else {
                outcomes[index] = .malformedReply("JobRemoved")
                continue
            }
            if result != "done" {
                outcomes[index] = .jobFailed(unit: units[index], result: result, unitResult: serviceResult(units[index]))
            }
        }
        return outcomes
    }

    /// Runs a start/stop/restart job and turns anything but "done" into an error that says why.
    func runJobExpectingSuccess(_ member: String, unit: String, mode: String) throws(NspawnError) {
        if let error = try runJobs(member, units: [unit], mode: mode).first ?? nil { throw error }
    }

    func enableUnitFiles(_ files: [String]) throws(NspawnError) -> [UnitFileChange] {
        let reply = try call("EnableUnitFiles", [.strings(files), .bool(false), .bool(false)], subject: files.joined(separator: " "))
        guard reply.count == 2 else { throw .malformedReply("EnableUnitFiles") }
        return Self.changes(from: reply[1])
    }

    func disableUnitFiles(_ files: [String]) throws(NspawnError) -> [UnitFileChange] {
        let reply = try call("DisableUnitFiles", [.strings(files), .bool(false)], subject: files.joined(separator: " "))
        guard let first = reply.first else { throw .malformedReply("DisableUnitFiles") }
        return Self.changes(from: first)
    }

    func reload() throws(NspawnError) {
        // Reloading a large configuration takes longer than the default; systemctl allows minutes too.
        _ = try call("Reload", subject: "systemd", timeout: .after(.seconds(360)))
    }

    func unitFileState(_ unit: String) throws(NspawnError) -> String? {
        do {
            return try bus.call(Self.call("GetUnitFileState", [.string(unit)])).first?.string
        } catch {
            if error.name == "org.freedesktop.systemd1.NoSuchUnit" || error.name == "System.Error.ENOENT" { return nil }
            throw Self.translate(error, subject: unit, action: "GetUnitFileState")
        }
    }

    /// Machine names that might be enabled: those with a `systemd-nspawn@NAME.service` link in a
    /// `.wants`/`.requires`/`.upholds` directory of systemd's configuration directories.
    ///
    /// systemd answers GetUnitFileState one unit at a time (about 0.8 ms each, serially), which
    /// made `ls` of 50 machines 1.5× slower than `machinectl list`. A unit can only be enabled
    /// through such a link, so names without one are known to be disabled and only the
    /// candidates are asked. Returns nil when a directory cannot be read: then ask for every name.
    static func enablementCandidates(
        configDirectories: [String] = ["/etc/systemd/system", "/run/systemd/system"]
    ) -> Set<String>? {
        let files = FileManager.default
        var names = Set<String>()
        for directory in configDirectories {
            guard files.fileExists(atPath: directory) else { continue }
            guard let entries = try? files.contentsOfDirectory(atPath: directory) else { return nil }
            for entry in entries where entry.hasSuffix(".wants") || entry.hasSuffix(".requires") || entry.hasSuffix(".upholds") {
                guard let links = try? files.contentsOfDirectory(atPath: directory + "/" + entry) else { return nil }
                names.formUnion(links.compactMap { MachineUnits.machineName(ofUnit: $0, suffix: ".service") })
            }
        }
        return names
    }

    /// Unit file states that mean "starts at boot".
    static func isEnabled(_ state: String?) -> Bool {
        state == "enabled" || state == "enabled-runtime"
    }

    static func changes(from value: BusValue) -> [UnitFileChange] {
        (value.elements ?? []).compactMap { row in
            guard let f = row.elements, f.count == 3, let type = f[0].string, let path = f[1].string, let source = f[2].string
            else { return nil }
            return UnitFileChange(type: type, path: path, source: source)
        }
    }

    static func translate(_ error: BusError, subject: String, action: String) -> NspawnError {
        switch error.name {
        case "org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.NoSuchUnitFile":
            .noSuchUnit(subject)
        case "org.freedesktop.systemd1.TransactionIsDestructive":
            .busy(subject, reason: error.message.isEmpty ? "a conflicting job is queued" : error.message)
        case "org.freedesktop.DBus.Error.AccessDenied",
             "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
             "System.Error.EPERM", "System.Error.EACCES":
            .permissionDenied("\(action) \(subject)", cause: error)
        default:
            .bus(error, context: "\(action) \(subject)")
        }
    }
}
