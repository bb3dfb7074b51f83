import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots taken by a host timer every `everySeconds` while the machine runs, pruned after
/// each as restic and borg prune: the newest `keep`, plus the newest of each of the last
/// `keepDaily` days and `keepWeekly` ISO weeks (host local time). Only the schedule's own
/// snapshots are pruned; snapshots taken by hand go only when they expire.
public struct SnapshotSchedule: Codable, Sendable, Equatable {
    public var everySeconds: Double
    public var keep: Int?
    public var keepDaily: Int?
    public var keepWeekly: Int?

    public init(everySeconds: Double, keep: Int? = nil, keepDaily: Int? = nil, keepWeekly: Int? = nil) {
        self.everySeconds = everySeconds
        self.keep = keep
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
    }

    /// `machine` names the machine in messages when known.
    public func validate(machine: String?) throws(NspawnError) {
        let of = machine.map { " of machine '\($0)'" } ?? ""
        guard everySeconds >= 1, everySeconds <= 366 * 86_400 else {
            throw .invalidArgument("invalid snapshot interval '\(RestartPolicy.span(everySeconds))'\(of): expected 1s to 366d")
        }
        for (option, value) in [("keep", keep), ("keep-daily", keepDaily), ("keep-weekly", keepWeekly)] {
            if let value, !(1...10_000).contains(value) {
                throw .invalidArgument("invalid snapshot \(option) \(value)\(of): expected 1 to 10000")
            }
        }
        // A schedule that never prunes fills the disk; restic and borg refuse it too.
        if keep == nil && keepDaily == nil && keepWeekly == nil {
            throw .invalidArgument("the snapshot schedule\(of) would keep every snapshot; give keep, keep-daily or keep-weekly")
        }
    }

    /// A systemd time span for `--every` and `--expire`, in seconds.
    public static func span(parsing text: String, what: String) throws(NspawnError) -> Double {
        guard let seconds = RestartPolicy.seconds(Substring(text)), seconds > 0 else {
            throw .invalidArgument("invalid snapshot \(what) '\(text.escapedForMessage)': expected a time span such as 1h or 7d")
        }
        return seconds
    }

    /// `every 1h, keep 24, 7 daily`.
    public var text: String {
        var parts = ["every \(Self.spanText(everySeconds))"]
        if let keep { parts.append("keep \(keep)") }
        if let keepDaily { parts.append("\(keepDaily) daily") }
        if let keepWeekly { parts.append("\(keepWeekly) weekly") }
        return parts.joined(separator: ", ")
    }

