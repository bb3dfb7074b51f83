import FoundationEssentials
import NspawnKit

// One Codable request per route that takes a body (or a query), with its defaults and limits.
// The CLI fills them from its flags, the client sends them, the router decodes them, and
// `LocalService` turns them into library calls: one shape, one set of checks, every path.
// Absent fields mean "the default"; the daemon refuses an explicit null (the document has no
// nullable field), so a client can never send "null" for "default" by mistake.

/// What `stop --timeout` and every other wait for a clean shutdown accept.
public enum StopTimeout {
    public static let defaultSeconds: Double = 90
    public static let maximumSeconds: Double = 86_400

    /// Seconds as the CLI and the API both accept them: 0 to one day, kept to the millisecond.
    public static func check(_ seconds: Double) throws(NspawnError) -> Double {
        guard seconds.isFinite, seconds >= 0, seconds <= maximumSeconds else {
            throw .invalidArgument("invalid timeout \(seconds.formatted): expected seconds between 0 and \(Int(maximumSeconds))")
        }
        return (seconds * 1000).rounded() / 1000
    }

    /// A `--timeout` value read as a number; its range is checked by the request's `validate()`
    /// in the service, the same on every route.
    public static func number(_ text: String) throws(NspawnError) -> Double {
        guard let seconds = Double(text) else {
            throw .invalidArgument("invalid timeout '\(text.escapedForMessage)': expected seconds between 0 and \(Int(maximumSeconds))")
        }
        return seconds
    }

    static func duration(_ seconds: Double?) throws(NspawnError) -> Duration {
        .milliseconds(Int64(try check(seconds ?? defaultSeconds) * 1000))
    }

    /// The wait for a value a request's `validate()` has accepted, or for a client's own
    /// deadline (an invalid value waits the default; the service refuses it).
    static func wait(_ seconds: Double?) -> Duration {
        (try? duration(seconds)) ?? .seconds(defaultSeconds)
    }
}

extension Double {
    /// 2.5 as "2.5", 90 as "90".
    var formatted: String { rounded() == self && abs(self) < 1e15 ? String(Int64(self)) : String(self) }
}

/// `GET /v1/machines?all=true`: hidden names such as `.host` too.
public struct ListRequest: Codable, Sendable, Equatable {
    public var all: Bool?
    public init(all: Bool? = nil) { self.all = all }
    var includeHidden: Bool { all ?? false }
}

/// `GET /v1/stats?name=A&name=B`: running machines' use; no name is every running container.
public struct StatsRequest: Codable, Sendable, Equatable {
    public var names: [String]?
    public init(names: [String]? = nil) { self.names = names }

    public var query: String? {
        guard let names, !names.isEmpty else { return nil }
        return names.map { "name=\(QueryText.encode($0))" }.joined(separator: "&")
    }

    public init(query: String?) throws(NspawnError) {
        var names: [String] = []
        for pair in (query ?? "").split(separator: "&") {
            guard pair.hasPrefix("name="), let name = QueryText.decode(pair.dropFirst(5)) else {
                throw .invalidArgument("invalid query '\(String(pair.prefix(80)).escapedForMessage)': expected name=MACHINE, once per machine")
            }
            names.append(name)
        }
        self.names = names.isEmpty ? nil : names
    }

    public func machineNames() throws(NspawnError) -> [MachineName] {
        try (names ?? []).map { (name) throws(NspawnError) in try MachineName(name) }
    }
}

/// `POST /v1/machines/{name}/stop`.
public struct StopRequest: Codable, Sendable, Equatable {
    /// Seconds to wait for a clean shutdown before terminating (default 90, at most a day).
    public var timeout: Double?
    public init(timeout: Double? = nil) { self.timeout = timeout }
    public func validate() throws(NspawnError) { _ = try StopTimeout.duration(timeout) }
}

/// `POST /v1/machines/{name}/reboot`.
public struct RebootRequest: Codable, Sendable, Equatable {
    /// A power reset (terminate, then start) instead of the guest's own reboot.
    public var hard: Bool?
    public init(hard: Bool? = nil) { self.hard = hard }
}

