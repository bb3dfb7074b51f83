/// Where systemd and systemd-nspawn look for a machine's units and files. Every unit name and
/// host path of a machine is built here, so they cannot drift apart.
enum MachineUnits {
    /// systemd runs machine NAME as the instance NAME of systemd-nspawn@.service (and, when it
    /// is exposed, of systemd-nspawn@.socket).
    static let templatePrefix = "systemd-nspawn@"
    /// Trusted settings, written by us. /run is read as a base when /etc has none;
    /// a file next to the image is untrusted and never read.
    static let settingsDirectory = "/etc/systemd/nspawn"
    static let runtimeSettingsDirectory = "/run/systemd/nspawn"
    static let unitDirectory = "/etc/systemd/system"
    /// Where SetUnitProperties(runtime) keeps live property changes, one drop-in per property.
    static let controlDirectory = "/run/systemd/system.control"
    /// The properties a flavor sets live (CPUQuota= is kept as CPUQuotaPerSecUSec= too).
    static let liveFlavorProperties = ["MemoryMax", "CPUQuota", "CPUQuotaPerSecUSec", "TasksMax", "IOWeight"]

    /// The machine name in `systemd-nspawn@NAME.service` (with `suffix` ".service") or
    /// `systemd-nspawn@NAME.socket`; nil for any other unit.
    static func machineName(ofUnit unit: String, suffix: String) -> String? {
        guard unit.hasPrefix(templatePrefix), unit.hasSuffix(suffix), unit.count > templatePrefix.count + suffix.count
        else { return nil }
        return String(unit.dropFirst(templatePrefix.count).dropLast(suffix.count))
    }
}

extension MachineName {
    /// The unit systemd runs this machine as.
    public var serviceUnit: String { "\(MachineUnits.templatePrefix)\(rawValue).service" }
    /// The host's socket unit of an exposed machine: systemd activates the service of the same
    /// name, and systemd-nspawn hands the listening sockets to the container's init.
    public var socketUnit: String { "\(MachineUnits.templatePrefix)\(rawValue).socket" }

    var settingsPath: String { "\(MachineUnits.settingsDirectory)/\(rawValue).nspawn" }
    var runtimeSettingsPath: String { "\(MachineUnits.runtimeSettingsDirectory)/\(rawValue).nspawn" }
    /// The untrusted settings file machined keeps next to an image at `imagePath`.
    func adjacentSettingsPath(imagePath: String) -> String { "\(AtomicFile.split(imagePath).parent)/\(rawValue).nspawn" }
    var socketUnitPath: String { "\(MachineUnits.unitDirectory)/\(socketUnit)" }
    var dropInDirectory: String { "\(MachineUnits.unitDirectory)/\(serviceUnit).d" }
    var flavorDropInPath: String { "\(dropInDirectory)/50-flavor.conf" }
    var controlDropInDirectory: String { "\(MachineUnits.controlDirectory)/\(serviceUnit).d" }
    /// The live copies of a flavor's limits that SetUnitProperties(runtime) wrote.
    var controlDropIns: [String] { MachineUnits.liveFlavorProperties.map { "\(controlDropInDirectory)/50-\($0).conf" } }
}
