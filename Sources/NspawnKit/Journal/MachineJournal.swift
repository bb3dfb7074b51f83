import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Finds a machine's own journal files without trusting its tree: directories resolve inside
/// its root (openat2 RESOLVE_IN_ROOT) and files open without following a symlink, so a guest
/// whose /var/log/journal points at a host path shows only its own files.
enum MachineJournal {
    struct Located: Sendable {
        var files: [FileDescriptor]
        /// With `--boot`: when the machine's current (or last) run began, µs since the epoch.
        var bootFloor: UInt64?
    }

    /// More files than any journal keeps; a guest cannot make us hold thousands of descriptors.
    static let fileLimit = 512

    static func locate(_ name: MachineName, bus: BusConnection, boot: Bool) throws(NspawnError) -> Located {
        let machined = Machined(bus: bus)
        let machinePath = try machined.machinePathIfRunning(name)
        let machine = try machinePath.map { path throws(NspawnError) in try machined.machinePropertiesIfRunning(name, path: path) } ?? nil
        var root = machine.flatMap { leaderRoot(name, $0) }
        if machine == nil || root == nil {
            let imagePath = try machined.imagePathIfExists(name)
            let image = try imagePath.map { path throws(NspawnError) in try machined.imagePropertiesIfExists(name, path: path) } ?? nil
            if machine == nil && image == nil { throw .noSuchImage(name.rawValue) }
            if root == nil, let image, image.type == "directory" || image.type == "subvolume", let path = image.path {
                root = try? Directory(path: path)
            }
        }
        var ids: [String] = []
        if let id = machine?.id { ids.append(id) }
        if let root, let id = guestMachineID(root), !ids.contains(id) { ids.append(id) }
        let files = journalFiles(root: root, linkedIDs: ids)
        var floor: UInt64?
        if boot {
            if let started = machine?.timestamp, started > 0 {
                floor = started
            } else {
                let unit = try? SystemdManager(bus: bus).unitProperties(name.serviceUnit, interface: "org.freedesktop.systemd1.Unit")
                let started = unit?["InactiveExitTimestamp"]?.uint64 ?? 0
                // Never started since the host booted: only a start from now on is its current run.
                floor = started > 0 ? started : LogTime.now()
            }
        }
        return Located(files: files, bootFloor: floor)
    }

    /// The running machine's root as its leader sees it, if the leader is the machine's.
    private static func leaderRoot(_ name: MachineName, _ properties: MachineProperties) -> Directory? {
        guard let leader = try? MachineProbe.Leader(MachineProbe.Request(name: name.rawValue, properties: properties)),
              let root = try? Directory(FileDescriptor.opening { open("/proc/\(leader.pid)/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }),
              leader.isAlive else { return nil }
        return root
    }

    private static func guestMachineID(_ root: Directory) -> String? {
        guard let bytes = try? ContainedRoot(root: root).read("/etc/machine-id", limit: 4096) else { return nil }
        return machineID(String(decoding: bytes, as: UTF8.self).trimmedWhitespace)
    }

    static func machineID(_ text: String) -> String? {
        text.count == 32 && text.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) && text != String(repeating: "0", count: 32) ? text : nil
    }

    static let hostMachineID: String? = {
        guard let directory = try? Directory(path: "/etc"), let fd = try? directory.openFileBeneath("machine-id") else { return nil }
        defer { try? fd.close() }
        return (try? fd.readAll(limit: 4096)).flatMap { machineID(String(decoding: $0, as: UTF8.self).trimmedWhitespace) }
    }()

    /// Every journal file of the guest: /var/log/journal/ID and /run/log/journal/ID in its root
    /// for any machine ID, and the host's /var/log/journal/ID for its own IDs when that is a real
    /// directory (nspawn's --link-journal=host). Each file once, however it was reached.
    static func journalFiles(root: Directory?, linkedIDs: [String]) -> [FileDescriptor] {
        var directories: [Directory] = []
        if let root {
            let contained = ContainedRoot(root: root)
            for base in ["/var/log/journal", "/run/log/journal"] {
                guard let top = try? contained.openDirectory(base), let names = try? top.entries() else { continue }
                for name in names.sorted() where machineID(name) != nil {
                    if let directory = try? top.openDirectory(name) { directories.append(directory) }
                }
            }
        }
        if let hostLog = try? Directory(path: "/var/log/journal") {
            for id in linkedIDs where id != hostMachineID {
                if let directory = try? hostLog.openDirectory(id) { directories.append(directory) }
            }
        }
        var seen = Set<[UInt64]>()
        var files: [FileDescriptor] = []
        for directory in directories {
            for name in ((try? directory.entries()) ?? []).sorted() where name.hasSuffix(".journal") || name.hasSuffix(".journal~") {
                guard files.count < fileLimit, let file = try? directory.openRegularFile(name) else { continue }
                guard let st = try? file.status(), seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else {
                    try? file.close()
                    continue
                }
                files.append(file)
            }
        }
        return files
    }
}