/// `POST /v1/machines/{name}/rebuild`.
public struct RebuildRequest: Codable, Sendable, Equatable {
    /// The image to copy (default: the one recorded when the machine was created).
    public var image: String?
    /// Seconds to wait for a running machine's clean shutdown (default 90).
    public var timeout: Double?
    /// Pull the image's OCI reference again first (only when its digest moved).
    public var pull: Bool?
    public init(image: String? = nil, timeout: Double? = nil, pull: Bool? = nil) {
        self.image = image
        self.timeout = timeout
        self.pull = pull
    }

    public func validate() throws(NspawnError) {
        _ = try StopTimeout.duration(timeout)
        if let image { _ = try MachineName(image) }
    }
}

/// `POST /v1/machines/{name}/kill`.
public struct KillRequest: Codable, Sendable, Equatable {
    public static let defaultSignal = "TERM"
    public static let defaultWhom = KillWhom.all
    /// A name (TERM, SIGHUP, RTMIN+4) or number.
    public var signal: String?
    public var whom: KillWhom?
    public init(signal: String? = nil, whom: KillWhom? = nil) {
        self.signal = signal
        self.whom = whom
    }
    public func validate() throws(NspawnError) { _ = try unixSignal }
    var unixSignal: UnixSignal { get throws(NspawnError) { try UnixSignal(parsing: signal ?? Self.defaultSignal) } }
}

/// `DELETE /v1/images/{name}`.
public struct RemoveRequest: Codable, Sendable, Equatable {
    /// Stop a running machine first.
    public var force: Bool?
    /// With `force`, seconds to wait for a clean shutdown.
    public var timeout: Double?
    public init(force: Bool? = nil, timeout: Double? = nil) {
        self.force = force
        self.timeout = timeout
    }
    public func validate() throws(NspawnError) { _ = try StopTimeout.duration(timeout) }
}

/// `POST /v1/images/{name}/clone`.
public struct CloneRequest: Codable, Sendable, Equatable {
    public var name: String
    public var readOnly: Bool?
    public init(name: String, readOnly: Bool? = nil) {
        self.name = name
        self.readOnly = readOnly
    }
    public func validate() throws(NspawnError) { _ = try MachineName(name) }
}

/// `POST /v1/images/{name}/rename`.
public struct RenameRequest: Codable, Sendable, Equatable {
    public var name: String
    public init(name: String) { self.name = name }
    public func validate() throws(NspawnError) { _ = try MachineName(name) }
}

/// `POST /v1/images/{name}/read-only`.
public struct ReadOnlyRequest: Codable, Sendable, Equatable {
    public var readOnly: Bool
    public init(readOnly: Bool) { self.readOnly = readOnly }
}

/// `POST /v1/machines/{name}/resize`.
public struct ResizeRequest: Codable, Sendable, Equatable {
    public var flavor: String
    /// Seconds until the resize confirms itself (default 24 h); 0 confirms it at once.
    public var confirmAfter: Double?

    public init(flavor: String, confirmAfter: Double? = nil) {
        self.flavor = flavor
        self.confirmAfter = confirmAfter
    }

    public func validate() throws(NspawnError) {
        try checkFlavorName(flavor)
        if let confirmAfter, !(0...PendingResize.maximumConfirmWindow).contains(confirmAfter) {
            throw .invalidArgument("invalid confirm-after \(confirmAfter): expected seconds between 0 and \(Int(PendingResize.maximumConfirmWindow)) (365 days)")
        }
    }

    public var confirmWindow: Double { confirmAfter ?? PendingResize.defaultConfirmWindow }
}