    /// 3600 → `1h`, 90 → `90s`: the largest unit that divides the span.
    static func spanText(_ seconds: Double) -> String {
        guard seconds == seconds.rounded() else { return RestartPolicy.span(seconds) }
        let whole = Int(seconds)
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("min", 60)] where whole % size == 0 {
            return "\(whole / size)\(unit)"
        }
        return "\(whole)s"
    }

    // MARK: Retention

    /// One snapshot as retention sees it.
    public struct Candidate: Sendable, Equatable {
        public var name: String
        public var created: Date
        public var scheduled: Bool
        public var expires: Date?

        public init(name: String, created: Date, scheduled: Bool, expires: Date? = nil) {
            self.name = name
            self.created = created
            self.scheduled = scheduled
            self.expires = expires
        }
    }

    /// The snapshots to remove at `now`: every expired one, and the schedule's own beyond what
    /// `schedule` keeps (none without a schedule). `calendar` maps a time to its day and week.
    public static func doomed(_ snapshots: [Candidate], schedule: SnapshotSchedule?, now: Date,
                              calendar: (Date) -> (day: Int, week: Int) = localDayAndWeek) -> [String] {
        let expired = snapshots.filter { $0.expires.map { $0 <= now } ?? false }
        let expiredNames = Set(expired.map(\.name))
        guard let schedule else { return expired.map(\.name) }
        let newestFirst = snapshots.filter { $0.scheduled && !expiredNames.contains($0.name) }
            .sorted { ($0.created, $0.name) > ($1.created, $1.name) }
        var kept = Set(newestFirst.prefix(schedule.keep ?? 0).map(\.name))
        func keepNewestPerPeriod(_ count: Int?, _ period: (Date) -> Int) {
            guard let count else { return }
            var periods: Set<Int> = []
            for snapshot in newestFirst where periods.count < count && periods.insert(period(snapshot.created)).inserted {
                kept.insert(snapshot.name)
            }
        }
        keepNewestPerPeriod(schedule.keepDaily) { calendar($0).day }
        keepNewestPerPeriod(schedule.keepWeekly) { calendar($0).week }
        return expired.map(\.name) + newestFirst.filter { !kept.contains($0.name) }.reversed().map(\.name)
    }

    /// The local day (days since 1970 in local time) and ISO week (year × 100 + week number).
    public static func localDayAndWeek(_ date: Date) -> (day: Int, week: Int) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        localtime_r(&seconds, &parts)
        let localSeconds = Int(seconds) + Int(parts.tm_gmtoff)
        let day = localSeconds >= 0 ? localSeconds / 86_400 : (localSeconds - 86_399) / 86_400
        var buffer = [CChar](repeating: 0, count: 16)
        let written = strftime(&buffer, buffer.count, "%G%V", &parts)
        let week = written > 0 ? Int(String(decoding: buffer.prefix(written).map { UInt8(bitPattern: $0) }, as: UTF8.self)) ?? day / 7 : day / 7
        return (day, week)
    }

    // MARK: Units

    /// The service the timer starts: `nspawnctl snapshot-schedule --run NAME`, which reads the
    /// schedule from this file's X-NspawnctlSnapshots= (no schedule: only expiry).
    static func serviceText(_ schedule: SnapshotSchedule?, machine: MachineName, nspawnctl: String) throws(NspawnError) -> String {
        // An empty value would read as a reset; `none` marks a timer kept only for expiry.
        var record = "none"
        if let schedule {
            guard let data = try? WireJSON.encoder(pretty: false).encode(schedule) else {
                throw .failed("cannot encode the snapshot schedule of machine '\(machine)'")
            }
            record = String(decoding: data, as: UTF8.self)
        }
        let what = schedule.map { "takes a snapshot of machine \(machine.rawValue) \($0.text)" } ?? "removes expired snapshots of machine \(machine.rawValue)"
        return """
            # Written by nspawnctl: \(what), started by its .timer.
            # 'nspawnctl snapshot-schedule \(machine.rawValue) --none' removes the schedule.
            [Unit]
            Description=Snapshots of machine \(machine.rawValue)
            # Every 2s must not count as a crash loop.
            StartLimitIntervalSec=0
            X-NspawnctlSnapshots=\(record)

            [Service]
            Type=oneshot
            ExecStart=\(try quoteExecStart([nspawnctl, "snapshot-schedule", "--run", machine.rawValue]))

            """
    }

    /// Enabled in timers.target, so it runs after a reboot with no nspawnctl involved: every
    /// `everySeconds` from its start, and at the next expiry.
    static func timerText(_ schedule: SnapshotSchedule?, nextExpiry: Date?, machine: MachineName) -> String {
        var timer: [String] = []
        if let schedule {
            let every = RestartPolicy.span(schedule.everySeconds)
            timer += ["OnActiveSec=\(every)", "OnUnitActiveSec=\(every)"]
        }
        if let nextExpiry { timer += ["OnCalendar=\(PendingResize.calendarTime(nextExpiry))", "Persistent=yes"] }
        let fine = (schedule?.everySeconds ?? 60) < 60 || nextExpiry != nil
        timer.append("AccuracySec=\(fine ? "100ms" : "1s")")
        return """
            # Written by nspawnctl: \(schedule.map { "snapshots of machine \(machine.rawValue) \($0.text)" } ?? "expiry of snapshots of machine \(machine.rawValue)").
            [Unit]
            Description=Snapshots of machine \(machine.rawValue)\(schedule.map { " \($0.text)" } ?? " (expiry)")

            [Timer]
            \(timer.joined(separator: "\n"))

            [Install]
            WantedBy=timers.target

            """
    }

    /// What a service file written by `serviceText` records: `.some(nil)` for expiry only,
    /// nil for a file that is not ours.
    static func recorded(inServiceText text: String) -> SnapshotSchedule?? {
        guard let record = UnitFileDocument(parsing: text).value("Unit", "X-NspawnctlSnapshots") else { return nil }
        if record == "none" { return .some(nil) }
        guard let schedule = try? WireJSON.decoder().decode(SnapshotSchedule.self, from: Data(record.utf8)) else { return nil }
        return .some(schedule)
    }
}

/// A change to a machine's snapshot schedule: a whole new schedule, or its removal.
public enum SnapshotScheduleChange: Sendable, Equatable {
    case set(SnapshotSchedule)
    case remove

    /// The schedule in force after the change; nil: none.
    public var schedule: SnapshotSchedule? {
        if case .set(let schedule) = self { schedule } else { nil }
    }
}

extension MachineName {
    var snapshotTimerUnit: String { "nspawnctl-snapshots-\(rawValue).timer" }
    var snapshotServiceUnit: String { "nspawnctl-snapshots-\(rawValue).service" }
    var snapshotTimerPath: String { "\(MachineUnits.unitDirectory)/\(snapshotTimerUnit)" }
    var snapshotServicePath: String { "\(MachineUnits.unitDirectory)/\(snapshotServiceUnit)" }
}
