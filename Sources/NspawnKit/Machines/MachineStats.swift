import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One sample of a running machine's use, from its unit's cgroup (v2) and its network namespace.
/// A field is nil when the kernel does not say (no memory.peak before Linux 5.19, no limit, a
/// machine on the host's network).
public struct MachineStats: Codable, Sendable, Equatable {
    public var name: String
    /// CPU time of everything in the machine (cpu.stat usage_usec), in seconds.
    public var cpuSeconds: Double?
    /// CPU use between two samples, 100 being one CPU busy; nil in a single sample.
    public var cpuPercent: Double?
    public var memoryBytes: UInt64?
    public var memoryPeakBytes: UInt64?
    /// memory.max; nil when unlimited.
    public var memoryLimitBytes: UInt64?
    public var ioReadBytes: UInt64?
    public var ioWriteBytes: UInt64?
    public var tasks: UInt64?
    /// Bytes over the machine's own interfaces (loopback left out); nil on the host's network.
    public var networkReceiveBytes: UInt64?
    public var networkTransmitBytes: UInt64?
    public var uptimeSeconds: Double?
    /// The health check's verdict; nil without a check.
    public var health: MachineHealth.Status?
    /// CLOCK_MONOTONIC of the sampling host, in µs: what CPU % is measured between.
    public var sampledUsec: UInt64

    public init(name: String, sampledUsec: UInt64) {
        self.name = name
        self.sampledUsec = sampledUsec
    }

    /// This sample with its CPU % over the time since `previous` of the same machine.
    public func withCPUPercent(since previous: MachineStats?) -> MachineStats {
        var copy = self
        guard let previous, previous.name == name, let now = cpuSeconds, let then = previous.cpuSeconds,
              sampledUsec > previous.sampledUsec, now >= then else { return copy }
        let wall = Double(sampledUsec - previous.sampledUsec) / 1_000_000
        copy.cpuPercent = ((now - then) / wall * 1000).rounded() / 10
        return copy
    }

    static func monotonicUsec() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1000
    }
}

/// Reads the numbers behind MachineStats: cgroup v2 files, and the leader's /proc/PID/net/dev
/// (its network namespace's interfaces, as the kernel counts them).
enum CgroupStats {
    /// The cgroup v2 hierarchy: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
    /// hybrid one (there only the core files, cpu.stat and cgroup.threads, have numbers; the
    /// memory, io and pids controllers belong to cgroup v1).
    static let root: String = {
        for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where access(candidate + "/cgroup.controllers", F_OK) == 0 {
            return candidate
        }
        return "/sys/fs/cgroup"
    }()

    /// The cgroup of `unit` in a /proc/PID/cgroup file: the prefix of its cgroup v2 path up to
    /// the component that is the unit (a container's leader sits in `…/UNIT/payload`).
    static func unitCgroup(_ file: String, unit: String) -> String? {
        guard let line = file.split(separator: "\n").first(where: { $0.hasPrefix("0::/") }) else { return nil }
        var path: [Substring] = []
        for component in line.dropFirst(3).split(separator: "/") {
            path.append(component)
            if component == unit { return "/" + path.joined(separator: "/") }
        }
        return nil
    }