/// The settings a `config` change or a `create` writes, in the CLI's own words.
public struct SettingsChange: Codable, Sendable, Equatable {
    /// `[SECTION.]KEY=VALUE`, replacing all the key's values.
    public var set: [String]?
    /// `[SECTION.]KEY`.
    public var unset: [String]?
    public var bind: [String]?
    public var bindRo: [String]?
    public var port: [String]?
    /// veth, private, host, bridge=BR or zone=Z.
    public var network: String?
    /// NAME=VALUE.
    public var env: [String]?
    public var flavor: String?
    /// Boot the image's init (Boot=yes).
    public var boot: Bool?
    /// Run this command instead of booting (Boot=no, Parameters=).
    public var exec: [String]?
    /// What systemd does when the machine ends: no, on-failure or always (a drop-in's Restart=).
    public var restart: String?
    /// A time span before restarting (RestartSec=), such as 5s.
    public var restartDelay: String?
    /// N/INTERVAL: at most N starts within INTERVAL (StartLimitBurst=, StartLimitIntervalSec=).
    public var restartMax: String?
    /// A shell command run inside at an interval (`/bin/sh -c`); exit 0 is healthy.
    public var healthCmd: String?
    /// Time spans, such as 30s: between checks, before a check is killed, and after the start
    /// within which failures do not count.
    public var healthInterval: String?
    public var healthTimeout: String?
    public var healthStartPeriod: String?
    /// Failures in a row that make the machine unhealthy.
    public var healthRetries: Int?
    /// Restart the machine when it turns unhealthy.
    public var restartOnUnhealthy: Bool?
    /// Remove the health check.
    public var noHealth: Bool?
    /// A snapshot taken by a host timer at this interval, such as 1h; replaces the whole schedule.
    public var snapshotEvery: String?
    /// The schedule's snapshots kept: the newest N, and the newest of each of the last N days and weeks.
    public var snapshotKeep: Int?
    public var snapshotKeepDaily: Int?
    public var snapshotKeepWeekly: Int?
    /// Remove the snapshot schedule (its snapshots stay).
    public var noSnapshotSchedule: Bool?

    public init(set: [String]? = nil, unset: [String]? = nil, bind: [String]? = nil, bindRo: [String]? = nil, port: [String]? = nil,
                network: String? = nil, env: [String]? = nil, flavor: String? = nil, boot: Bool? = nil, exec: [String]? = nil,
                restart: String? = nil, restartDelay: String? = nil, restartMax: String? = nil,
                healthCmd: String? = nil, healthInterval: String? = nil, healthTimeout: String? = nil, healthStartPeriod: String? = nil,
                healthRetries: Int? = nil, restartOnUnhealthy: Bool? = nil, noHealth: Bool? = nil,
                snapshotEvery: String? = nil, snapshotKeep: Int? = nil, snapshotKeepDaily: Int? = nil, snapshotKeepWeekly: Int? = nil,
                noSnapshotSchedule: Bool? = nil) {
        self.set = set
        self.unset = unset
        self.bind = bind
        self.bindRo = bindRo
        self.port = port
        self.network = network
        self.env = env
        self.flavor = flavor
        self.boot = boot
        self.exec = exec
        self.restart = restart
        self.restartDelay = restartDelay
        self.restartMax = restartMax
        self.healthCmd = healthCmd
        self.healthInterval = healthInterval
        self.healthTimeout = healthTimeout
        self.healthStartPeriod = healthStartPeriod
        self.healthRetries = healthRetries
        self.restartOnUnhealthy = restartOnUnhealthy
        self.noHealth = noHealth
        self.snapshotEvery = snapshotEvery
        self.snapshotKeep = snapshotKeep
        self.snapshotKeepDaily = snapshotKeepDaily
        self.snapshotKeepWeekly = snapshotKeepWeekly
        self.noSnapshotSchedule = noSnapshotSchedule
    }

    private var changesSnapshotSchedule: Bool {
        snapshotEvery != nil || snapshotKeep != nil || snapshotKeepDaily != nil || snapshotKeepWeekly != nil || noSnapshotSchedule != nil
    }

    private var changesHealth: Bool {
        healthCmd != nil || healthInterval != nil || healthTimeout != nil || healthStartPeriod != nil || healthRetries != nil
            || restartOnUnhealthy != nil || noHealth != nil
    }

