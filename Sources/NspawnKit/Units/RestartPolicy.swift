/// What systemd does when a machine's unit ends: `Restart=`, `RestartSec=` and the start limit
/// (`StartLimitBurst=` within `StartLimitIntervalSec=`) as a drop-in for
/// `systemd-nspawn@NAME.service`. systemd restarts the machine; nothing of ours needs to run.
public struct RestartPolicy: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable, CaseIterable {
        case no
        case onFailure = "on-failure"
        case always
    }

    public struct StartLimit: Codable, Sendable, Equatable {
        public var burst: Int
        public var intervalSeconds: Double

        /// `N/INTERVAL`: at most N starts within INTERVAL (`5/10min`, `3/60`).
        public init(parsing text: String) throws(NspawnError) {
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let burst = Int(parts[0]), (1...10_000).contains(burst),
                  let interval = RestartPolicy.seconds(parts[1]), interval >= 1, interval <= 7 * 86_400 else {
                throw .invalidArgument("invalid restart limit '\(text.escapedForMessage)': expected N/INTERVAL, at most N starts (1-10000) within INTERVAL (1s to 7d), such as 5/10min")
            }
            self.burst = burst
            intervalSeconds = interval
        }

        public var text: String { "\(burst)/\(RestartPolicy.span(intervalSeconds))" }
    }

    public var mode: Mode
    /// Seconds systemd waits before restarting; nil keeps its 100 ms.
    public var delaySeconds: Double?
    /// Past it systemd stops restarting, and the unit fails with result `start-limit-hit`.
    public var startLimit: StartLimit?

    public init(mode: Mode, delaySeconds: Double? = nil, startLimit: StartLimit? = nil) {
        self.mode = mode
        self.delaySeconds = delaySeconds
        self.startLimit = startLimit
    }

    public static func mode(parsing text: String) throws(NspawnError) -> Mode {
        guard let mode = Mode(rawValue: text) else {
            throw .invalidArgument("invalid restart policy '\(text.escapedForMessage)': expected no, on-failure or always")
        }
        return mode
    }

    public static func delay(parsing text: String) throws(NspawnError) -> Double {
        guard let seconds = seconds(Substring(text)), seconds <= 86_400 else {
            throw .invalidArgument("invalid restart delay '\(text.escapedForMessage)': expected a time span up to a day, such as 5s or 1min")
        }
        return seconds
    }

    /// A systemd time span (`90`, `5s`, `1min 30s`, `500ms`), in seconds.
    static func seconds(_ text: Substring) -> Double? {
        guard !text.isEmpty, text.first != "-", text.first != "+" else { return nil }
        return LogTime.span(text).map { Double($0) / 1_000_000 }
    }

    static func span(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(Int((seconds * 1000).rounded()))ms"
    }

    /// Nothing systemd's template does not already do: no drop-in is needed.
    public var isDefault: Bool { mode == .no && delaySeconds == nil && startLimit == nil }

    static let marker = "# nspawnctl restart policy"

    public func dropIn() -> String {
        var unit = ""
        if let startLimit {
            unit = "[Unit]\nStartLimitIntervalSec=\(Self.span(startLimit.intervalSeconds))\nStartLimitBurst=\(startLimit.burst)\n\n"
        }
        let delay = delaySeconds.map { "RestartSec=\(Self.span($0))\n" } ?? ""
        return "\(Self.marker)\n\(unit)[Service]\nRestart=\(mode.rawValue)\n\(delay)"
    }

    /// The policy a drop-in of ours states; nil for anything else.
    public init?(dropIn text: String) {
        guard text.hasPrefix(Self.marker) else { return nil }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.hasPrefix("[") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        guard let mode = values["Restart"].flatMap(Mode.init(rawValue:)) else { return nil }
        self.mode = mode
        delaySeconds = values["RestartSec"].flatMap { Self.seconds(Substring($0)) }
        if let burst = values["StartLimitBurst"], let interval = values["StartLimitIntervalSec"] {
            startLimit = try? StartLimit(parsing: "\(burst)/\(interval)")
        }
    }

    /// The policy in `config`'s words: `on-failure, delay 5s, at most 3 starts in 60s`.
    public var text: String {
        var parts = [mode.rawValue]
        if let delaySeconds { parts.append("delay \(Self.span(delaySeconds))") }
        if let startLimit { parts.append("at most \(startLimit.burst) starts in \(Self.span(startLimit.intervalSeconds))") }
        return parts.joined(separator: ", ")
    }
}

/// A change to a machine's restart policy; fields left nil keep the policy's values.
public struct RestartChange: Sendable, Equatable {
    public var mode: RestartPolicy.Mode?
    public var delaySeconds: Double?
    public var startLimit: RestartPolicy.StartLimit?

    public init(mode: RestartPolicy.Mode? = nil, delaySeconds: Double? = nil, startLimit: RestartPolicy.StartLimit? = nil) {
        self.mode = mode
        self.delaySeconds = delaySeconds
        self.startLimit = startLimit
    }

    /// `current` with this change; a delay or limit alone needs a policy to change, and `no`
    /// alone drops the policy whole.
    public func applied(to current: RestartPolicy?, machine: String) throws(NspawnError) -> RestartPolicy {
        if mode == .no && delaySeconds == nil && startLimit == nil { return RestartPolicy(mode: .no) }
        guard let mode = mode ?? current?.mode else {
            throw .invalidArgument("machine '\(machine)' has no restart policy to change; give --restart no|on-failure|always too")
        }
        return RestartPolicy(mode: mode, delaySeconds: delaySeconds ?? current?.delaySeconds, startLimit: startLimit ?? current?.startLimit)
    }
}

extension MachineName {
    var restartDropInPath: String { "\(dropInDirectory)/60-restart.conf" }
}
