import CLinux
import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where a machine's snapshots live: `.#nspawnctl-snapshots/NAME/SNAP` beside the image, so a
/// btrfs snapshot or a reflink can share the root's extents, with a record `.SNAP.json` beside
/// each. machined lists every entry of /var/lib/machines whose name starts with a dot as a
/// hidden image (`machinectl list-images --all`), and `machinectl clean` removes hidden images;
/// it skips only `.#` names, which it keeps for work in progress.
package struct SnapshotStore {
    package static let directoryName = ".#nspawnctl-snapshots"

    package var machine: MachineName
    /// The directory holding the image (/var/lib/machines).
    package var imagesDirectory: String

    package init(machine: MachineName, imagePath: String) {
        self.init(machine: machine, imagesDirectory: AtomicFile.split(imagePath).parent)
    }

    package init(machine: MachineName, imagesDirectory: String) {
        self.machine = machine
        self.imagesDirectory = imagesDirectory
    }

    package var path: String { "\(imagesDirectory)/\(Self.directoryName)/\(machine)" }
    func path(of snapshot: String) -> String { "\(path)/\(snapshot)" }
    static func recordName(_ snapshot: String) -> String { ".\(snapshot).json" }

    /// This machine's snapshot directory; nil when it has none.
    func open() throws(NspawnError) -> Directory? {
        do throws(Errno) { return try Directory(path: path) } catch .noSuchFileOrDirectory { return nil } catch {
            throw .system("cannot open '\(path)'", error)
        }
    }

    func openOrCreate() throws(NspawnError) -> Directory {
        do throws(Errno) {
            try makeDirectories("\(imagesDirectory)/\(Self.directoryName)", mode: 0o700)
            try makeDirectories(path, mode: 0o700)
            return try Directory(path: path)
        } catch {
            throw .system("cannot create '\(path)'", error)
        }
    }

    private struct Record: Codable {
        var created: Date
        var method: SnapshotMethod
        var size: UInt64?
        var expires: Date?
        var scheduled: Bool?
    }

    /// Every snapshot, oldest first.
    package func list() throws(NspawnError) -> [SnapshotInfo] {
        guard let directory = try open() else { return [] }
        let names: [String]
        do throws(Errno) { names = try directory.entries() } catch { throw .system("cannot list '\(path)'", error) }
        var snapshots: [SnapshotInfo] = []
        for name in names where !name.hasPrefix(".") {
            guard let st = try? directory.status(name), st.fileType == S_IFDIR else { continue }
            snapshots.append(try info(name, status: st))
        }
        return snapshots.sorted { ($0.created ?? .distantPast, $0.name) < ($1.created ?? .distantPast, $1.name) }
    }

    /// One snapshot's record; without one (a crash right after it was made), what the inode tells.
    func info(_ name: String, status st: stat) throws(NspawnError) -> SnapshotInfo {
        let record = (try? AtomicFile.readBytes("\(path)/\(Self.recordName(name))", limit: 64 * 1024))
            .flatMap { $0 }.flatMap { try? WireJSON.decoder().decode(Record.self, from: Data($0)) }
        let method = record?.method ?? (st.st_ino == SnapshotStore.subvolumeInode ? .btrfs : .copy)
        let created = record?.created ?? Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec))
        return SnapshotInfo(name: name, created: created, method: method, size: record?.size, path: path(of: name),
                            expires: record?.expires, scheduled: record?.scheduled ?? false)
    }

    package func find(_ name: String) throws(NspawnError) -> (Directory, SnapshotInfo) {
        try SnapshotInfo.check(name)
        guard let directory = try open(), let st = try? directory.status(name), st.fileType == S_IFDIR else {
            throw NspawnError.noSuchSnapshot(machine: machine.rawValue, snapshot: name)
        }
        return (directory, try info(name, status: st))
    }

    func writeRecord(_ info: SnapshotInfo) throws(NspawnError) {
        let record = Record(created: info.created ?? Date(), method: info.method, size: info.size, expires: info.expires,
                            scheduled: info.scheduled ? true : nil)
        guard let data = try? WireJSON.encoder().encode(record) else { throw .failed("cannot encode the record of snapshot '\(info.name)'") }
        try AtomicFile.write("\(path)/\(Self.recordName(info.name))", String(decoding: data, as: UTF8.self) + "\n", mode: 0o600)
    }

    /// btrfs gives a subvolume's top directory this inode number.
    static let subvolumeInode: ino_t = 256

    package static func isSubvolume(_ directory: Directory) -> Bool {
        guard nspawnctl_fs_type(directory.descriptor.rawValue) == nspawnctl_btrfs_magic,
              let st = try? directory.descriptor.status() else { return false }
        return st.st_ino == subvolumeInode
    }

    /// Sets or clears FS_IMMUTABLE_FL, as machined marks a read-only directory image.
    static func setImmutable(_ directory: Directory, _ immutable: Bool) throws(Errno) {
        var flags: UInt32 = 0
        if nspawnctl_get_inode_flags(directory.descriptor.rawValue, &flags) != 0 { throw Errno.last }
        let wanted = immutable ? flags | nspawnctl_fs_immutable_fl : flags & ~nspawnctl_fs_immutable_fl
        if wanted != flags, nspawnctl_set_inode_flags(directory.descriptor.rawValue, wanted) != 0 { throw Errno.last }
    }

    /// Removes the tree or subvolume `name` in `parent`: read-only flags cleared first, renamed
    /// out of the way before the slow part, so no half-removed tree keeps its name.
    package static func removeTree(_ name: String, in parent: Directory, label: String) throws(NspawnError) {
        do throws(Errno) {
            let top = try parent.openDirectory(name)
            if isSubvolume(top) {
                if nspawnctl_btrfs_destroy(parent.descriptor.rawValue, name) == 0 { return }
                throw Errno.last
            }
            try? setImmutable(top, false)
            try parent.removeTree(name)
        } catch .noSuchFileOrDirectory {
            return
        } catch {
            throw .system("cannot remove '\(label)'", error)
        }
    }

    /// Removes one snapshot and its record.
    package func remove(_ name: String) throws(NspawnError) {
        let (directory, _) = try find(name)
        let doomed = temporaryName("removing")
        do throws(Errno) {
            let top = try directory.openDirectory(name)
            if !Self.isSubvolume(top) { try? Self.setImmutable(top, false) }
            try directory.rename(name, to: doomed)
        } catch {
            throw .system("cannot remove snapshot '\(path(of: name))'", error)
        }
        try? directory.removeFile(Self.recordName(name))
        try Self.removeTree(doomed, in: directory, label: "\(path)/\(doomed)")
        try? directory.sync()
        if rmdir(path) == 0 { removeEmptyTop() }
    }

    /// Removes every snapshot of the machine, and its directory.
    package func removeAll() throws(NspawnError) {
        guard let directory = try open() else { return }
        let names: [String]
        do throws(Errno) { names = try directory.entries() } catch { throw .system("cannot list '\(path)'", error) }
        for name in names {
            if name.hasPrefix(".") && name.hasSuffix(".json") {
                do throws(Errno) { try directory.removeFile(name) } catch { throw .system("cannot remove '\(path)/\(name)'", error) }
            } else {
                try Self.removeTree(name, in: directory, label: "\(path)/\(name)")
            }
        }
        if rmdir(path) != 0 && errno != ENOENT { throw .system("cannot remove '\(path)'", .last) }
        removeEmptyTop()
    }

    /// The shared directory goes when its last machine's snapshots do.
    private func removeEmptyTop() {
        rmdir("\(imagesDirectory)/\(Self.directoryName)")
    }

    /// Moves the machine's snapshots to `newName` (rename carries them).
    package func move(to newName: MachineName) throws(NspawnError) {
        let target = SnapshotStore(machine: newName, imagesDirectory: imagesDirectory)
        if Glibc.rename(path, target.path) != 0 && errno != ENOENT {
            throw .system("cannot move the snapshots '\(path)' to '\(target.path)'", .last)
        }
    }
}