    /// Nothing to change: `config` then only shows the settings.
    public var isEmpty: Bool {
        [set, unset, bind, bindRo, port, env, exec].allSatisfy { $0?.isEmpty ?? true } && network == nil && flavor == nil && boot == nil
            && restart == nil && restartDelay == nil && restartMax == nil && !changesHealth && !changesSnapshotSchedule
    }

    /// The library's edit, every value checked; nothing is written.
    func settingsEdit() throws(NspawnError) -> SettingsEdit {
        var edit = SettingsEdit()
        for assignment in set ?? [] {
            guard let equals = assignment.firstIndex(of: "=") else {
                throw .invalidArgument("invalid --set '\(assignment.escapedForMessage)': expected KEY=VALUE")
            }
            edit.assignments.append((try SettingKey(named: String(assignment[..<equals])), String(assignment[assignment.index(after: equals)...])))
        }
        edit.removals = try (unset ?? []).map { (key) throws(NspawnError) in try SettingKey(named: key) }
        edit.binds = bind ?? []
        edit.readOnlyBinds = bindRo ?? []
        edit.ports = port ?? []
        edit.environment = env ?? []
        if let network { edit.network = try SettingsEdit.NetworkMode(parsing: network) }
        switch (boot, exec) {
        case (true, let exec?) where !exec.isEmpty: throw .invalidArgument("--boot and --exec exclude each other")
        case (true, _): edit.boot = .boot
        case (_, let exec?) where !exec.isEmpty: edit.boot = .exec(exec)
        case (_, []?): throw .invalidArgument("--exec needs a command")
        default: break
        }
        if restart != nil || restartDelay != nil || restartMax != nil {
            edit.restart = RestartChange(mode: try restart.map { (text) throws(NspawnError) in try RestartPolicy.mode(parsing: text) },
                                         delaySeconds: try restartDelay.map { (text) throws(NspawnError) in try RestartPolicy.delay(parsing: text) },
                                         startLimit: try restartMax.map { (text) throws(NspawnError) in try RestartPolicy.StartLimit(parsing: text) })
        }
        if changesHealth {
            if noHealth == false { throw .invalidArgument("no_health takes only true") }
            edit.health = HealthChange(command: healthCmd.map(HealthCheck.shellCommand),
                                       intervalSeconds: try healthInterval.map { (text) throws(NspawnError) in try HealthCheck.span(parsing: text, what: "interval") },
                                       timeoutSeconds: try healthTimeout.map { (text) throws(NspawnError) in try HealthCheck.span(parsing: text, what: "timeout") },
                                       retries: healthRetries,
                                       startPeriodSeconds: try healthStartPeriod.map { (text) throws(NspawnError) in try HealthCheck.span(parsing: text, what: "start period") },
                                       restartOnUnhealthy: restartOnUnhealthy, remove: noHealth == true)
            // Checked against a stand-in check here, so bad values fail before the machine is looked at.
            _ = try edit.health?.applied(to: HealthCheck(command: ["true"]), machine: "")
        }
        if changesSnapshotSchedule {
            edit.snapshotSchedule = try snapshotScheduleChange()
        }
        try edit.validate()
        return edit
    }

    /// A whole schedule, or its removal, checked.
    private func snapshotScheduleChange() throws(NspawnError) -> SnapshotScheduleChange {
        switch noSnapshotSchedule {
        case false?:
            throw .invalidArgument("no_snapshot_schedule takes only true")
        case true?:
            if snapshotEvery != nil || snapshotKeep != nil || snapshotKeepDaily != nil || snapshotKeepWeekly != nil {
                throw .invalidArgument("removing the snapshot schedule excludes the other snapshot schedule options")
            }
            return .remove
        case nil:
            guard let snapshotEvery else { throw .invalidArgument("a snapshot schedule needs its interval (snapshot_every, --every)") }
            let schedule = SnapshotSchedule(everySeconds: try SnapshotSchedule.span(parsing: snapshotEvery, what: "interval"),
                                            keep: snapshotKeep, keepDaily: snapshotKeepDaily, keepWeekly: snapshotKeepWeekly)
            try schedule.validate(machine: nil)
            return .set(schedule)
        }
    }

