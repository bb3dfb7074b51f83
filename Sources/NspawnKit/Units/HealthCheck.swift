import FoundationEssentials

/// A command run inside a machine at an interval, as Docker's HEALTHCHECK: `retries` failures
/// in a row make the machine unhealthy, one success healthy again. A systemd timer on the host
/// runs it (`nspawnctl health-check NAME`), so it needs no nspawnctl or nspawnd running.
public struct HealthCheck: Codable, Sendable, Equatable {
    /// argv inside the machine; `--health-cmd` gives `/bin/sh -c TEXT`.
    public var command: [String]
    public var intervalSeconds: Double
    /// A check still running after this long is killed and counts as a failure.
    public var timeoutSeconds: Double
    /// Failures in a row that make the machine unhealthy.
    public var retries: Int
    /// Failures this soon after the machine started do not count (a success still does).
    public var startPeriodSeconds: Double
    /// Restart the machine's unit when it turns unhealthy.
    public var restartOnUnhealthy: Bool

    public static let defaultInterval: Double = 30
    public static let defaultTimeout: Double = 10
    public static let defaultRetries = 3

    public init(command: [String], intervalSeconds: Double = defaultInterval, timeoutSeconds: Double = defaultTimeout,
                retries: Int = defaultRetries, startPeriodSeconds: Double = 0, restartOnUnhealthy: Bool = false) {
        self.command = command
        self.intervalSeconds = intervalSeconds
        self.timeoutSeconds = timeoutSeconds
        self.retries = retries
        self.startPeriodSeconds = startPeriodSeconds
        self.restartOnUnhealthy = restartOnUnhealthy
    }

    /// A shell command line, as Docker's `CMD-SHELL`.
    public static func shellCommand(_ text: String) -> [String] { ["/bin/sh", "-c", text] }

    public func validate() throws(NspawnError) {
        guard let program = command.first, !program.isEmpty, shellText?.trimmedWhitespace.isEmpty != true else {
            throw .invalidArgument("the health check command is empty")
        }
        if command.joined().utf8.count > 4096 { throw .invalidArgument("the health check command is longer than 4096 bytes") }
        if let word = command.first(where: { $0.utf8.contains(0) }) {
            throw .invalidArgument("invalid health check command word '\(word.escapedForMessage)': it holds a NUL byte")
        }
        try Self.check("interval", intervalSeconds, 1...86_400)
        try Self.check("timeout", timeoutSeconds, 1...3600)
        try Self.check("start period", startPeriodSeconds, 0...86_400)
        guard (1...100).contains(retries) else { throw .invalidArgument("invalid health check retries \(retries): expected 1 to 100") }
    }

    private static func check(_ what: String, _ seconds: Double, _ range: ClosedRange<Double>) throws(NspawnError) {
        guard range.contains(seconds) else {
            throw .invalidArgument("invalid health check \(what) \(RestartPolicy.span(seconds)): expected \(RestartPolicy.span(range.lowerBound)) to \(RestartPolicy.span(range.upperBound))")
        }
    }

    /// A systemd time span for `--health-interval` and the like, in seconds.
    public static func span(parsing text: String, what: String) throws(NspawnError) -> Double {
        guard let seconds = RestartPolicy.seconds(Substring(text)) else {
            throw .invalidArgument("invalid health check \(what) '\(text.escapedForMessage)': expected a time span such as 30s or 1min")
        }
        return seconds
    }

    /// The shell command line of a `--health-cmd` check.
    var shellText: String? { command.count == 3 && command[0] == "/bin/sh" && command[1] == "-c" ? command[2] : nil }

    /// `'curl -f localhost' every 30s, timeout 10s, unhealthy after 3 failures`.
    public var text: String {
        let shown = shellText ?? command.joined(separator: " ")
        var parts = ["'\(shown)' every \(RestartPolicy.span(intervalSeconds))", "timeout \(RestartPolicy.span(timeoutSeconds))",
                     "unhealthy after \(retries) failure\(retries == 1 ? "" : "s")"]
        if startPeriodSeconds > 0 { parts.append("start period \(RestartPolicy.span(startPeriodSeconds))") }
        if restartOnUnhealthy { parts.append("restarts the machine when unhealthy") }
        return parts.joined(separator: ", ")
    }

