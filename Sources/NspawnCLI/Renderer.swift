import FoundationEssentials
import NspawnKit

/// Tables for people and JSON for scripts, for every verb that prints a result; plan and apply
/// print through ProvisionOutput, and copy and version print a line of their own.
public enum Renderer {
    /// JSON with sorted keys, snake_case names and ISO-8601 dates.
    public static func json<T: Encodable>(_ value: T, compact: Bool = false) -> String {
        let encoder = WireJSON.encoder(pretty: !compact)
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            // Our models only hold strings, numbers, bools and dates.
            preconditionFailure("cannot encode \(T.self) as JSON: \(error)")
        }
    }

    /// Left-aligned columns separated by two spaces; no trailing blanks.
    public static func table(headers: [String], rows: [[String]]) -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        func line(_ cells: [String]) -> String {
            var out = ""
            for (index, cell) in cells.enumerated() {
                let last = index == cells.count - 1
                out += last ? cell : cell + String(repeating: " ", count: widths[index] - cell.count + 2)
            }
            return out
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }

    public static let listHeaders = ["NAME", "STATE", "OS", "ADDRESSES", "EXPOSED", "USAGE", "READ-ONLY", "ENABLED"]

    public static func listTable(_ machines: [MachineSummary]) -> String {
        table(headers: listHeaders, rows: machines.map { m in
            [
                m.name,
                m.state.rawValue + (m.health.map { " (\($0.status.rawValue))" } ?? ""),
                m.os ?? "-",
                m.addresses.isEmpty ? "-" : m.addresses.joined(separator: ","),
                m.exposed.isEmpty ? "-" : m.exposed.joined(separator: ","),
                m.usage.map(humanSize) ?? "-",
                m.readOnly.map(yesNo) ?? "-",
                yesNo(m.enabled),
            ]
        }) + machines.compactMap { m in m.pendingResize.map { "\n\(m.name): resize pending: \($0.text)" } }.joined()
    }

    public static func statusText(_ s: MachineStatus) -> String {
        var fields: [(String, String)] = [("State", s.state.rawValue)]
        if let os = s.os { fields.append(("OS", os)) }
        if !s.addresses.isEmpty { fields.append(("Addresses", s.addresses.joined(separator: ", "))) }
        if let m = s.machine {
            if let c = m.machineClass { fields.append(("Class", c)) }
            if let l = m.leader { fields.append(("Leader", String(l))) }
            if let u = m.unit { fields.append(("Unit", u)) }
            if let since = m.since { fields.append(("Since", timestamp(since))) }
            if let root = m.rootDirectory { fields.append(("Root", root)) }
            if !m.networkInterfaces.isEmpty {
                fields.append(("Interfaces", m.networkInterfaces.map(String.init).joined(separator: ", ")))
            }
        }
        if let i = s.image {
            let mode = i.readOnly.map { $0 ? "read-only" : "writable" } ?? "unknown mode"
            fields.append(("Image", "\(i.path ?? "-") (\(i.type ?? "unknown"), \(mode))"))
            fields.append(("Usage", i.usage.map(humanSize) ?? "-"))
            if let created = i.created { fields.append(("Created", timestamp(created))) }
            if let modified = i.modified { fields.append(("Modified", timestamp(modified))) }
        }
        fields.append(("Enabled", yesNo(s.enabled)))
        if !s.exposed.isEmpty {
            fields.append(("Exposed", s.exposed.joined(separator: ", ") + (s.socketState.map { " (\($0))" } ?? "")))
        }
        if let stats = s.stats {
            var use = ["CPU \(stats.cpuSeconds.map(span) ?? "-")"]
            if let memory = stats.memoryBytes {
                use.append("memory \(humanSize(memory))" + (stats.memoryLimitBytes.map { " of \(humanSize($0))" } ?? ""))
            }
            if let tasks = stats.tasks { use.append("\(tasks) tasks") }
            if let rx = stats.networkReceiveBytes, let tx = stats.networkTransmitBytes { use.append("net rx \(humanSize(rx)), tx \(humanSize(tx))") }
            fields.append(("Use", use.joined(separator: ", ")))
        }
        if let flavor = s.flavor { fields.append(("Flavor", flavor)) }
        if s.restart != nil || (s.restarts ?? 0) > 0 {
            fields.append(("Restart", (s.restart?.text ?? "no") + ", \(s.restarts ?? 0) restart\(s.restarts == 1 ? "" : "s") so far"))
        }
        if let result = s.unitResult {
            fields.append(("Last end", result + (s.startLimitHit == true
                ? "; start limit hit: systemd stopped restarting it ('nspawnctl start \(s.name)' starts it again)" : "")))
        }
        if let check = s.healthCheck {
            var text = s.health.map { health in
                health.text + (health.lastCheck.map { ", last checked \(timestamp($0))" } ?? "")
            } ?? "not checked while stopped"
            text += "; \(check.text)"
            fields.append(("Health", text))
        }
        if let pending = s.pendingResize { fields.append(("Resize", "pending: \(pending.text)")) }
        if let limits = s.limits { fields.append(("Limits", limitsText(limits))) }
        if let disk = s.disk { fields.append(("Disk", diskText(disk))) }
        if let oci = s.oci {
            fields.append(("OCI image", oci.reference + " (" + ([oci.manifestDigest, oci.platform].compactMap { $0 }.joined(separator: ", ")) + ")"))
        }
        if let snapshots = s.snapshots, !snapshots.isEmpty { fields.append(("Snapshots", snapshotsText(snapshots))) }
        if let schedule = s.snapshotSchedule { fields.append(("Schedule", "snapshots \(schedule.text)")) }
        let width = fields.map(\.0.count).max() ?? 0
        let body = fields.map { String(repeating: " ", count: width - $0.0.count) + "  \($0.0): \($0.1)" }
        return ([s.name] + body).joined(separator: "\n")
    }

    public static func configText(_ c: MachineConfig) -> String {
        var lines = ["\(c.name) (\(c.path ?? "no settings file; systemd-nspawn@.service defaults"))"]
        for key in SettingKey.all {
            for value in c.settings.settings[key.id] ?? [] { lines.append("  \(key.id)=\(value)") }
        }
        for entry in c.settings.other { lines.append("  \(entry.section).\(entry.key)=\(entry.value)  (not checked by nspawnctl)") }
        if let flavor = c.flavor { lines.append("  flavor: \(flavor)") }
        if let restart = c.restart { lines.append("  restart: \(restart.text)") }
        if let health = c.health { lines.append("  health: \(health.text)") }
        if let schedule = c.snapshotSchedule { lines.append("  snapshots: \(schedule.text)") }
        if !c.exposed.isEmpty { lines.append("  exposed: \(c.exposed.joined(separator: ", "))") }
        return lines.joined(separator: "\n")
    }

    /// "61.2M of 64.0M (btrfs quota group)".
    public static func diskText(_ d: DiskUsage) -> String {
        let method = d.method == .btrfsQuotaGroup ? "btrfs quota group" : "project quota"
        let used = d.used.map(humanSize) ?? "-"
        return d.limit.map { "\(used) of \(humanSize($0)) (\(method))" } ?? "\(used), no limit (\(method))"
    }

    /// Limits as systemd shows them; "-" is no limit.
    public static func limitsText(_ l: LiveLimits) -> String {
        let cpu = l.cpuQuotaPerSecUSec.map { "\($0 / 10_000)%" } ?? "-"
        var parts = ["memory max \(l.memoryMax.map(humanSize) ?? "-")", "cpu quota \(cpu)",
                     "tasks max \(l.tasksMax.map(String.init) ?? "-")", "io weight \(l.ioWeight.map(String.init) ?? "-")"]
        if let current = l.memoryCurrent { parts.append("memory now \(humanSize(current))") }
        return parts.joined(separator: ", ")
    }

    public static func yesNo(_ value: Bool) -> String { value ? "yes" : "no" }

    /// Binary units, as systemd prints sizes (1.5G, 300M, 4.0K, 512B).
    public static func humanSize(_ bytes: UInt64) -> String { NspawnKit.humanSize(bytes) }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    public static let statsHeaders = ["NAME", "CPU%", "CPU TIME", "MEMORY", "PEAK", "LIMIT", "IO READ", "IO WRITE", "TASKS", "NET RX", "NET TX", "UPTIME"]

    static func statsTable(_ samples: [MachineStats]) -> String {
        // The health column only when a machine has a check, as docker stats leaves it out.
        let health = samples.contains { $0.health != nil }
        return table(headers: statsHeaders + (health ? ["HEALTH"] : []),
                     rows: samples.map { statsRow($0) + (health ? [$0.health?.rawValue ?? "-"] : []) })
    }

    private static func statsRow(_ s: MachineStats) -> [String] {
        let size = { (bytes: UInt64?) -> String in bytes.map(humanSize) ?? "-" }
        var row = [s.name, s.cpuPercent.map(oneDecimal) ?? "-", s.cpuSeconds.map(span) ?? "-"]
        row += [size(s.memoryBytes), size(s.memoryPeakBytes), s.memoryLimitBytes.map(humanSize) ?? "none"]
        row += [size(s.ioReadBytes), size(s.ioWriteBytes), s.tasks.map { String($0) } ?? "-"]
        row += [size(s.networkReceiveBytes), size(s.networkTransmitBytes), s.uptimeSeconds.map(span) ?? "-"]
        return row
    }

    static func oneDecimal(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(abs(tenths % 10))"
    }

    /// `3d 4h`, `2h 5m`, `4m 10s`, `12.3s`.
    static func span(_ seconds: Double) -> String {
        let whole = Int(seconds)
        if whole >= 86_400 { return "\(whole / 86_400)d \(whole % 86_400 / 3600)h" }
        if whole >= 3600 { return "\(whole / 3600)h \(whole % 3600 / 60)m" }
        if whole >= 60 { return "\(whole / 60)m \(whole % 60)s" }
        return oneDecimal(seconds) + "s"
    }

    /// journalctl's short form, with the machine's name (or `host`) where it puts the host name.
    /// A console's carriage returns are dropped; other control characters show escaped.
    static func logLine(_ entry: LogEntry, machine: String) -> String {
        let origin = entry.source == .machine ? machine : "host"
        let who = (entry.identifier ?? "unknown").escapedForMessage + (entry.pid.map { "[\($0)]" } ?? "")
        return "\(LogTime.short(entry.realtimeUsec)) \(origin) \(who): \(String(String.UnicodeScalarView(entry.message.unicodeScalars.filter { $0 != "\r" })).escapedForMessage)"
    }
}