    public func validate() throws(NspawnError) {
        _ = try settingsEdit()
        if let flavor { try checkFlavorName(flavor) }
    }
}

/// `POST /v1/machines/{name}/config`.
public typealias ConfigRequest = SettingsChange

/// The host's listening addresses and what answers inside, for `expose` and `create`.
public struct ListenSpec: Codable, Sendable, Equatable {
    /// `[ADDR:]PORT`, the same on both sides.
    public var listen: [String]
    /// A guest service that takes the sockets (Accept=no).
    public var unit: String?
    /// A guest command run per connection (Accept=yes).
    public var exec: [String]?

    public init(listen: [String], unit: String? = nil, exec: [String]? = nil) {
        self.listen = listen
        self.unit = unit
        self.exec = exec
    }

    func activation(for name: MachineName) throws(NspawnError) -> SocketActivation {
        let handler: ExposeHandler
        switch (unit, exec ?? []) {
        case (let unit?, []): handler = .unit(unit)
        case (nil, let exec) where !exec.isEmpty: handler = .exec(exec)
        case (nil, _): throw .invalidArgument("say what answers inside the machine: --exec CMD or --unit UNIT")
        case (_?, _): throw .invalidArgument("--exec and --unit exclude each other")
        }
        if listen.isEmpty { throw .invalidArgument("give at least one --listen [ADDR:]PORT") }
        return try SocketActivation(machine: name, addresses: try listen.map { (text) throws(NspawnError) in try ListenAddress(parsing: text) },
                                    handler: handler)
    }
}

/// `POST /v1/machines/{name}/expose`.
public struct ExposeRequest: Codable, Sendable, Equatable {
    public var listen: [String]
    public var unit: String?
    public var exec: [String]?
    /// Stop a running machine first and start it again afterwards.
    public var restart: Bool?
    /// Seconds to wait for a clean shutdown with `restart`.
    public var timeout: Double?

    public init(listen: [String], unit: String? = nil, exec: [String]? = nil, restart: Bool? = nil, timeout: Double? = nil) {
        self.listen = listen
        self.unit = unit
        self.exec = exec
        self.restart = restart
        self.timeout = timeout
    }

    var spec: ListenSpec { ListenSpec(listen: listen, unit: unit, exec: exec) }

    public func validate(for name: MachineName) throws(NspawnError) {
        _ = try spec.activation(for: name)
        _ = try StopTimeout.duration(timeout)
    }
}

/// `POST /v1/machines/{name}/unexpose`.
public struct UnexposeRequest: Codable, Sendable, Equatable {
    public var restart: Bool?
    public var timeout: Double?
    public init(restart: Bool? = nil, timeout: Double? = nil) {
        self.restart = restart
        self.timeout = timeout
    }
    public func validate() throws(NspawnError) { _ = try StopTimeout.duration(timeout) }
}

/// `POST /v1/machines`: a machine from an image in one step.
public struct CreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public var image: String
    public var start: Bool?
    public var settings: SettingsChange?
    public var expose: ListenSpec?

    public init(name: String, image: String, start: Bool? = nil, settings: SettingsChange? = nil, expose: ListenSpec? = nil) {
        self.name = name
        self.image = image
        self.start = start
        self.settings = settings
        self.expose = expose
    }

    public func validate() throws(NspawnError) {
        let name = try MachineName(name)
        _ = try MachineName(image)
        try settings?.validate()
        if settings?.boot != nil || settings?.exec != nil || settings?.set != nil || settings?.unset != nil {
            throw .invalidArgument("create takes --bind, --bind-ro, --port, --network, --env and --flavor; change other keys with config")
        }
        _ = try expose?.activation(for: name)
    }
}