extension MachineManager {
    // MARK: Snapshots

    /// A read-only copy of the machine's root: a btrfs snapshot where the root is a subvolume,
    /// else a tree copy (reflinked where the file system can) marked immutable. A running
    /// machine's snapshot is crash-consistent, as if its power had been cut at that moment.
    /// With `expiresAfter`, the machine's snapshot timer removes it after that many seconds.
    public func snapshot(_ name: MachineName, as snapshot: String?, expiresAfter: Double? = nil) async throws -> SnapshotResult {
        let snapshot = snapshot ?? Self.defaultSnapshotName()
        try SnapshotInfo.check(snapshot)
        if let expiresAfter, expiresAfter <= 0 { throw NspawnError.invalidArgument("invalid snapshot expiry: expected a time span above 0") }
        return try await withBus { bus in
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let root = try MachineRoot.open(name, bus: bus, writable: false)
            let store = SnapshotStore(machine: name, imagePath: root.path)
            let started = ContinuousClock.now
            let info = try Self.takeSnapshot(snapshot, of: root, in: store, expires: expiresAfter.map { Date().addingTimeInterval($0) }, scheduled: false)
            if info.expires != nil { try Self.syncSnapshotTimer(of: name, store: store, bus: bus) }
            return SnapshotResult(name: name.rawValue, snapshot: info, method: info.method, seconds: (ContinuousClock.now - started).seconds)
        }
    }

