import FoundationEssentials

/// Where a machine is in its life, as `ls` shows it.
public enum MachineState: String, Sendable, Codable, CaseIterable {
    case running
    case stopped
    case starting
    case stopping
    /// Not running, but the host listens on its sockets and starts it on the first connection.
    case listening

    /// Maps machined's `State` property ("opening", "running", "closing").
    init(machinedState: String?) {
        switch machinedState {
        case "opening": self = .starting
        case "closing": self = .stopping
        default: self = .running
        }
    }
}

/// One row of `ls`: a machine, an image, or both under one name.
public struct MachineSummary: Sendable, Codable, Equatable {
    public var name: String
    public var state: MachineState
    /// PRETTY_NAME from os-release, or nil when unknown.
    public var os: String?
    public var addresses: [String]
    /// Disk usage in bytes, or nil when the file system cannot tell (machined reports none for plain directories).
    public var usage: UInt64?
    /// Nil when there is no image (a machine started from a path).
    public var readOnly: Bool?
    public var enabled: Bool
    /// machined's class ("container", "vm") for running machines.
    public var machineClass: String?
    /// machined's image type ("directory", "subvolume", "raw", …) when there is an image.
    public var imageType: String?
    /// Addresses the host listens on for the machine (`nspawnctl expose`).
    public var exposed: [String] = []
    /// A resize waiting to be confirmed or reverted.
    public var pendingResize: PendingResize?
    /// The OCI image the image was imported from.
    public var oci: OCIOrigin?
    /// A running machine's health check verdict; nil without a check.
    public var health: MachineHealth?

    public init(name: String, state: MachineState, os: String? = nil, addresses: [String] = [], usage: UInt64? = nil,
                readOnly: Bool? = nil, enabled: Bool = false, machineClass: String? = nil, imageType: String? = nil) {
        self.name = name
        self.state = state
        self.os = os
        self.addresses = addresses
        self.usage = usage
        self.readOnly = readOnly
        self.enabled = enabled
        self.machineClass = machineClass
        self.imageType = imageType
    }
}

/// Everything `status` shows about one name.
public struct MachineStatus: Sendable, Codable, Equatable {
    public var name: String
    public var state: MachineState
    public var os: String?
    public var addresses: [String]
    public var enabled: Bool
    public var machine: RunningMachine?
    public var image: ImageDetails?
    /// Addresses the host listens on for the machine, and the state of that socket unit.
    public var exposed: [String] = []
    public var socketState: String?
    /// The flavor in the machine's drop-in, and the limits systemd enforces now.
    public var flavor: String?
    public var limits: LiveLimits?
    /// A resize waiting to be confirmed or reverted.
    public var pendingResize: PendingResize?
    /// The image's use against its disk limit, where the file system counts it per machine.
    public var disk: DiskUsage?
    /// The OCI image the image was imported from.
    public var oci: OCIOrigin?
    /// The image's snapshots, oldest first; nil when there is no image.
    public var snapshots: [SnapshotInfo]?
    /// Snapshots taken by a host timer, and how many are kept; nil: none.
    public var snapshotSchedule: SnapshotSchedule?
    /// The restart policy of the machine's drop-in (nil: none, systemd's template restarts nothing).
    public var restart: RestartPolicy?
    /// systemd's automatic restarts of the unit since it was last started by hand (NRestarts).
    public var restarts: Int?
    /// How the unit last ended when that was not a success (`exit-code`, `signal`, `core-dump`,
    /// `watchdog`), as systemd's Result says.
    public var unitResult: String?
    /// The unit failed although its policy restarts it: the start limit stopped a crash loop.
    public var startLimitHit: Bool?
    /// A running machine's use now, as one `stats` sample.
    public var stats: MachineStats?
    /// The health check, and what it found in this run (nil when stopped).
    public var healthCheck: HealthCheck?
    public var health: MachineHealth?

    public struct RunningMachine: Sendable, Codable, Equatable {
        public var machineClass: String?
        public var leader: UInt32?
        public var rootDirectory: String?
        public var unit: String?
        public var service: String?
        public var since: Date?
        public var networkInterfaces: [Int32]
    }

    public struct ImageDetails: Sendable, Codable, Equatable {
        public var type: String?
        public var path: String?
        public var readOnly: Bool?
        public var created: Date?
        public var modified: Date?
        public var usage: UInt64?
        public var limit: UInt64?
    }
}

/// What `enable` and `disable` changed on disk, as systemd reports it.
public struct UnitFileChange: Sendable, Codable, Equatable {
    public var type: String
    public var path: String
    public var source: String
}

extension Date {
    /// machined reports microseconds since the epoch; 0 means unknown.
    init?(epochMicroseconds: UInt64?) {
        guard let value = epochMicroseconds, value != 0, value != UInt64.max else { return nil }
        self.init(timeIntervalSince1970: Double(value) / 1_000_000)
    }
}

/// machined reports UINT64_MAX for "unknown" sizes.
func knownSize(_ value: UInt64?) -> UInt64? {
    guard let value, value != UInt64.max else { return nil }
    return value
}

/// The most readable name an os-release file offers.
func osDisplayName(_ release: [String: String]) -> String? {
    if let pretty = release["PRETTY_NAME"], !pretty.isEmpty { return pretty }
    if let name = release["NAME"] ?? release["ID"] {
        if let version = release["VERSION_ID"] ?? release["VERSION"] { return "\(name) \(version)" }
        return name
    }
    return nil
}