/// The result of an action on one machine, as `nspawnctl --json` prints it.
public struct ActionResult: Codable, Sendable, Equatable {
    public var name: String
    public var result: String
    public init(name: String, result: String) {
        self.name = name
        self.result = result
    }
}

/// `GET /v1/version`.
public struct VersionInfo: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var api: String
    public init(name: String = "nspawnd", version: String = NspawnctlVersion.current, api: String = APILevel.current) {
        self.name = name
        self.version = version
        self.api = api
    }
}

func checkFlavorName(_ name: String) throws(NspawnError) {
    guard !name.isEmpty, name.utf8.count <= 64, !name.hasPrefix("."),
          name.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic && $0.isASCII || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0) }) else {
        throw .invalidArgument("invalid flavor '\(name.escapedForMessage)': expected a flavor name such as small")
    }
}

/// `POST /v1/machines/{name}/snapshots`.
public struct SnapshotRequest: Codable, Sendable, Equatable {
    /// The snapshot's name (default: the UTC time, such as 20261201-173000).
    public var name: String?
    /// A time span, such as 7d, after which the machine's snapshot timer removes it.
    public var expire: String?
    public init(name: String? = nil, expire: String? = nil) {
        self.name = name
        self.expire = expire
    }
    public func validate() throws(NspawnError) {
        if let name { try SnapshotInfo.check(name) }
        _ = try expiresAfter()
    }
    public func expiresAfter() throws(NspawnError) -> Double? {
        try expire.map { (text) throws(NspawnError) in try SnapshotSchedule.span(parsing: text, what: "expiry") }
    }
}

/// `POST /v1/machines/{name}/restore`.
public struct RestoreRequest: Codable, Sendable, Equatable {
    public var snapshot: String
    public init(snapshot: String) { self.snapshot = snapshot }
    public func validate() throws(NspawnError) { try SnapshotInfo.check(snapshot) }
}

/// `DELETE /v1/machines/{name}/snapshots`: one snapshot, named in the body.
public struct SnapshotRemoveRequest: Codable, Sendable, Equatable {
    public var snapshot: String
    public init(snapshot: String) { self.snapshot = snapshot }
    public func validate() throws(NspawnError) { try SnapshotInfo.check(snapshot) }
}

/// `export`: the archive's file on this host (`-`: standard output), and whether the
/// snapshots go in too. Only the library carries it; through nspawnd it is refused.
public struct ExportRequest: Sendable, Equatable {
    public var file: String
    public var snapshots: Bool?

    public init(file: String, snapshots: Bool? = nil) {
        self.file = file
        self.snapshots = snapshots
    }

    public func validate() throws(NspawnError) {
        if file.isEmpty || file.contains("\0") { throw .invalidArgument("invalid archive file '\(file.escapedForMessage)'") }
    }

    static var refusedThroughDaemon: NspawnError {
        .invalidArgument("export works on the local host only: it writes the archive on this host, so run it as root without --api or --host")
    }
}

/// `copy-to` and `copy-from`: a path on one side, and where the copy goes on the other.
/// Only the library carries it; through nspawnd it is refused (see `APIClient.copyTo`).
public struct CopyRequest: Sendable, Equatable {
    public var source: String
    /// Default: the same path as `source`.
    public var destination: String?
    /// Replace an existing destination atomically.
    public var replace: Bool

    public init(source: String, destination: String? = nil, replace: Bool = false) {
        self.source = source
        self.destination = destination
        self.replace = replace
    }

    public func validate() throws(NspawnError) {
        if source.isEmpty { throw .invalidArgument("the path to copy must not be empty") }
        if destination?.isEmpty == true { throw .invalidArgument("the destination must not be empty") }
    }

    /// Copying moves file contents between this host and the machine's; through nspawnd (or to
    /// another host) that would need a stream of its own.
    static func refusedThroughDaemon(_ verb: String) -> NspawnError {
        .invalidArgument("\(verb) works on the local host only: it copies files between this host and the machine's root, so run it as root without --api or --host")
    }
}
