import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A resize that waits for its confirmation, as Nova's VERIFY_RESIZE: the new flavor is in
/// force, the old drop-in is kept to revert to, and a timer confirms it at `confirmsAt` with
/// no nspawnctl or nspawnd running. The timer unit is the record: while it exists, the resize
/// is pending.
public struct PendingResize: Sendable, Codable, Equatable {
    /// The flavor before the resize; nil when the machine had none.
    public var from: String?
    public var to: String
    public var since: Date
    public var confirmsAt: Date

    public init(from: String?, to: String, since: Date, confirmsAt: Date) {
        self.from = from
        self.to = to
        self.since = since
        self.confirmsAt = confirmsAt
    }

    /// How long a resize waits by default, as Nova's resize_confirm_window.
    public static let defaultConfirmWindow: Double = 24 * 3600
    public static let maximumConfirmWindow: Double = 365 * 24 * 3600

    /// `small → medium since TIME, confirms automatically at TIME` (UTC, as systemd prints times).
    public var text: String {
        "\(from ?? "no flavor") → \(to) since \(Self.calendarTime(since)), confirms automatically at \(Self.calendarTime(confirmsAt))"
    }

    /// The timer and its service: the timer fires once at `confirmsAt` (at the next boot if the
    /// host was down then: Persistent=), the service runs `nspawnctl resize --confirm NAME`.
    func timerText(machine: MachineName) -> String {
        """
        # Written by nspawnctl: the pending resize of machine \(machine.rawValue). 'nspawnctl resize --confirm'
        # or '--revert' removes it; at its time it confirms the resize itself.
        [Unit]
        Description=Confirm the resize of machine \(machine.rawValue) (\(from ?? "no flavor") to \(to))
        X-NspawnctlResizeFrom=\(from ?? "")
        X-NspawnctlResizeTo=\(to)
        X-NspawnctlResizeSince=\(Int64(since.timeIntervalSince1970))
        X-NspawnctlResizeConfirmsAt=\(Int64(confirmsAt.timeIntervalSince1970.rounded(.up)))

        [Timer]
        OnCalendar=\(Self.calendarTime(confirmsAt))
        Persistent=yes
        AccuracySec=1s

        [Install]
        WantedBy=timers.target

        """
    }

    static func serviceText(machine: MachineName, nspawnctl: String) -> String {
        """
        # Written by nspawnctl: confirms the pending resize of machine \(machine.rawValue) (see its .timer).
        [Unit]
        Description=Confirm the resize of machine \(machine.rawValue)

        [Service]
        Type=oneshot
        ExecStart=\(nspawnctl) resize --confirm \(machine.rawValue)

        """
    }

    /// The pending resize a timer file written by `timerText` records; nil for anything else.
    init?(timerText text: String) {
        let document = UnitFileDocument(parsing: text)
        guard let to = document.value("Unit", "X-NspawnctlResizeTo"), !to.isEmpty,
              let since = document.value("Unit", "X-NspawnctlResizeSince").flatMap(Int64.init),
              let confirmsAt = document.value("Unit", "X-NspawnctlResizeConfirmsAt").flatMap(Int64.init)
        else { return nil }
        let from = document.value("Unit", "X-NspawnctlResizeFrom") ?? ""
        self.init(from: from.isEmpty ? nil : from, to: to, since: Date(timeIntervalSince1970: Double(since)),
                  confirmsAt: Date(timeIntervalSince1970: Double(confirmsAt)))
    }

    /// `2026-12-07 12:00:00 UTC`: what OnCalendar= reads and systemctl prints.
    static func calendarTime(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.up))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
    }
}

extension MachineName {
    /// The pending resize of this machine, and what confirms it.
    var resizeTimerUnit: String { "nspawnctl-resize-\(rawValue).timer" }
    var resizeServiceUnit: String { "nspawnctl-resize-\(rawValue).service" }
    var resizeTimerPath: String { "\(MachineUnits.unitDirectory)/\(resizeTimerUnit)" }
    var resizeServicePath: String { "\(MachineUnits.unitDirectory)/\(resizeServiceUnit)" }
    /// The flavor drop-in as it was before a pending resize, to revert to; empty when there was
    /// none. Not a `.conf`, so systemd does not read it.
    var flavorBeforeResizePath: String { "\(dropInDirectory)/50-flavor.conf.before-resize" }
}