    /// Copies the root to the new snapshot `snapshot`, records it and marks it read-only. The
    /// caller holds the machine's name lock.
    static func takeSnapshot(_ snapshot: String, of root: MachineRoot, in store: SnapshotStore, expires: Date?, scheduled: Bool) throws -> SnapshotInfo {
        let directory = try store.openOrCreate()
        if (try? directory.status(snapshot)) != nil {
            throw NspawnError.system("snapshot '\(store.path(of: snapshot))' exists", .fileExists)
        }
        let temporary = temporaryName("snapshot")
        let (method, size) = try copyRoot(root.directory, label: root.path, to: temporary, in: directory,
                                          label: "\(store.path)/\(temporary)", readOnly: true)
        do throws(NspawnError) {
            do throws(Errno) { try directory.renameNoReplace(temporary, to: snapshot) } catch {
                throw NspawnError.system("cannot name the snapshot '\(store.path(of: snapshot))'", error)
            }
        } catch {
            try? SnapshotStore.removeTree(temporary, in: directory, label: temporary)
            throw error
        }
        let info = SnapshotInfo(name: snapshot, created: Date(), method: method, size: size, path: store.path(of: snapshot),
                                expires: expires, scheduled: scheduled)
        try store.writeRecord(info)
        if method != .btrfs {
            do throws(Errno) { try SnapshotStore.setImmutable(try directory.openDirectory(snapshot), true) } catch {
                throw NspawnError.system("cannot make snapshot '\(info.path)' read-only", error)
            }
        }
        try? directory.sync()
        return info
    }

    public func snapshots(_ name: MachineName) async throws -> [SnapshotInfo] {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: false)
            return try SnapshotStore(machine: name, imagePath: root.path).list()
        }
    }

    public func removeSnapshot(_ name: MachineName, _ snapshot: String) async throws {
        try SnapshotInfo.check(snapshot)
        try await withBus { bus in
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let root = try MachineRoot.open(name, bus: bus, writable: false)
            let store = SnapshotStore(machine: name, imagePath: root.path)
            try store.remove(snapshot)
            try Self.syncSnapshotTimer(of: name, store: store, bus: bus)
        }
    }

    /// Replaces the stopped machine's root with a copy of the snapshot: the copy is made beside
    /// the root and swapped with it in one rename (RENAME_EXCHANGE), so a failure or a kill
    /// leaves either the old root or the new one in place, never neither. Only the root file
    /// system changes: settings, flavor, exposure and enablement stay as they are.
    public func restore(_ name: MachineName, from snapshot: String) async throws -> SnapshotResult {
        try SnapshotInfo.check(snapshot)
        return try await withBus { bus in
            let lock = try ImageStore.system.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let machined = Machined(bus: bus)
            if try machined.machinePathIfRunning(name) != nil {
                throw NspawnError.busy(name.rawValue, reason: "it is running; stop it before restoring a snapshot")
            }
            let root = try MachineRoot.open(name, bus: bus, writable: true)
            let store = SnapshotStore(machine: name, imagePath: root.path)
            let (snapshots, info) = try store.find(snapshot)
            let source: Directory
            do throws(Errno) { source = try snapshots.openDirectory(snapshot) } catch {
                throw NspawnError.system("cannot open snapshot '\(info.path)'", error)
            }
            let images = try openHostDirectory(store.imagesDirectory)
            // What a killed restore or rebuild of this name left.
            _ = try? ImageStore(directory: store.imagesDirectory, lockDirectory: ImageStore.system.lockDirectory).removeLeftovers(of: name, in: images)

            let started = ContinuousClock.now
            let rootName = AtomicFile.split(root.path).base
            let temporary = ImageStore.temporaryName(ImageStore.restorePrefix, for: name)
            let temporaryLabel = "\(store.imagesDirectory)/\(temporary)"
            let (method, _) = try Self.copyRoot(source, label: info.path, to: temporary, in: images, label: temporaryLabel, readOnly: false)
            do throws(NspawnError) {
                try Self.swapRoot(temporary, into: rootName, of: name, in: images, imagesPath: store.imagesDirectory, machined: machined)
            } catch {
                try? SnapshotStore.removeTree(temporary, in: images, label: temporaryLabel)
                throw error
            }
            return SnapshotResult(name: name.rawValue, snapshot: info, method: method, seconds: (ContinuousClock.now - started).seconds)
        }
    }

    /// Copies the tree `source` to the new entry `name` of `directory`: a btrfs snapshot when
    /// both allow it, else a tree copy with reflinks where possible. Removes a partial copy.
    static func copyRoot(_ source: Directory, label sourceLabel: String, to name: String, in directory: Directory,
                         label: String, readOnly: Bool) throws -> (SnapshotMethod, size: UInt64?) {
        if SnapshotStore.isSubvolume(source) {
            if nspawnctl_btrfs_snapshot(source.descriptor.rawValue, directory.descriptor.rawValue, name, readOnly ? 1 : 0) == 0 {
                return (.btrfs, nil)
            }
            let cause = Errno.last
            // Another file system (or not a btrfs directory) below: copy instead.
            guard cause == .improperLink || cause == .notSupported || cause == .inappropriateIOCTLForDevice else {
                throw NspawnError.system("cannot snapshot '\(sourceLabel)' as '\(label)'", cause)
            }
        }
        do {
            let summary = try TreeCopier().copyDirectory(source, to: name, in: directory, sourceLabel: sourceLabel, destinationLabel: label)
            return (summary.method == .reflink ? .reflink : .copy, summary.bytes)
        } catch {
            try? SnapshotStore.removeTree(name, in: directory, label: label)
            throw error
        }
    }

    /// A UTC timestamp such as 20261201-173000.
    static func defaultSnapshotName(now: time_t = time(nil)) -> String {
        var now = now
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ value: Int32) -> String { String(value).leftPadded(to: 2) }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))-\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    }
}
