#if canImport(Glibc)
import Glibc
#endif

/// A resource preset, in the spirit of a cloud flavor: data in `NAME.flavor` files
/// (`[Flavor]` with MemoryMax=, CPUQuota=, TasksMax=, IOWeight=), applied to
/// `systemd-nspawn@NAME.service` as a drop-in and, for a running machine, live. DiskMax= is
/// no unit property: it is enforced by the file system of the machine's image (`DiskLimit`).
public struct Flavor: Sendable, Equatable, Codable {
    public var name: String
    public var description: String?
    /// Bytes.
    public var memoryMax: UInt64?
    /// Percent of one CPU (200 = two CPUs), as systemd's CPUQuota=.
    public var cpuQuotaPercent: UInt64?
    public var tasksMax: UInt64?
    /// 1–10000.
    public var ioWeight: UInt64?
    /// Bytes the machine's image may hold.
    public var diskMax: UInt64?

    /// Local overrides first, then the installed flavors.
    public static let searchDirectories = [
        "/etc/nspawnctl/flavors", "/usr/local/share/nspawnctl/flavors", "/usr/share/nspawnctl/flavors",
    ]

    public init(name: String, description: String? = nil, memoryMax: UInt64? = nil, cpuQuotaPercent: UInt64? = nil,
                tasksMax: UInt64? = nil, ioWeight: UInt64? = nil, diskMax: UInt64? = nil) {
        self.name = name
        self.description = description
        self.memoryMax = memoryMax
        self.cpuQuotaPercent = cpuQuotaPercent
        self.tasksMax = tasksMax
        self.ioWeight = ioWeight
        self.diskMax = diskMax
    }

