#if canImport(Glibc)
import Glibc
#endif

/// What `logs` shows: a window of a machine's journal, optionally followed.
public struct LogRequest: Codable, Sendable, Equatable {
    /// The last N entries of the window (with `follow` and no `lines`, 10, as journalctl -f).
    public var lines: Int?
    /// journalctl's time forms: `2026-12-06 10:00[:00]`, `@EPOCH`, `now`, `today`, `yesterday`,
    /// `-1h30min`, or RFC 3339 as `time` in a LogEntry.
    public var since: String?
    public var until: String?
    /// The least urgent priority shown: a syslog name (`err`) or 0–7.
    public var priority: String?
    /// Only the machine's current run (or its last one since the host booted).
    public var boot: Bool?
    public var follow: Bool?

    public static let maximumLines = 1_000_000

    public init(lines: Int? = nil, since: String? = nil, until: String? = nil, priority: String? = nil, boot: Bool? = nil, follow: Bool? = nil) {
        self.lines = lines
        self.since = since
        self.until = until
        self.priority = priority
        self.boot = boot
        self.follow = follow
    }

    /// The request with its words read: times as microseconds, the priority as a number. A
    /// window whose since is after its until is empty; a follow with an until ends there.
    public func window(now: UInt64 = LogTime.now()) throws(NspawnError) -> LogWindow {
        if let lines, lines < 0 || lines > Self.maximumLines {
            throw .invalidArgument("lines must be between 0 and \(Self.maximumLines), not \(lines)")
        }
        let since = try since.map { text throws(NspawnError) in try LogTime.parse(text, now: now) }
        let until = try until.map { text throws(NspawnError) in try LogTime.parse(text, now: now) }
        let priority = try priority.map { text throws(NspawnError) in try LogPriority.parse(text) }
        return LogWindow(lines: lines ?? (follow == true ? 10 : nil), since: since, until: until, maximumPriority: priority,
                         boot: boot ?? false, follow: follow ?? false)
    }
}

/// A LogRequest read and checked.
public struct LogWindow: Sendable, Equatable {
    public var lines: Int?
    public var since: UInt64?
    public var until: UInt64?
    public var maximumPriority: Int?
    public var boot: Bool
    public var follow: Bool

    /// Since after until: nothing can be in it.
    public var isEmpty: Bool { since.map { since in until.map { since > $0 } ?? false } ?? false }

    public func contains(_ realtime: UInt64) -> Bool {
        (since.map { realtime >= $0 } ?? true) && (until.map { realtime <= $0 } ?? true)
    }
}

/// One line of `logs`, from the machine's own journal or from the host's about its unit.
public struct LogEntry: Codable, Sendable, Equatable {
    public enum Source: String, Codable, Sendable {
        /// The guest's journal.
        case machine
        /// The host's journal for systemd-nspawn@NAME.service: a payload's output, start, stop, failures.
        case host
    }

    /// RFC 3339 in UTC with microseconds.
    public var time: String
    /// Microseconds since the epoch, as journalctl's `__REALTIME_TIMESTAMP`.
    public var realtimeUsec: UInt64
    public var source: Source
    /// syslog priority, 0 (emerg) to 7 (debug); nil when the entry has none.
    public var priority: Int?
    public var unit: String?
    /// SYSLOG_IDENTIFIER, else the process name.
    public var identifier: String?
    public var pid: Int?
    public var message: String

    public init(realtimeUsec: UInt64, source: Source, priority: Int?, unit: String?, identifier: String?, pid: Int?, message: String) {
        time = LogTime.format(realtimeUsec)
        self.realtimeUsec = realtimeUsec
        self.source = source
        self.priority = priority
        self.unit = unit
        self.identifier = identifier
        self.pid = pid
        self.message = message
    }

