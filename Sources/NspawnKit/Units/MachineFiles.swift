/// Where a machine's settings and units live on the host.
enum MachineFiles {
    /// Trusted settings, written by us. /run is read as a base when /etc has none;
    /// a file next to the image is untrusted and never read.
    static let settingsDirectory = "/etc/systemd/nspawn"
    static let runtimeSettingsDirectory = "/run/systemd/nspawn"

    static func settingsPath(_ name: MachineName) -> String { "\(settingsDirectory)/\(name.rawValue).nspawn" }
    static func runtimeSettingsPath(_ name: MachineName) -> String { "\(runtimeSettingsDirectory)/\(name.rawValue).nspawn" }
    static func dropInDirectory(_ name: MachineName) -> String { "/etc/systemd/system/\(name.serviceUnit).d" }
    static func flavorPath(_ name: MachineName) -> String { "\(dropInDirectory(name))/50-flavor.conf" }
    /// Where SetUnitProperties(runtime) keeps the live copies of a flavor's limits.
    static func controlDropIns(_ name: MachineName) -> [String] {
        ["MemoryMax", "CPUQuota", "CPUQuotaPerSecUSec", "TasksMax", "IOWeight"].map {
            "/run/systemd/system.control/\(name.serviceUnit).d/50-\($0).conf"
        }
    }
}
