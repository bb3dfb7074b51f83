import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension String {
    package var trimmedWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}

/// An open directory, used as the anchor for every *at() call so no path is resolved twice.
package final class Directory {
    package let descriptor: FileDescriptor
    /// For the *at() calls.
    private var fd: Int32 { descriptor.rawValue }

    package init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    /// Opens a directory without following a symlink at its last component.
    package convenience init(path: String) throws(Errno) {
        try self.init(FileDescriptor.opening { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) })
    }

    deinit { try? descriptor.close() }

    package func openDirectory(_ name: String) throws(Errno) -> Directory {
        let fd = fd
        return Directory(try FileDescriptor.opening { openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) })
    }

    /// The regular file `name` for reading; a symlink, FIFO or device there is refused.
    package func openRegularFile(_ name: String) throws(Errno) -> FileDescriptor {
        let fd = fd
        let file = try FileDescriptor.opening { openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) }
        guard let st = try? file.status(), (st.st_mode & S_IFMT) == S_IFREG else {
            try? file.close()
            throw Errno.invalidArgument
        }
        return file
    }

    /// The directory at the relative `path` below this one, reached through real directories only:
    /// a symlink anywhere on the way (or `..` out) is ELOOP or EXDEV, never followed.
    package func openDirectoryBeneath(_ path: String) throws(Errno) -> Directory {
        let fd = fd
        return Directory(try FileDescriptor.opening {
            nspawnctl_openat2(fd, path.isEmpty ? "." : path, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0,
                              nspawnctl_resolve_beneath | nspawnctl_resolve_no_symlinks | nspawnctl_resolve_no_magiclinks)
        })
    }

    /// The file at the relative `path` below this one, opened for reading the same way.
    package func openFileBeneath(_ path: String) throws(Errno) -> FileDescriptor {
        let fd = fd
        return try FileDescriptor.opening {
            nspawnctl_openat2(fd, path, UInt64(O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC), 0,
                              nspawnctl_resolve_beneath | nspawnctl_resolve_no_symlinks | nspawnctl_resolve_no_magiclinks)
        }
    }

    package func setMode(_ mode: mode_t) throws(Errno) {
        if fchmod(fd, mode) != 0 { throw Errno.last }
    }

    /// Makes renames and removals of entries last through a crash.
    package func sync() throws(Errno) {
        if fsync(fd) != 0 { throw Errno.last }
    }

    /// Removes the file or symlink `name` (never a directory); one that is already gone is fine.
    package func removeFile(_ name: String) throws(Errno) {
        if unlinkat(fd, name, 0) != 0 && errno != ENOENT { throw Errno.last }
    }

    package func makeDirectory(_ name: String, mode: mode_t) throws(Errno) {
        if mkdirat(fd, name, mode) != 0 { throw Errno.last }
    }

    /// On btrfs a subvolume, as machined makes a machine's root there, so it can carry its own
    /// quota group and be snapshotted; elsewhere (or where btrfs refuses) a directory.
    package func makeSubvolumeOrDirectory(_ name: String, mode: mode_t) throws(Errno) {
        if nspawnctl_fs_type(fd) == nspawnctl_btrfs_magic && nspawnctl_btrfs_subvolume_create(fd, name) == 0 {
            let child = try openDirectory(name)
            return try child.setMode(mode)
        }
        try makeDirectory(name, mode: mode)
    }

    package func makeSymlink(_ name: String, to target: String) throws(Errno) {
        if symlinkat(target, fd, name) != 0 { throw Errno.last }
    }

    /// stat of what an entry leads to (a symlink followed); nil when that does not exist.
    package func statusFollowingLinks(_ name: String) throws(Errno) -> stat? {
        var st = stat()
        if fstatat(fd, name, &st, 0) == 0 { return st }
        if errno == ENOENT { return nil }
        throw Errno.last
    }

    /// lstat of an entry; nil when it does not exist.
    package func status(_ name: String) throws(Errno) -> stat? {
        var st = stat()
        if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { return st }
        if errno == ENOENT { return nil }
        throw Errno.last
    }

    package func rename(_ name: String, to newName: String, in target: Directory? = nil) throws(Errno) {
        if renameat(fd, name, (target ?? self).fd, newName) != 0 { throw Errno.last }
    }

    /// Swaps two entries atomically (renameat2 RENAME_EXCHANGE).
    package func exchange(_ name: String, with other: String) throws(Errno) {
        if nspawnctl_renameat2(fd, name, fd, other, nspawnctl_rename_exchange) != 0 { throw Errno.last }
    }

    /// Renames only if `newName` does not exist (renameat2 RENAME_NOREPLACE).
    package func renameNoReplace(_ name: String, to newName: String) throws(Errno) {
        if nspawnctl_renameat2(fd, name, fd, newName, nspawnctl_rename_noreplace) != 0 { throw Errno.last }
    }

    /// Names in the directory, without "." and "..".
    package func entries() throws(Errno) -> [String] {
        // The stream takes over a duplicate; ours stays open for the *at() calls.
        let copy = try descriptor.closeOnExecDuplicate()
        guard let stream = fdopendir(copy.rawValue) else {
            let cause = Errno.last
            try? copy.close()
            throw cause
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes `name` and everything below it. Never follows a symlink and never descends into
    /// another file system, so a stray bind mount below an image cannot take host data with it.
    package func removeTree(_ name: String) throws(Errno) {
        guard let st = try status(name) else { return }
        if (st.st_mode & S_IFMT) != S_IFDIR { return try removeFile(name) }
        var own = stat()
        if fstat(fd, &own) != 0 { throw Errno.last }
        guard st.st_dev == own.st_dev else { throw Errno.improperLink }
        let child = try openDirectory(name)
        for entry in try child.entries() { try child.removeTree(entry) }
        if unlinkat(fd, name, AT_REMOVEDIR) != 0 && errno != ENOENT { throw Errno.last }
    }

    /// Replaces (or creates) the file `name` so no reader sees it half written: the bytes go to a
    /// temporary file here, which is synced and renamed over `name`. A failure leaves `name` as it
    /// was. The temporary's name carries our PID; with `removingStale`, temporaries of `name` whose
    /// writer is gone (a kill -9 between create and rename) are removed first.
    package func replaceFile(_ name: String, with bytes: [UInt8], mode: mode_t, owner: (uid_t, gid_t)? = nil,
                             removingStale: Bool = false) throws(Errno) {
        let fd = fd
        let prefix = ".#nspawnctl.\(name)."
        if removingStale {
            for entry in try entries() where entry.hasPrefix(prefix) {
                let fields = entry.dropFirst(prefix.count).split(separator: ".")
                guard fields.count == 2, let pid = pid_t(fields[0]), pid > 0, kill(pid, 0) != 0, errno == ESRCH else { continue }
                unlinkat(fd, entry, 0)
            }
        }
        let temporary = prefix + "\(getpid()).\(String(UInt32.random(in: .min ... .max), radix: 16))"
        let file = try FileDescriptor.opening { openat(fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode) }
        do throws(Errno) {
            defer { try? file.close() }
            try file.writeFully(bytes)
            // The umask may have narrowed the mode given to openat.
            if fchmod(file.rawValue, mode) != 0 { throw Errno.last }
            if let owner, fchown(file.rawValue, owner.0, owner.1) != 0 { throw Errno.last }
            if fsync(file.rawValue) != 0 { throw Errno.last }
            try rename(temporary, to: name)
        } catch {
            unlinkat(fd, temporary, 0)
            throw error
        }
    }

    /// Takes a BSD lock on `name` (created 0600 if missing); nil when someone else holds it.
    package func tryLock(_ name: String, shared: Bool = false) throws(Errno) -> FileLock? {
        let fd = fd
        let lock = FileLock(try FileDescriptor.opening { openat(fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600) })
        if flock(lock.descriptor.rawValue, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0 {
            let cause = Errno.last
            if cause == .wouldBlock { return nil }
            throw cause
        }
        return lock
    }
}

/// A held flock; released when dropped (and by the kernel if we die).
package final class FileLock {
    package let descriptor: FileDescriptor
    package init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }
    deinit { try? descriptor.close() }
}

/// File access inside an untrusted root: every path resolves as if the root were `/`
/// (openat2 RESOLVE_IN_ROOT), so a symlink such as `etc/pacman.conf -> /etc/shadow` stays inside.
package struct ContainedRoot {
    package let root: Directory

    package init(root: Directory) { self.root = root }

    private func open(_ path: String, flags: Int32, mode: mode_t = 0) throws(Errno) -> FileDescriptor {
        let rootFD = root.descriptor.rawValue
        return try FileDescriptor.opening {
            nspawnctl_openat2(rootFD, path, UInt64(flags | O_CLOEXEC), UInt64(mode),
                              nspawnctl_resolve_in_root | nspawnctl_resolve_no_magiclinks)
        }
    }

    /// The file's bytes, or nil when it does not exist.
    package func read(_ path: String, limit: Int = 4 * 1024 * 1024) throws(Errno) -> [UInt8]? {
        let fd: FileDescriptor
        do { fd = try open(path, flags: O_RDONLY | O_NOCTTY | O_NONBLOCK) } catch .noSuchFileOrDirectory { return nil }
        defer { try? fd.close() }
        let st = try fd.status()
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw Errno.invalidArgument }
        return try fd.readAll(limit: limit)
    }

    package func openDirectory(_ path: String) throws(Errno) -> Directory {
        Directory(try open(path, flags: O_RDONLY | O_DIRECTORY))
    }

    package func exists(_ path: String) -> Bool {
        guard let fd = try? open(path, flags: nspawnctl_o_path) else { return false }
        try? fd.close()
        return true
    }

    /// The directory holding `path` (resolved inside the root) and the last component.
    private func parent(of path: String) throws(Errno) -> (Directory, String) {
        let components = path.split(separator: "/")
        guard let base = components.last.map(String.init), base != "..", base != "." else { throw Errno.invalidArgument }
        let parent = components.dropLast().joined(separator: "/")
        return (Directory(try open(parent.isEmpty ? "/" : parent, flags: O_RDONLY | O_DIRECTORY)), base)
    }

    /// mkdir -p inside the root; every component resolves inside it.
    package func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(Errno) {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            if exists(current) { continue }
            let (directory, base) = try parent(of: current)
            try directory.makeDirectory(base, mode: mode)
        }
    }

    /// Creates or replaces the symlink `path` pointing at `target` (a path as the guest sees it).
    package func symlink(_ target: String, at path: String) throws(Errno) {
        let (directory, base) = try parent(of: path)
        if let existing = try directory.status(base) {
            guard (existing.st_mode & S_IFMT) == S_IFLNK else { throw Errno.fileExists }
            try directory.removeFile(base)
        }
        try directory.makeSymlink(base, to: target)
    }

    /// Removes a file or symlink (never a directory); one that is already gone is fine.
    package func remove(_ path: String) throws(Errno) {
        let directory: Directory
        let base: String
        do { (directory, base) = try parent(of: path) } catch .noSuchFileOrDirectory { return }
        try directory.removeFile(base)
    }

    /// Replaces the file atomically, keeping the mode and owner of the file it replaces.
    package func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(Errno) {
        let (directory, base) = try parent(of: path)
        var finalMode = mode
        var owner: (uid_t, gid_t)?
        if let existing = try directory.status(base), (existing.st_mode & S_IFMT) == S_IFREG {
            finalMode = existing.st_mode & 0o7777
            owner = (existing.st_uid, existing.st_gid)
        }
        try directory.replaceFile(base, with: bytes, mode: finalMode, owner: owner)
    }
}
