import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    // MARK: - Disk limits (a flavor's DiskMax=)

    /// Moves the image of `name` from the disk limit `old` to `new` (nil: none). Nothing to do
    /// when neither has one, so flavors without DiskMax= work on every file system.
    static func changeDiskLimit(from old: UInt64?, to new: UInt64?, of name: MachineName, bus: BusConnection) throws(NspawnError) {
        guard old != nil || new != nil, old != new else { return }
        try setDiskLimit(new, of: name, bus: bus)
    }

    /// Holds the image of `name` to `bytes`, or lifts its limit (nil): machined's SetImageLimit
    /// on a btrfs subvolume, a project quota on XFS or ext4. Anywhere else, or below what the
    /// image holds now, a limit is refused, naming the file system; lifting one is then a no-op.
    static func setDiskLimit(_ bytes: UInt64?, of name: MachineName, bus: BusConnection) throws(NspawnError) {
        let machined = Machined(bus: bus)
        let objectPath = try machined.imagePath(name)
        let properties = try machined.imageProperties(name, path: objectPath)
        guard let path = properties.path, properties.type == "directory" || properties.type == "subvolume" else {
            guard bytes != nil else { return }
            throw .diskLimit(name.rawValue, reason: "its image is a \(properties.type ?? "unknown") image; disk limits hold directory and subvolume images")
        }
        let store = AtomicFile.split(path).parent
        let root = try openImageRoot(path, name: name)
        let fileSystem: DiskLimit.FileSystem
        do throws(Errno) { fileSystem = try DiskLimit.fileSystem(of: root) } catch {
            throw .system("cannot read the file system of '\(path)'", error)
        }
        switch fileSystem {
        case .btrfs:
            guard properties.type == "subvolume" else {
                guard bytes != nil else { return }
                throw .diskLimit(name.rawValue, reason: "its image '\(path)' is a plain directory on btrfs, which limits subvolumes only; 'nspawnctl create NEW --image \(name)' makes a copy that is one")
            }
            // Quota groups count what is committed: sync first, or a fresh write goes unseen.
            func committedUsage() throws(NspawnError) -> UInt64? {
                _ = nspawnctl_syncfs(root.descriptor.rawValue)
                return knownSize(try machined.imageProperties(name, path: objectPath).usage)
            }
            if let bytes, let used = try committedUsage(), used > bytes { throw belowUsage(name, limit: bytes, used: used) }
            do {
                try machined.setImageLimit(name, bytes: bytes ?? .max)
            } catch .bus(let cause, _) where cause.name == "System.Error.ENOTCONN" {
                guard bytes != nil else { return }
                throw .diskLimit(name.rawValue, reason: "quota groups are off on the btrfs file system of '\(store)'; 'btrfs quota enable \(store)' turns them on")
            } catch .bus(let cause, _) where cause.name == "System.Error.EDQUOT" {
                // The image grew between our look and machined's.
                guard let bytes, let used = try committedUsage() else { throw .diskLimit(name.rawValue, reason: cause.message) }
                throw belowUsage(name, limit: bytes, used: used)
            }
        case .xfs, .ext4:
            if let problem = DiskLimit.projectQuotaProblem(root) {
                guard bytes != nil else { return }
                let ext4 = fileSystem == .ext4 ? " (ext4 also needs 'tune2fs -O project,quota' while unmounted)" : ""
                throw .diskLimit(name.rawValue, reason: "'\(store)' is \(fileSystem.name) and \(problem); mount it with the prjquota option\(ext4)")
            }
            try setProjectLimit(bytes, of: name, root: root, path: path)
        case .other(let fileSystemName):
            guard bytes != nil else { return }
            throw .diskLimit(name.rawValue, reason: "'\(store)' is on \(fileSystemName), which cannot limit one directory's space; disk limits need btrfs (quota groups), or xfs or ext4 with project quotas")
        }
    }

    private static func setProjectLimit(_ bytes: UInt64?, of name: MachineName, root: Directory, path: String) throws(NspawnError) {
        func quota<T>(_ body: () throws(Errno) -> T) throws(NspawnError) -> T {
            do throws(Errno) { return try body() } catch { throw .system("cannot set the project quota of '\(path)'", error) }
        }
        var project = try quota { () throws(Errno) in try DiskLimit.project(of: root) }
        guard let bytes else {
            if DiskLimit.projectRange.contains(project) {
                try quota { () throws(Errno) in try DiskLimit.setProjectQuota(project, limit: 0, on: root) }
            }
            return
        }
        if !DiskLimit.projectRange.contains(project) {
            guard let free = try quota({ () throws(Errno) in try DiskLimit.freeProject(seed: name.rawValue, on: root) }) else {
                throw .diskLimit(name.rawValue, reason: "no free project quota ID is left in \(DiskLimit.projectRange)")
            }
            project = free
            try DiskLimit.assignProject(project, to: root)
        }
        let chosen = project
        if let used = try quota({ () throws(Errno) in try DiskLimit.projectQuota(chosen, on: root) })?.used, used > bytes {
            throw belowUsage(name, limit: bytes, used: used)
        }
        try quota { () throws(Errno) in try DiskLimit.setProjectQuota(chosen, limit: bytes, on: root) }
    }

    private static func belowUsage(_ name: MachineName, limit: UInt64, used: UInt64) -> NspawnError {
        .diskLimit(name.rawValue, reason: "its image holds \(used) bytes (\(humanSize(used))), more than the limit of \(limit) bytes (\(humanSize(limit)))")
    }

    /// The flavor's disk limit, put back on a root that rebuild or a snapshot restore swapped in.
    static func reapplyDiskLimit(of name: MachineName, bus: BusConnection) throws(NspawnError) {
        guard let limit = try flavorInForce(of: name)?.diskMax else { return }
        do {
            try setDiskLimit(limit, of: name, bus: bus)
        } catch {
            throw .failed("the new root of machine '\(name)' is in place, but its disk limit is not: \(error.description)")
        }
    }

    /// The project ID holding the image of `name` to a limit, with a directory on its file system
    /// that outlives the image; nil for any image without one (btrfs quota groups go with the
    /// subvolume).
    static func projectQuota(of name: MachineName, machined: Machined) -> (id: UInt32, fileSystem: Directory)? {
        guard let objectPath = try? machined.imagePath(name),
              let path = try? machined.imageProperties(name, path: objectPath).path,
              let root = try? openImageRoot(path, name: name),
              let fileSystem = try? DiskLimit.fileSystem(of: root), fileSystem == .xfs || fileSystem == .ext4,
              let id = try? DiskLimit.project(of: root), DiskLimit.projectRange.contains(id),
              let store = try? Directory(path: AtomicFile.split(path).parent) else { return nil }
        return (id, store)
    }

    /// Use against the limit, where the file system counts per machine; nil elsewhere.
    static func diskUsage(of name: MachineName, image properties: ImageProperties) -> DiskUsage? {
        guard let path = properties.path, let root = try? openImageRoot(path, name: name),
              let fileSystem = try? DiskLimit.fileSystem(of: root) else { return nil }
        switch fileSystem {
        case .btrfs where properties.type == "subvolume":
            // machined says UINT64_MAX for both while quota groups are off.
            guard let used = knownSize(properties.usage) else { return nil }
            return DiskUsage(used: used, limit: knownSize(properties.limit), method: .btrfsQuotaGroup)
        case .xfs, .ext4:
            guard let project = try? DiskLimit.project(of: root), DiskLimit.projectRange.contains(project),
                  let quota = try? DiskLimit.projectQuota(project, on: root) else { return nil }
            return DiskUsage(used: quota.used, limit: quota.limit, method: .projectQuota)
        default:
            return nil
        }
    }
}

/// 1.5G, 512.0M, 12K: base 1024, as systemd prints sizes.
public func humanSize(_ bytes: UInt64) -> String {
    let units = ["B", "K", "M", "G", "T", "P", "E"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes)B" }
    let tenths = (value * 10).rounded() / 10
    return tenths >= 100 ? "\(Int(tenths.rounded()))\(units[unit])" : "\(tenths)\(units[unit])"
}