    // MARK: Units

    /// The service the timer starts: `nspawnctl health-check NAME`, which reads the check from
    /// this file's X-NspawnctlHealth= (the record: while the file exists, the machine has a check).
    func serviceText(machine: MachineName, nspawnctl: String) throws(NspawnError) -> String {
        let record: String
        do {
            record = String(decoding: try WireJSON.encoder(pretty: false).encode(self), as: UTF8.self)
        } catch {
            throw .failed("cannot encode the health check of machine '\(machine)': \(error)")
        }
        return """
            # Written by nspawnctl: the health check of machine \(machine.rawValue), started by its .timer.
            # 'nspawnctl config \(machine.rawValue) --no-health' removes it.
            [Unit]
            Description=Health check of machine \(machine.rawValue)
            After=\(machine.serviceUnit)
            # A check every second is no crash loop: systemd's start limit must not stop it.
            StartLimitIntervalSec=0
            X-NspawnctlHealth=\(record)

            [Service]
            Type=oneshot
            ExecStart=\(try quoteExecStart([nspawnctl, "health-check", machine.rawValue]))
            TimeoutStartSec=\(RestartPolicy.span(timeoutSeconds + 60))

            """
    }

    /// Bound to the machine's unit: it starts with the machine (the drop-in's Wants=), stops
    /// with it, and restarts with it.
    func timerText(machine: MachineName) -> String {
        let interval = RestartPolicy.span(intervalSeconds)
        return """
            # Written by nspawnctl: runs the health check of machine \(machine.rawValue) while it runs.
            [Unit]
            Description=Health checks of machine \(machine.rawValue) every \(interval)
            BindsTo=\(machine.serviceUnit)
            After=\(machine.serviceUnit)

            [Timer]
            OnActiveSec=\(interval)
            OnUnitActiveSec=\(interval)
            AccuracySec=\(intervalSeconds < 10 ? "100ms" : "1s")

            """
    }

    /// The machine's side: its start pulls the timer in and resets the health to `starting`.
    static func dropIn(machine: MachineName, nspawnctl: String) throws(NspawnError) -> String {
        """
        # Written by nspawnctl: the machine's health check (\(machine.healthTimerUnit)).
        [Unit]
        Wants=\(machine.healthTimerUnit)

        [Service]
        ExecStartPre=-\(try quoteExecStart([nspawnctl, "health-check", "--reset", machine.rawValue]))

        """
    }

    /// The check a service file written by `serviceText` records; nil for anything else.
    init?(serviceText text: String) {
        guard let record = UnitFileDocument(parsing: text).value("Unit", "X-NspawnctlHealth"),
              let check = try? WireJSON.decoder().decode(HealthCheck.self, from: Data(record.utf8))
        else { return nil }
        self = check
    }
}

/// A change to a machine's health check; fields left nil keep the check's values.
public struct HealthChange: Sendable, Equatable {
    public var command: [String]?
    public var intervalSeconds: Double?
    public var timeoutSeconds: Double?
    public var retries: Int?
    public var startPeriodSeconds: Double?
    public var restartOnUnhealthy: Bool?
    /// Drop the check whole.
    public var remove: Bool

    public init(command: [String]? = nil, intervalSeconds: Double? = nil, timeoutSeconds: Double? = nil, retries: Int? = nil,
                startPeriodSeconds: Double? = nil, restartOnUnhealthy: Bool? = nil, remove: Bool = false) {
        self.command = command
        self.intervalSeconds = intervalSeconds
        self.timeoutSeconds = timeoutSeconds
        self.retries = retries
        self.startPeriodSeconds = startPeriodSeconds
        self.restartOnUnhealthy = restartOnUnhealthy
        self.remove = remove
    }

    var changesCheck: Bool {
        command != nil || intervalSeconds != nil || timeoutSeconds != nil || retries != nil || startPeriodSeconds != nil || restartOnUnhealthy != nil
    }

