import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Copies a file or a whole tree between directories, keeping what a root file system needs:
/// modes, owners (optionally shifted for a user-namespaced machine), timestamps, extended
/// attributes (user, trusted, security, POSIX ACLs), symlinks as links, hardlinks within the
/// tree as hardlinks, device nodes, fifos and sockets.
///
/// The walk never follows a symlink: every step is an `openat` with `O_NOFOLLOW` relative to
/// the directory above it, so a link swapped in while copying cannot lead outside either tree.
/// A directory's own metadata is applied after its contents, so its mtime is the source's.
/// Like `cp -x`, it stays on the source's file system: a directory on another one (a mount
/// point, a nested btrfs subvolume) is copied empty, so a copy of "/" never reads /proc.
/// The destination must not exist; on a failure the caller removes what was made (it is
/// always below the one destination name).
package struct TreeCopier: Sendable {
    /// How a regular file's bytes were copied.
    package enum DataMethod: String, Sendable, Codable, Comparable, CaseIterable {
        /// FICLONE: the file shares the source's extents until either changes (btrfs, XFS).
        case reflink
        /// copy_file_range: the kernel copies, maybe offloaded to the file system or server.
        case copyFileRange = "copy_file_range"
        /// sendfile: the kernel copies between two file systems, no buffer in between.
        case sendfile
        /// Plain read and write through a buffer.
        case readWrite = "read_write"

        package static func < (lhs: Self, rhs: Self) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }
    }

    /// Moves owners between the host's ids and a user-namespaced machine's: nspawn without
    /// idmapped mounts chowns a machine's tree to `base ..< base + 65536`.
    package struct IDShift: Sendable, Equatable {
        /// nspawn gives each machine 65536 ids.
        package static let rangeSize: UInt32 = 65536
        /// The guest's "nobody", what ids outside the range become.
        package static let overflowID: UInt32 = 65534

        package enum Direction: Sendable, Equatable {
            /// Guest ids to host ids: add the base (copying into the machine).
            case intoMachine
            /// Host ids to guest ids: subtract the base (copying out of the machine).
            case outOfMachine
        }

        package var uidBase: UInt32
        package var gidBase: UInt32
        package var direction: Direction

        package init(uidBase: UInt32, gidBase: UInt32, direction: Direction) {
            self.uidBase = uidBase
            self.gidBase = gidBase
            self.direction = direction
        }

        package func uid(_ id: UInt32) -> UInt32 { map(id, base: uidBase) }
        package func gid(_ id: UInt32) -> UInt32 { map(id, base: gidBase) }

        /// An id the guest cannot have (outside its range) becomes its nobody, as the kernel shows it.
        private func map(_ id: UInt32, base: UInt32) -> UInt32 {
            switch direction {
            case .intoMachine:
                return base + (id < Self.rangeSize ? id : Self.overflowID)
            case .outOfMachine:
                return id >= base && id - base < Self.rangeSize ? id - base : Self.overflowID
            }
        }
    }

    /// What a copy did.
    package struct Summary: Sendable, Equatable, Codable {
        package var directories = 0
        package var files = 0
        package var symlinks = 0
        package var hardlinks = 0
        /// Device nodes, fifos and sockets.
        package var specialFiles = 0
        /// Directories left empty because another file system is mounted there.
        package var mountPoints = 0
        /// Bytes of regular file data (each hardlinked file once).
        package var bytes: UInt64 = 0
        /// How many files with data each method copied.
        package var filesByMethod: [String: Int] = [:]

        package init() {}

        /// The slowest method any file needed (nil when no file had data): a tree is only as
        /// cheap as its least shared file.
        package var method: DataMethod? {
            filesByMethod.keys.compactMap(DataMethod.init(rawValue:)).max()
        }
    }

    /// Owners on the copy: as in the source (shifted if `idShift` is set), or left to whoever copies.
    package var keepOwners = true
    package var idShift: IDShift?
    /// Try FICLONE before copying bytes.
    package var reflink = true
    /// Let the kernel copy (copy_file_range, sendfile) before reading and writing through a buffer.
    package var kernelCopy = true
    /// Copy directories on another file system than the source's top as empty directories.
    package var oneFileSystem = true

    package init(keepOwners: Bool = true, idShift: IDShift? = nil, reflink: Bool = true, kernelCopy: Bool = true,
                 oneFileSystem: Bool = true) {
        self.keepOwners = keepOwners
        self.idShift = idShift
        self.reflink = reflink
        self.kernelCopy = kernelCopy
        self.oneFileSystem = oneFileSystem
    }

    /// Copies the entry `name` of `source` (a file, a symlink — as a link — or a tree) to the new
    /// entry `destinationName` of `destination`. The labels name both sides in error messages.
    package func copy(_ name: String, in source: Directory, to destinationName: String, in destination: Directory,
                      sourceLabel: String, destinationLabel: String) throws(NspawnError) -> Summary {
        let walk = Walk(options: self, destinationTop: destination, destinationTopName: destinationName)
        try walk.copyEntry(name, in: source, to: destinationName, in: destination,
                           sourcePath: sourceLabel, destinationPath: destinationLabel, relative: [destinationName])
        return walk.summary
    }

    /// Copies the open directory `source` (a root, say) to the new directory `destinationName`.
    package func copyDirectory(_ source: Directory, to destinationName: String, in destination: Directory,
                               sourceLabel: String, destinationLabel: String) throws(NspawnError) -> Summary {
        let walk = Walk(options: self, destinationTop: destination, destinationTopName: destinationName)
        let st: stat
        do throws(Errno) { st = try source.descriptor.status() } catch { throw .system("cannot read '\(sourceLabel)'", error) }
        guard st.fileType == S_IFDIR else { throw .system("cannot copy '\(sourceLabel)'", .notDirectory) }
        try walk.copyDirectory(source, status: st, to: destinationName, in: destination,
                               sourcePath: sourceLabel, destinationPath: destinationLabel, relative: [destinationName])
        return walk.summary
    }
}