    public static func load(_ name: String, searchDirectories: [String] = searchDirectories) throws(NspawnError) -> Flavor {
        guard !name.isEmpty, name.count <= 64, !name.hasPrefix("."),
              name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) })
        else { throw .invalidArgument("invalid flavor name '\(name.escapedForMessage)'") }
        if let (path, text) = try files(searchDirectories).find(name) {
            return try parse(text, name: name, origin: path)
        }
        let known = available(searchDirectories: searchDirectories)
        throw .invalidArgument("no flavor '\(name)'" + (known.isEmpty ? " (none are installed)" : "; known flavors: \(known.joined(separator: ", "))"))
    }

    public static func available(searchDirectories: [String] = searchDirectories) -> [String] {
        files(searchDirectories).names()
    }

    static func files(_ directories: [String]) -> DataFiles {
        DataFiles(directories: directories, suffix: ".flavor", limit: 64 * 1024)
    }

    /// Parses a flavor file. Unknown keys are errors, so a typo never silently drops a limit.
    public static func parse(_ text: String, name: String, origin: String) throws(NspawnError) -> Flavor {
        let document = UnitFileDocument(parsing: text)
        var flavor = Flavor(name: name)
        for entry in document.entries {
            guard entry.section == "Flavor" else {
                throw .invalidArgument("\(origin): unexpected \(entry.key)= in section [\(entry.section)]; expected [Flavor]")
            }
            let value = entry.value
            func bad(_ expected: String) -> NspawnError {
                .invalidArgument("\(origin): invalid \(entry.key)=\(value.escapedForMessage): expected \(expected)")
            }
            switch entry.key {
            case "Description": flavor.description = value
            case "MemoryMax":
                guard let bytes = parseSize(value), bytes > 0 else { throw bad("a size such as 512M or 2G") }
                flavor.memoryMax = bytes
            case "CPUQuota":
                guard value.hasSuffix("%"), let percent = UInt64(value.dropLast()), percent > 0, percent <= 100_000
                else { throw bad("a percentage such as 50% or 200%") }
                flavor.cpuQuotaPercent = percent
            case "TasksMax":
                guard let tasks = UInt64(value), tasks > 0 else { throw bad("a positive number") }
                flavor.tasksMax = tasks
            case "IOWeight":
                guard let weight = UInt64(value), (1...10_000).contains(weight) else { throw bad("a number from 1 to 10000") }
                flavor.ioWeight = weight
            case "DiskMax":
                guard let bytes = parseSize(value), bytes >= DiskLimit.smallest else { throw bad("a size of at least 1M, such as 10G") }
                flavor.diskMax = bytes
            default:
                throw .invalidArgument("\(origin): unknown key \(entry.key)= (known: Description, MemoryMax, CPUQuota, TasksMax, IOWeight, DiskMax)")
            }
        }
        if flavor.memoryMax == nil && flavor.cpuQuotaPercent == nil && flavor.tasksMax == nil && flavor.ioWeight == nil
            && flavor.diskMax == nil {
            throw .invalidArgument("\(origin): the flavor sets no limit")
        }
        return flavor
    }

    /// The drop-in for `systemd-nspawn@NAME.service`. The flavor's name rides along in an
    /// X- key, which systemd ignores, so `status` can tell which flavor is applied.
    public func dropIn() -> String {
        var lines = ["# Written by nspawnctl; changed by 'nspawnctl resize'.", "[Unit]", "X-NspawnctlFlavor=\(name)"]
        // Read back by revert and rebuild, which put the file system's limit back from here.
        if let diskMax { lines.append("X-NspawnctlDiskMax=\(diskMax)") }
        lines += ["", "[Service]"]
        if let memoryMax { lines.append("MemoryMax=\(memoryMax)") }
        if let cpuQuotaPercent { lines.append("CPUQuota=\(cpuQuotaPercent)%") }
        if let tasksMax { lines.append("TasksMax=\(tasksMax)") }
        if let ioWeight { lines.append("IOWeight=\(ioWeight)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The flavor a drop-in written by `dropIn()` applies; nil for any other file.
    init?(dropIn text: String) {
        let document = UnitFileDocument(parsing: text)
        guard let name = document.value("Unit", "X-NspawnctlFlavor") else { return nil }
        self.init(name: name)
        memoryMax = document.value("Service", "MemoryMax").flatMap(UInt64.init)
        cpuQuotaPercent = document.value("Service", "CPUQuota").flatMap { UInt64($0.dropLast()) }
        tasksMax = document.value("Service", "TasksMax").flatMap(UInt64.init)
        ioWeight = document.value("Service", "IOWeight").flatMap(UInt64.init)
        diskMax = document.value("Unit", "X-NspawnctlDiskMax").flatMap(UInt64.init)
    }

    /// The flavor named in a drop-in written by `dropIn()`.
    static func name(inDropIn text: String) -> String? {
        UnitFileDocument(parsing: text).value("Unit", "X-NspawnctlFlavor")
    }

    /// The same limits as properties for systemd's SetUnitProperties.
    var unitProperties: [(String, BusValue)] {
        var properties: [(String, BusValue)] = []
        if let memoryMax { properties.append(("MemoryMax", .uint64(memoryMax))) }
        if let cpuQuotaPercent { properties.append(("CPUQuotaPerSecUSec", .uint64(cpuQuotaPercent * 10_000))) }
        if let tasksMax { properties.append(("TasksMax", .uint64(tasksMax))) }
        if let ioWeight { properties.append(("IOWeight", .uint64(ioWeight))) }
        return properties
    }
}

/// The limits systemd enforces on a machine's unit right now.
public struct LiveLimits: Sendable, Codable, Equatable {
    /// nil means no limit ("infinity").
    public var memoryMax: UInt64?
    public var cpuQuotaPerSecUSec: UInt64?
    public var tasksMax: UInt64?
    public var ioWeight: UInt64?
    /// Current memory use, when the unit runs and accounting is on.
    public var memoryCurrent: UInt64?
}

/// Parses a size as systemd does, with base-1024 suffixes K, M, G, T (and a bare byte count).
func parseSize(_ text: String) -> UInt64? {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = Substring(text)
    var factor: UInt64 = 1
    if let last = digits.last, let unitFactor = units[last] {
        factor = unitFactor
        digits = digits.dropLast()
    }
    guard let number = UInt64(digits) else { return nil }
    let (product, overflow) = number.multipliedReportingOverflow(by: factor)
    return overflow ? nil : product
}