    /// `current` with this change, checked; nil when the check goes.
    public func applied(to current: HealthCheck?, machine: String) throws(NspawnError) -> HealthCheck? {
        if remove {
            if changesCheck { throw .invalidArgument("--no-health excludes the other --health options") }
            return nil
        }
        guard let command = command ?? current?.command else {
            throw .invalidArgument("machine '\(machine)' has no health check to change; give --health-cmd too")
        }
        var check = current ?? HealthCheck(command: command)
        check.command = command
        if let intervalSeconds { check.intervalSeconds = intervalSeconds }
        if let timeoutSeconds { check.timeoutSeconds = timeoutSeconds }
        if let retries { check.retries = retries }
        if let startPeriodSeconds { check.startPeriodSeconds = startPeriodSeconds }
        if let restartOnUnhealthy { check.restartOnUnhealthy = restartOnUnhealthy }
        try check.validate()
        return check
    }
}

/// What the health checks of a machine's current run found, kept in /run/nspawnctl/health.
public struct MachineHealth: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable, CaseIterable {
        /// No verdict yet: no check has passed, and failures have not reached the retries.
        case starting
        case healthy
        case unhealthy
    }

    public var status: Status
    /// Failures in a row, not counting those within the start period.
    public var failingStreak: Int
    /// When this run of the machine began (the start period counts from here); nil before the
    /// first check of a run that started without nspawnctl's reset.
    public var since: Date?
    public var lastCheck: Date?
    /// The last check's exit status (128+N for signal N); nil when it timed out or did not run.
    public var lastExitCode: Int32?
    /// The end of its output, stdout then stderr, at most 4 KiB.
    public var lastOutput: String?

    public init(status: Status = .starting, failingStreak: Int = 0, since: Date?, lastCheck: Date? = nil,
                lastExitCode: Int32? = nil, lastOutput: String? = nil) {
        self.status = status
        self.failingStreak = failingStreak
        self.since = since
        self.lastCheck = lastCheck
        self.lastExitCode = lastExitCode
        self.lastOutput = lastOutput
    }

    /// How one run of the check ended.
    public enum Outcome: Sendable, Equatable {
        case exited(Int32)
        case timedOut
    }

    /// The health after one more check, as Docker counts: a success is healthy at once; a
    /// failure within the start period, before any success, does not count.
    public func recording(_ outcome: Outcome, output: String, check: HealthCheck, at now: Date) -> MachineHealth {
        var next = self
        next.lastCheck = now
        next.lastOutput = output
        switch outcome {
        case .exited(let code): next.lastExitCode = code
        case .timedOut: next.lastExitCode = nil
        }
        if outcome == .exited(0) {
            next.status = .healthy
            next.failingStreak = 0
            return next
        }
        if next.since == nil { next.since = now }
        if status == .starting && now.timeIntervalSince(next.since ?? now) < check.startPeriodSeconds { return next }
        next.failingStreak += 1
        if next.failingStreak >= check.retries { next.status = .unhealthy }
        return next
    }

    /// `healthy`, `unhealthy (3 failures in a row; exit 1: connection refused)`.
    public var text: String {
        guard status != .healthy, failingStreak > 0 else { return status.rawValue }
        return "\(status.rawValue) (\(failingStreak) failure\(failingStreak == 1 ? "" : "s") in a row; \(lastFailure))"
    }

    /// `exit 3: sick now` or `timed out`: how the last check ended, with its last line of output.
    public var lastFailure: String {
        let how = lastExitCode.map { "exit \($0)" } ?? "timed out"
        let line = lastOutput?.split(separator: "\n").last.map { ": \($0)" } ?? ""
        return how + line
    }

    static let directory = "/run/nspawnctl/health"
}

extension MachineName {
    var healthTimerUnit: String { "nspawnctl-health-\(rawValue).timer" }
    var healthServiceUnit: String { "nspawnctl-health-\(rawValue).service" }
    var healthTimerPath: String { "\(MachineUnits.unitDirectory)/\(healthTimerUnit)" }
    var healthServicePath: String { "\(MachineUnits.unitDirectory)/\(healthServiceUnit)" }
    var healthDropInPath: String { "\(dropInDirectory)/61-health.conf" }
    var healthStatePath: String { "\(MachineHealth.directory)/\(rawValue).json" }
}