    init(_ record: JournalRecord, source: Source) {
        let f = record.fields
        self.init(realtimeUsec: record.realtime, source: source, priority: f["PRIORITY"].flatMap { Int($0) },
                  unit: f["_SYSTEMD_UNIT"] ?? f["UNIT"], identifier: f["SYSLOG_IDENTIFIER"] ?? f["_COMM"],
                  pid: (f["SYSLOG_PID"] ?? f["_PID"]).flatMap { Int($0) }, message: f["MESSAGE"] ?? "")
    }

    static let journalFields = ["MESSAGE", "PRIORITY", "_SYSTEMD_UNIT", "UNIT", "SYSLOG_IDENTIFIER", "_COMM", "SYSLOG_PID", "_PID"]
}

/// syslog's priorities by their journalctl names.
public enum LogPriority {
    public static let names = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]

    public static func parse(_ text: String) throws(NspawnError) -> Int {
        if let number = Int(text), (0...7).contains(number) { return number }
        if let index = names.firstIndex(of: text.lowercased()) { return index }
        throw .invalidArgument("unknown priority '\(text.escapedForMessage)': expected 0-7 or one of \(names.joined(separator: ", "))")
    }
}

/// journalctl's --since/--until forms, read as systemd.time(7) reads them (local time unless
/// the text says UTC or Z).
public enum LogTime {
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1000
    }

    public static func parse(_ text: String, now: UInt64) throws(NspawnError) -> UInt64 {
        let trimmed = text.trimmedWhitespace
        let refused = NspawnError.invalidArgument(
            "cannot read '\(text.escapedForMessage)' as a time: expected 'YYYY-MM-DD [HH:MM[:SS]]', '@SECONDS', 'now', 'today', 'yesterday' or a span such as '-1h'")
        guard !trimmed.isEmpty, trimmed.count <= 64 else { throw refused }
        switch trimmed {
        case "now": return now
        case "today": return startOfDay(now, offsetDays: 0)
        case "yesterday": return startOfDay(now, offsetDays: -1)
        case "tomorrow": return startOfDay(now, offsetDays: 1)
        default: break
        }
        if trimmed.hasPrefix("@") {
            guard let seconds = Double(trimmed.dropFirst()), seconds >= 0, seconds < 1e11 else { throw refused }
            return UInt64(seconds * 1_000_000)
        }
        if let sign = trimmed.first, sign == "-" || sign == "+" {
            guard let span = span(trimmed.dropFirst()) else { throw refused }
            if sign == "-" { return now > span ? now - span : 0 }
            let (later, overflowed) = now.addingReportingOverflow(span)
            guard !overflowed else { throw refused }
            return later
        }
        if trimmed.hasSuffix(" ago"), let span = span(trimmed.dropLast(4)) { return now > span ? now - span : 0 }
        guard let absolute = calendarTime(trimmed) else { throw refused }
        return absolute
    }

    /// A systemd time span such as `1h30min` or `90s`, in microseconds.
    static func span(_ text: Substring) -> UInt64? {
        let units: [(String, UInt64)] = [
            ("usec", 1), ("us", 1), ("msec", 1000), ("ms", 1000),
            ("seconds", 1_000_000), ("second", 1_000_000), ("sec", 1_000_000), ("s", 1_000_000),
            ("minutes", 60_000_000), ("minute", 60_000_000), ("min", 60_000_000), ("m", 60_000_000),
            ("hours", 3_600_000_000), ("hour", 3_600_000_000), ("hr", 3_600_000_000), ("h", 3_600_000_000),
            ("days", 86_400_000_000), ("day", 86_400_000_000), ("d", 86_400_000_000),
            ("weeks", 604_800_000_000), ("week", 604_800_000_000), ("w", 604_800_000_000),
        ]
        var rest = text.drop { $0 == " " }
        var total: UInt64 = 0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let value = UInt64(digits), value < 1_000_000_000 else { return nil }
            rest = rest.dropFirst(digits.count).drop { $0 == " " }
            let word = rest.prefix { $0.isASCII && $0.isLetter }
            let factor: UInt64
            if word.isEmpty {
                factor = 1_000_000
            } else if let unit = units.first(where: { $0.0 == word }) {
                factor = unit.1
            } else {
                return nil
            }
            // Spans past ~584,000 years do not fit; neither do they mean anything here.
            let (product, overflowed) = value.multipliedReportingOverflow(by: factor)
            let (sum, overflowedSum) = total.addingReportingOverflow(product)
            guard !overflowed, !overflowedSum else { return nil }
            total = sum
            rest = rest.dropFirst(word.count).drop { $0 == " " }
        }
        return total
    }

    /// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][Z| UTC]`.
    static func calendarTime(_ text: String) -> UInt64? {
        var body = Substring(text)
        var utc = false
        if body.hasSuffix("Z") { utc = true; body = body.dropLast() } else if body.hasSuffix(" UTC") { utc = true; body = body.dropLast(4) }
        let parts = body.split(whereSeparator: { $0 == " " || $0 == "T" })
        guard parts.count == 1 || parts.count == 2 else { return nil }
        let date = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard date.count == 3, date[0].count == 4, let year = Int32(date[0]), let month = Int32(date[1]), let day = Int32(date[2]),
              (1...12).contains(month), (1...31).contains(day), (1970...9999).contains(year) else { return nil }
        var hour: Int32 = 0, minute: Int32 = 0, second: Int32 = 0
        var micros: UInt64 = 0
        if parts.count == 2 {
            let clock = parts[1].split(separator: ":", omittingEmptySubsequences: false)
            guard clock.count == 2 || clock.count == 3, let h = Int32(clock[0]), let m = Int32(clock[1]),
                  (0...23).contains(h), (0...59).contains(m) else { return nil }
            hour = h
            minute = m
            if clock.count == 3 {
                let fields = clock[2].split(separator: ".", omittingEmptySubsequences: false)
                guard fields.count <= 2, let s = Int32(fields[0]), (0...60).contains(s) else { return nil }
                second = s
                if fields.count == 2 {
                    let fraction = fields[1]
                    guard !fraction.isEmpty, fraction.count <= 6, let value = UInt64(fraction) else { return nil }
                    micros = value * UInt64(pow10(6 - fraction.count))
                }
            }
        }
        var broken = tm()
        broken.tm_year = year - 1900
        broken.tm_mon = month - 1
        broken.tm_mday = day
        broken.tm_hour = hour
        broken.tm_min = minute
        broken.tm_sec = second
        broken.tm_isdst = -1
        let seconds = utc ? timegm(&broken) : mktime(&broken)
        guard seconds >= 0 else { return nil }
        return UInt64(seconds) * 1_000_000 + micros
    }

    private static func pow10(_ n: Int) -> Int { (0..<n).reduce(1) { value, _ in value * 10 } }

    private static func startOfDay(_ now: UInt64, offsetDays: Int) -> UInt64 {
        var seconds = time_t(now / 1_000_000)
        var broken = tm()
        localtime_r(&seconds, &broken)
        broken.tm_hour = 0
        broken.tm_min = 0
        broken.tm_sec = 0
        broken.tm_mday += Int32(offsetDays)
        broken.tm_isdst = -1
        return UInt64(max(0, mktime(&broken))) * 1_000_000
    }

    /// RFC 3339 in UTC with microseconds: `2026-12-06T21:45:01.123456Z`.
    public static func format(_ realtime: UInt64) -> String {
        var seconds = time_t(realtime / 1_000_000)
        var broken = tm()
        gmtime_r(&seconds, &broken)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let micros = String(realtime % 1_000_000)
        return "\(broken.tm_year + 1900)-\(two(broken.tm_mon + 1))-\(two(broken.tm_mday))T\(two(broken.tm_hour)):\(two(broken.tm_min)):\(two(broken.tm_sec))."
            + String(repeating: "0", count: 6 - micros.count) + micros + "Z"
    }

    /// journalctl's short form in local time: `Dec 06 21:45:01`.
    public static func short(_ realtime: UInt64) -> String {
        var seconds = time_t(realtime / 1_000_000)
        var broken = tm()
        localtime_r(&seconds, &broken)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%b %d %H:%M:%S", &broken)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
