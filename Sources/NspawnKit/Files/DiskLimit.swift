import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// How a machine's image is held to its flavor's DiskMax=.
public enum DiskLimitMethod: String, Codable, Sendable, Equatable {
    /// machined's SetImageLimit: a btrfs quota group on the image's subvolume.
    case btrfsQuotaGroup = "btrfs-qgroup"
    /// A project quota on the image's tree (XFS, or ext4 with the project feature).
    case projectQuota = "project-quota"
}

/// A machine's disk use against its limit, as the file system counts it.
public struct DiskUsage: Codable, Sendable, Equatable {
    /// Bytes; nil when the file system does not say.
    public var used: UInt64?
    /// Bytes; nil when there is none.
    public var limit: UInt64?
    public var method: DiskLimitMethod

    public init(used: UInt64?, limit: UInt64?, method: DiskLimitMethod) {
        self.used = used
        self.limit = limit
        self.method = method
    }
}

/// The file-system half of disk limits: which file system holds an image, and project quotas
/// on XFS and ext4. (The btrfs half is machined's SetImageLimit.)
package enum DiskLimit {
    /// Below this a limit is more likely a typo than a wish (DiskMax=10 meaning 10G).
    package static let smallest: UInt64 = 1 << 20
    /// Project IDs nspawnctl hands out: 'N','S' in the high half, so an admin's own low IDs never clash.
    package static let projectRange: ClosedRange<UInt32> = 0x4E53_0000...0x4E53_FFFF

    package enum FileSystem: Equatable, Sendable {
        case btrfs, xfs, ext4
        case other(String)

        package init(magic: Int) {
            switch magic {
            case nspawnctl_btrfs_magic: self = .btrfs
            case nspawnctl_xfs_magic: self = .xfs
            case nspawnctl_ext4_magic: self = .ext4
            case nspawnctl_tmpfs_magic: self = .other("tmpfs")
            case nspawnctl_overlayfs_magic: self = .other("overlayfs")
            default: self = .other("a file system of type 0x" + String(UInt(bitPattern: magic), radix: 16))
            }
        }

        package var name: String {
            switch self {
            case .btrfs: "btrfs"
            case .xfs: "xfs"
            case .ext4: "ext4"
            case .other(let name): name
            }
        }
    }

    package static func fileSystem(of directory: Directory) throws(Errno) -> FileSystem {
        let magic = nspawnctl_fs_type(directory.descriptor.rawValue)
        guard magic != -1 else { throw Errno.last }
        return FileSystem(magic: magic)
    }

    /// nil when project quotas are accounted and enforced on the file system of `directory`,
    /// else what is missing.
    package static func projectQuotaProblem(_ directory: Directory) -> String? {
        var accounted: Int32 = 0
        var enforced: Int32 = 0
        guard nspawnctl_project_quota_state(directory.descriptor.rawValue, &accounted, &enforced) == 0 else {
            return "project quotas are off (\(Errno.last))"
        }
        if accounted == 0 { return "project quotas are off" }
        if enforced == 0 { return "project quotas are counted but not enforced" }
        return nil
    }

    package static func project(of directory: Directory) throws(Errno) -> UInt32 {
        var project: UInt32 = 0
        guard nspawnctl_get_project(directory.descriptor.rawValue, &project) == 0 else { throw Errno.last }
        return project
    }

    package static func projectQuota(_ project: UInt32, on directory: Directory) throws(Errno) -> (limit: UInt64?, used: UInt64, inodes: UInt64)? {
        var limit: UInt64 = 0, used: UInt64 = 0, inodes: UInt64 = 0
        guard nspawnctl_get_project_quota(directory.descriptor.rawValue, project, &limit, &used, &inodes) == 0 else {
            // XFS keeps no record of a project nothing ever used.
            if errno == ENOENT || errno == ESRCH { return nil }
            throw Errno.last
        }
        return (limit == 0 ? nil : limit, used, inodes)
    }

    /// 0 bytes removes the limit.
    package static func setProjectQuota(_ project: UInt32, limit: UInt64, on directory: Directory) throws(Errno) {
        guard nspawnctl_set_project_quota(directory.descriptor.rawValue, project, limit) == 0 else { throw Errno.last }
    }

    /// A project in `projectRange` that holds no file and has no limit, starting from one derived
    /// from `seed` so a machine tends to keep the same number.
    package static func freeProject(seed: String, on directory: Directory) throws(Errno) -> UInt32? {
        var hash: UInt32 = 2_166_136_261
        for byte in seed.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let size = UInt32(projectRange.count)
        for step in 0..<UInt32(256) {
            let project = projectRange.lowerBound + (hash &+ step) % size
            guard let quota = try projectQuota(project, on: directory) else { return project }
            if quota.inodes == 0 && quota.limit == nil { return project }
        }
        return nil
    }

    /// Puts every directory and regular file of the tree in `project` (directories also pass it
    /// on to what is made in them). Symlinks and device nodes are never opened: their few bytes
    /// stay with the project they were made in. Stays on the tree's file system.
    package static func assignProject(_ project: UInt32, to tree: Directory) throws(NspawnError) {
        var own = stat()
        guard fstat(tree.descriptor.rawValue, &own) == 0 else { throw .system("cannot read the root of the tree", Errno.last) }
        try assign(project, to: tree, label: ".", device: own.st_dev)
    }

    private static func assign(_ project: UInt32, to directory: Directory, label: String, device: dev_t) throws(NspawnError) {
        guard nspawnctl_set_project(directory.descriptor.rawValue, project, 1) == 0 else {
            throw .system("cannot put '\(label)' in project \(project)", Errno.last)
        }
        let names: [String]
        do throws(Errno) { names = try directory.entries() } catch { throw .system("cannot list '\(label)'", error) }
        for name in names {
            let path = label == "." ? name : "\(label)/\(name)"
            let child: Directory
            do throws(Errno) {
                guard let st = try directory.status(name), st.st_dev == device else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    child = try directory.openDirectory(name)
                case S_IFREG:
                    let fd = directory.descriptor.rawValue
                    let file = try FileDescriptor.opening { openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
                    defer { try? file.close() }
                    if nspawnctl_set_project(file.rawValue, project, 0) != 0 { throw Errno.last }
                    continue
                default:
                    continue
                }
            } catch {
                throw .system("cannot put '\(path)' in project \(project)", error)
            }
            try assign(project, to: child, label: path, device: device)
        }
    }
}