    static func read(into stats: inout MachineStats, cgroup: String) {
        guard let directory = try? Directory(FileDescriptor.opening { open(root + cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }) else { return }
        func text(_ name: String) -> String? {
            guard let fd = try? directory.openFileBeneath(name) else { return nil }
            defer { try? fd.close() }
            return (try? fd.readAll(limit: 256 * 1024)).map { String(decoding: $0, as: UTF8.self) }
        }
        func number(_ name: String) -> UInt64? { text(name).flatMap { UInt64($0.trimmedWhitespace) } }
        if let cpu = text("cpu.stat"), let usage = keyed(cpu)["usage_usec"] { stats.cpuSeconds = Double(usage) / 1_000_000 }
        stats.memoryBytes = number("memory.current")
        stats.memoryPeakBytes = number("memory.peak")
        stats.memoryLimitBytes = number("memory.max")
        if let io = text("io.stat") {
            let totals = ioTotals(io)
            stats.ioReadBytes = totals.read
            stats.ioWriteBytes = totals.write
        }
        stats.tasks = number("pids.current") ?? threads(below: directory)
    }

    /// The threads in a cgroup and every cgroup below it, as pids.current counts them, for a
    /// hierarchy without the pids controller. Bounded, so a guest's thousands of cgroups cannot
    /// hold us up.
    static func threads(below directory: Directory, depth: Int = 0, budget: inout Int) -> UInt64? {
        budget -= 1
        guard budget > 0, depth < 32, let fd = try? directory.openFileBeneath("cgroup.threads") else { return nil }
        let bytes = (try? fd.readAll(limit: 4 * 1024 * 1024)) ?? []
        try? fd.close()
        var count = UInt64(bytes.lazy.filter { $0 == UInt8(ascii: "\n") }.count)
        for entry in (try? directory.entries()) ?? [] {
            guard let status = try? directory.status(entry), (status.st_mode & S_IFMT) == S_IFDIR,
                  let child = try? directory.openDirectory(entry) else { continue }
            guard let below = threads(below: child, depth: depth + 1, budget: &budget) else { return nil }
            count += below
        }
        return count
    }

    static func threads(below directory: Directory) -> UInt64? {
        var budget = 4096
        return threads(below: directory, budget: &budget)
    }

    /// `key value` lines, as cpu.stat writes them.
    static func keyed(_ text: String) -> [String: UInt64] {
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, let value = UInt64(fields[1]) { values[String(fields[0])] = value }
        }
        return values
    }

    /// io.stat's `MAJ:MIN rbytes=… wbytes=…` lines summed over devices.
    static func ioTotals(_ text: String) -> (read: UInt64, write: UInt64) {
        var read: UInt64 = 0, write: UInt64 = 0
        for line in text.split(separator: "\n") {
            for field in line.split(separator: " ").dropFirst() {
                let pair = field.split(separator: "=", maxSplits: 1)
                guard pair.count == 2, let value = UInt64(pair[1]) else { continue }
                if pair[0] == "rbytes" { read &+= value } else if pair[0] == "wbytes" { write &+= value }
            }
        }
        return (read, write)
    }

    /// /proc/net/dev's received and transmitted bytes over every interface but loopback.
    static func networkTotals(_ text: String) -> (received: UInt64, transmitted: UInt64) {
        var received: UInt64 = 0, transmitted: UInt64 = 0
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let interface = line[..<colon].drop { $0 == " " }
            let fields = line[line.index(after: colon)...].split(separator: " ")
            guard interface != "lo", fields.count >= 9, let rx = UInt64(fields[0]), let tx = UInt64(fields[8]) else { continue }
            received &+= rx
            transmitted &+= tx
        }
        return (received, transmitted)
    }

    /// The leader's network counters, or nil when it shares ours (the host's) or cannot be read.
    static func network(ofLeader pid: UInt32) -> (received: UInt64, transmitted: UInt64)? {
        guard let host = MachineProbe.Host.current.network else { return nil }
        var st = stat()
        guard stat("/proc/\(pid)/ns/net", &st) == 0, !(UInt64(st.st_dev) == host.dev && UInt64(st.st_ino) == host.ino),
              let bytes = try? readFile("/proc/\(pid)/net/dev", limit: 1024 * 1024) else { return nil }
        return networkTotals(String(decoding: bytes, as: UTF8.self))
    }

    private static func readFile(_ path: String, limit: Int) throws(Errno) -> [UInt8] {
        let fd = try FileDescriptor.opening { open(path, O_RDONLY | O_CLOEXEC) }
        defer { try? fd.close() }
        return try fd.readAll(limit: limit)
    }
}