extension stat {
    var fileType: mode_t { st_mode & S_IFMT }
}

/// One copy's state: the hardlinks seen so far and the running summary.
final class Walk {
    let options: TreeCopier
    let destinationTop: Directory
    let destinationTopName: String
    var summary = TreeCopier.Summary()
    /// Source (device, inode) of a file with more than one link -> where its copy is, relative
    /// to `destinationTop`, and the copy's inode (checked before linking to it).
    var linked: [FileIdentity: (path: [String], inode: ino_t)] = [:]
    /// The source's file system, set by the first entry copied.
    var sourceDevice: dev_t?
    /// Methods that failed as unsupported: within one copy both file systems stay the same
    /// (`oneFileSystem`), so they are not tried again for every file.
    var unsupported: Set<TreeCopier.DataMethod> = []

    struct FileIdentity: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    init(options: TreeCopier, destinationTop: Directory, destinationTopName: String) {
        self.options = options
        self.destinationTop = destinationTop
        self.destinationTopName = destinationTopName
    }

    func copyEntry(_ name: String, in source: Directory, to destinationName: String, in destination: Directory,
                   sourcePath: String, destinationPath: String, relative: [String]) throws(NspawnError) {
        let st: stat
        do throws(Errno) {
            guard let found = try source.status(name) else { throw Errno.noSuchFileOrDirectory }
            st = found
        } catch {
            throw .system("cannot read '\(sourcePath)'", error)
        }
        if sourceDevice == nil { sourceDevice = st.st_dev }
        if st.fileType == S_IFDIR {
            let directory: Directory
            do throws(Errno) { directory = try source.openDirectory(name) } catch { throw .system("cannot open '\(sourcePath)'", error) }
            let opened: stat
            do throws(Errno) { opened = try directory.descriptor.status() } catch { throw .system("cannot read '\(sourcePath)'", error) }
            // Swapped between the lstat and the open: copy what was opened, it is still below `source`.
            return try copyDirectory(directory, status: opened, to: destinationName, in: destination,
                                     sourcePath: sourcePath, destinationPath: destinationPath, relative: relative)
        }
        if st.st_nlink > 1, let first = linked[FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))] {
            try link(to: first, as: destinationName, in: destination, destinationPath: destinationPath)
            summary.hardlinks += 1
            return
        }
        let inode: ino_t
        switch st.fileType {
        case S_IFREG:
            inode = try copyFile(name, in: source, status: st, to: destinationName, in: destination,
                                 sourcePath: sourcePath, destinationPath: destinationPath)
            summary.files += 1
        case S_IFLNK:
            inode = try copySymlink(name, in: source, status: st, to: destinationName, in: destination,
                                    sourcePath: sourcePath, destinationPath: destinationPath)
            summary.symlinks += 1
        case S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK:
            inode = try copySpecial(name, in: source, status: st, to: destinationName, in: destination,
                                    sourcePath: sourcePath, destinationPath: destinationPath)
            summary.specialFiles += 1
        default:
            throw .system("cannot copy '\(sourcePath)', a file of unknown type", .invalidArgument)
        }
        if st.st_nlink > 1 {
            linked[FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))] = (relative, inode)
        }
    }

    // MARK: Directories

    func copyDirectory(_ source: Directory, status st: stat, to destinationName: String, in destination: Directory,
                       sourcePath: String, destinationPath: String, relative: [String]) throws(NspawnError) {
        let created: Directory
        do throws(Errno) {
            // Private until its contents and metadata are in place. The top of a copied root on
            // btrfs is a subvolume, so a disk limit can hold it.
            if relative.count == 1 {
                try destination.makeSubvolumeOrDirectory(destinationName, mode: 0o700)
            } else {
                try destination.makeDirectory(destinationName, mode: 0o700)
            }
            created = try destination.openDirectory(destinationName)
        } catch {
            throw .system("cannot create directory '\(destinationPath)'", error)
        }
        summary.directories += 1
        if sourceDevice == nil { sourceDevice = st.st_dev }
        var names: [String] = []
        if options.oneFileSystem && st.st_dev != sourceDevice {
            summary.mountPoints += 1
        } else {
            do throws(Errno) { names = try source.entries().sorted() } catch { throw .system("cannot list '\(sourcePath)'", error) }
        }
        for name in names {
            try copyEntry(name, in: source, to: name, in: created,
                          sourcePath: sourcePath + "/" + name, destinationPath: destinationPath + "/" + name,
                          relative: relative + [name])
        }
        try applyMetadata(from: source.descriptor, status: st, to: created.descriptor, sourcePath: sourcePath, destinationPath: destinationPath)
    }

    // MARK: Symlinks and special files

    func copySymlink(_ name: String, in source: Directory, status st: stat, to destinationName: String, in destination: Directory,
                     sourcePath: String, destinationPath: String) throws(NspawnError) -> ino_t {
        let target: String
        do throws(Errno) { target = try readLink(name, in: source) } catch { throw .system("cannot read symlink '\(sourcePath)'", error) }
        do throws(Errno) { try destination.makeSymlink(destinationName, to: target) } catch {
            throw .system("cannot create symlink '\(destinationPath)'", error)
        }
        return try applyNodeMetadata(name, in: source, status: st, to: destinationName, in: destination,
                                     sourcePath: sourcePath, destinationPath: destinationPath)
    }

    func copySpecial(_ name: String, in source: Directory, status st: stat, to destinationName: String, in destination: Directory,
                     sourcePath: String, destinationPath: String) throws(NspawnError) -> ino_t {
        if mknodat(destination.descriptor.rawValue, destinationName, st.fileType | 0o600, st.st_rdev) != 0 {
            throw .system("cannot create '\(destinationPath)'", .last)
        }
        return try applyNodeMetadata(name, in: source, status: st, to: destinationName, in: destination,
                                     sourcePath: sourcePath, destinationPath: destinationPath)
    }

    private func readLink(_ name: String, in directory: Directory) throws(Errno) -> String {
        var size = 256
        while true {
            var buffer = [CChar](repeating: 0, count: size)
            let count = readlinkat(directory.descriptor.rawValue, name, &buffer, size)
            if count < 0 { throw Errno.last }
            if count < size { return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            size *= 2
        }
    }

    /// Metadata of a node that is never opened for reading (a symlink, a device, a fifo): both
    /// sides are held by O_PATH descriptors, and only the calls that do not follow links touch them.
    private func applyNodeMetadata(_ name: String, in source: Directory, status st: stat, to destinationName: String,
                                   in destination: Directory, sourcePath: String, destinationPath: String) throws(NspawnError) -> ino_t {
        let sourceNode: FileDescriptor
        let node: FileDescriptor
        let sourceFD = source.descriptor.rawValue
        let destinationFD = destination.descriptor.rawValue
        do throws(Errno) {
            sourceNode = try FileDescriptor.opening { openat(sourceFD, name, nspawnctl_o_path | O_NOFOLLOW | O_CLOEXEC) }
        } catch { throw .system("cannot open '\(sourcePath)'", error) }
        defer { try? sourceNode.close() }
        do throws(Errno) {
            node = try FileDescriptor.opening { openat(destinationFD, destinationName, nspawnctl_o_path | O_NOFOLLOW | O_CLOEXEC) }
        } catch { throw .system("cannot open '\(destinationPath)'", error) }
        defer { try? node.close() }
        let created: stat
        do throws(Errno) { created = try node.status() } catch { throw .system("cannot read '\(destinationPath)'", error) }
        guard created.fileType == st.fileType else {
            throw .system("cannot copy to '\(destinationPath)': it changed while being copied", .resourceBusy)
        }
        if options.keepOwners {
            let (uid, gid) = owner(of: st)
            if fchownat(node.rawValue, "", uid, gid, nspawnctl_at_empty_path | AT_SYMLINK_NOFOLLOW) != 0 {
                throw .system("cannot set the owner of '\(destinationPath)'", .last)
            }
        }
        if st.fileType != S_IFLNK {
            // glibc's fchmodat with AT_SYMLINK_NOFOLLOW goes through the O_PATH descriptor, never a link.
            if fchmodat(destinationFD, destinationName, st.st_mode & 0o7777, AT_SYMLINK_NOFOLLOW) != 0 {
                throw .system("cannot set the mode of '\(destinationPath)'", .last)
            }
        }
        try copyExtendedAttributes(from: .procPath(sourceNode), to: .procPath(node), sourcePath: sourcePath, destinationPath: destinationPath)
        var times = [st.st_atim, st.st_mtim]
        if utimensat(destinationFD, destinationName, &times, AT_SYMLINK_NOFOLLOW) != 0 {
            throw .system("cannot set the times of '\(destinationPath)'", .last)
        }
        return created.st_ino
    }

    // MARK: Hardlinks

    /// Links `destinationName` to the copy made earlier, found again without following links,
    /// and checked to be that same copy.
    private func link(to first: (path: [String], inode: ino_t), as destinationName: String, in destination: Directory,
                      destinationPath: String) throws(NspawnError) {
        let topFD = destinationTop.descriptor.rawValue
        let parentPath = first.path.dropLast().joined(separator: "/")
        let name = first.path.last!
        do throws(Errno) {
            let parent = try FileDescriptor.opening {
                nspawnctl_openat2(topFD, parentPath.isEmpty ? "." : parentPath, UInt64(nspawnctl_o_path | O_DIRECTORY | O_CLOEXEC), 0,
                                  nspawnctl_resolve_beneath | nspawnctl_resolve_no_symlinks | nspawnctl_resolve_no_xdev)
            }
            defer { try? parent.close() }
            if linkat(parent.rawValue, name, destination.descriptor.rawValue, destinationName, 0) != 0 { throw Errno.last }
            guard let made = try destination.status(destinationName), made.st_ino == first.inode else {
                try? destination.removeFile(destinationName)
                throw Errno.resourceBusy
            }
        } catch {
            throw .system("cannot create hardlink '\(destinationPath)' to '\(first.path.joined(separator: "/"))'", error)
        }
    }

    // MARK: Metadata

    private func owner(of st: stat) -> (uid_t, gid_t) {
        guard let shift = options.idShift else { return (st.st_uid, st.st_gid) }
        return (shift.uid(st.st_uid), shift.gid(st.st_gid))
    }

    /// Owner, mode, extended attributes and times, in the order that keeps each: chown clears
    /// set-id bits and file capabilities, so it goes first; times go last.
    func applyMetadata(from source: FileDescriptor, status st: stat, to destination: FileDescriptor,
                               sourcePath: String, destinationPath: String) throws(NspawnError) {
        if options.keepOwners {
            let (uid, gid) = owner(of: st)
            if fchown(destination.rawValue, uid, gid) != 0 { throw .system("cannot set the owner of '\(destinationPath)'", .last) }
        }
        if fchmod(destination.rawValue, st.st_mode & 0o7777) != 0 { throw .system("cannot set the mode of '\(destinationPath)'", .last) }
        try copyExtendedAttributes(from: .descriptor(source), to: .descriptor(destination), sourcePath: sourcePath, destinationPath: destinationPath)
        var times = [st.st_atim, st.st_mtim]
        if futimens(destination.rawValue, &times) != 0 { throw .system("cannot set the times of '\(destinationPath)'", .last) }
    }
}
