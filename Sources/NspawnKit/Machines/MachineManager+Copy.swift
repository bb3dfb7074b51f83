import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Which way `copy-to` and `copy-from` go.
public enum CopyDirection: String, Sendable, Codable {
    /// From the host into the machine.
    case into = "copy-to"
    /// From the machine out to the host.
    case outOf = "copy-from"
}

/// What a `copy-to` or `copy-from` did.
public struct CopyResult: Sendable, Codable, Equatable {
    public var name: String
    public var direction: CopyDirection
    /// The source and destination as given, the machine's side as `NAME:/path`.
    public var source: String
    public var destination: String
    /// Whether an existing destination was replaced (`--replace`).
    public var replaced: Bool
    /// reflink, copy_file_range, sendfile or read_write: the slowest any file needed; nil when no file had data.
    public var method: String?
    /// The base added to (copy-to) or subtracted from (copy-from) owners for a user-namespaced
    /// machine whose tree nspawn chowned; nil when ids are the same on disk and in the guest.
    public var idShift: UInt32?
    public var files: Int
    public var directories: Int
    public var symlinks: Int
    public var hardlinks: Int
    public var specialFiles: Int
    /// Directories copied empty because another file system is mounted there.
    public var mountPoints: Int
    public var bytes: UInt64
}

/// A machine's root file system on disk, where machined says the image is.
package struct MachineRoot {
    package var name: MachineName
    package var path: String
    package var directory: Directory
    /// Owners on disk are guest ids plus this (nspawn's chowned user namespace), or 0.
    package var idBase: (uid: UInt32, gid: UInt32)?

    /// The image's directory, for every verb that reads or writes inside a machine's root:
    /// raw and block images have no tree (invalid input), and a read-only image is refused for
    /// writing (a conflict, whichever verb asks).
    package static func open(_ name: MachineName, bus: BusConnection, writable: Bool) throws -> MachineRoot {
        try open(name, machined: Machined(bus: bus), writable: writable)
    }

    package static func open(_ name: MachineName, machined: Machined, writable: Bool) throws(NspawnError) -> MachineRoot {
        guard let objectPath = try machined.imagePathIfExists(name),
              let properties = try machined.imagePropertiesIfExists(name, path: objectPath) else { throw .noSuchImage(name.rawValue) }
        guard let path = properties.path, properties.type == "directory" || properties.type == "subvolume" else {
            throw .invalidArgument("machine '\(name)' has a \(properties.type ?? "unknown") image; only directory and subvolume images have a file tree")
        }
        if writable && properties.readOnly == true { throw .readOnly(name.rawValue) }
        let directory = try MachineManager.openImageRoot(path, name: name)
        let st: stat
        do throws(Errno) { st = try directory.descriptor.status() } catch { throw .system("cannot read '\(path)'", error) }
        return MachineRoot(name: name, path: path, directory: directory, idBase: Self.idBase(uid: st.st_uid, gid: st.st_gid))
    }

    /// nspawn without idmapped mounts chowns a user-namespaced tree to a base that is a multiple
    /// of 65536, its root directory included; with idmaps (or no user namespace) the root is 0's.
    package static func idBase(uid: uid_t, gid: gid_t) -> (uid: UInt32, gid: UInt32)? {
        let size = TreeCopier.IDShift.rangeSize
        guard uid != 0, uid % size == 0, gid % size == 0 else { return nil }
        return (uid, gid)
    }

    func shift(_ direction: TreeCopier.IDShift.Direction) -> TreeCopier.IDShift? {
        idBase.map { TreeCopier.IDShift(uidBase: $0.uid, gidBase: $0.gid, direction: direction) }
    }

    /// The directory holding `path` inside the machine, resolved as if the root were `/`
    /// (openat2 RESOLVE_IN_ROOT), and the last component; nil for the root itself.
    func parent(of path: String) throws(NspawnError) -> (Directory, String)? {
        let components = path.split(separator: "/").map(String.init)
        guard let base = components.last else { return nil }
        guard base != ".", base != ".." else {
            throw .invalidArgument("'\(path.escapedForMessage)' does not name a file in machine '\(name)'")
        }
        let parentPath = "/" + components.dropLast().joined(separator: "/")
        let rootFD = directory.descriptor.rawValue
        do throws(Errno) {
            let fd = try FileDescriptor.opening {
                nspawnctl_openat2(rootFD, parentPath, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0,
                                  nspawnctl_resolve_in_root | nspawnctl_resolve_no_magiclinks)
            }
            return (Directory(fd), base)
        } catch {
            throw .unusableInput("cannot open '\(parentPath)' in machine '\(name)'", error)
        }
    }
}

/// A path on this host, as the caller gave it: the directory holding it (resolved as usual)
/// and the last component; nil when the path names a directory as a whole ("/", "x/..").
func hostParent(of path: String) throws(NspawnError) -> (Directory, String)? {
    let trimmed = path.hasSuffix("/") && path.count > 1 ? String(path.reversed().drop { $0 == "/" }.reversed()) : path
    let (parentPath, base) = AtomicFile.split(trimmed.isEmpty ? "/" : trimmed)
    if base.isEmpty || base == "." || base == ".." { return nil }
    do throws(Errno) {
        return (Directory(try FileDescriptor.opening { open(parentPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }), base)
    } catch {
        throw .unusableInput("cannot open '\(parentPath)'", error)
    }
}

func openHostDirectory(_ path: String) throws(NspawnError) -> Directory {
    do throws(Errno) {
        return Directory(try FileDescriptor.opening { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) })
    } catch {
        throw .unusableInput("cannot open '\(path)'", error)
    }
}

/// A source that does not exist is the caller's mistake (exit 2), not a failed copy.
private func requireSource(_ entry: (Directory, String)?, label: String) throws(NspawnError) {
    guard let (parent, name) = entry else { return }
    do throws(Errno) {
        if try parent.status(name) == nil { throw Errno.noSuchFileOrDirectory }
    } catch {
        throw .unusableInput("cannot copy '\(label.escapedForMessage)'", error)
    }
}

/// A temporary name machined never lists (".#" prefix) and nothing else would pick.
package func temporaryName(_ purpose: String) -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    return ".#nspawnctl-\(purpose)-" + String((0..<6).map { _ in alphabet.randomElement()! })
}

extension MachineManager {
    // MARK: Copying files in and out

    /// Copies `source` on this host to `destination` in the machine (default: the same path).
    ///
    /// Works on running and stopped machines alike, always on the machine's root file system on
    /// disk: the guest's runtime mounts (a tmpfs /tmp or /run, binds) are not reached. The path
    /// in the machine resolves inside its root, so a guest symlink cannot lead the copy out.
    /// The copy is made under a temporary name beside the destination and renamed into place;
    /// an existing destination is an error unless `replace`.
    public func copyTo(_ name: MachineName, source: String, destination: String?, replace: Bool) async throws -> CopyResult {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: true)
            let target = destination ?? source
            guard let (targetParent, targetName) = try root.parent(of: target) else {
                throw NspawnError.invalidArgument("cannot copy over the root of machine '\(name)'; name a path below it")
            }
            let copier = TreeCopier(idShift: root.shift(.intoMachine))
            let label = "\(name):\(target)"
            let sourceEntry = try hostParent(of: source)
            try requireSource(sourceEntry, label: source)
            let (summary, replaced) = try Self.copyAtomically(into: targetParent, as: targetName, label: label, replace: replace) { temporary, temporaryLabel in
                if let (sourceParent, sourceName) = sourceEntry {
                    return try copier.copy(sourceName, in: sourceParent, to: temporary, in: targetParent,
                                           sourceLabel: source, destinationLabel: temporaryLabel)
                }
                return try copier.copyDirectory(try openHostDirectory(source), to: temporary, in: targetParent,
                                                sourceLabel: source, destinationLabel: temporaryLabel)
            }
            return CopyResult(summary, name: name, direction: .into, source: source, destination: label,
                              replaced: replaced, idShift: root.idBase?.uid)
        }
    }

    /// Copies `source` in the machine (resolved inside its root) to `destination` on this host
    /// (default: the same path), with owners as the guest sees them.
    public func copyFrom(_ name: MachineName, source: String, destination: String?, replace: Bool) async throws -> CopyResult {
        try await withBus { bus in
            let root = try MachineRoot.open(name, bus: bus, writable: false)
            let target = destination ?? source
            guard let (targetParent, targetName) = try hostParent(of: target) else {
                throw NspawnError.invalidArgument("'\(target.escapedForMessage)' names a directory as a whole; name the new file or directory to create")
            }
            let copier = TreeCopier(idShift: root.shift(.outOfMachine))
            let label = "\(name):\(source)"
            let sourceEntry = try root.parent(of: source)
            try requireSource(sourceEntry, label: label)
            let (summary, replaced) = try Self.copyAtomically(into: targetParent, as: targetName, label: target, replace: replace) { temporary, temporaryLabel in
                if let (sourceParent, sourceName) = sourceEntry {
                    return try copier.copy(sourceName, in: sourceParent, to: temporary, in: targetParent,
                                           sourceLabel: label, destinationLabel: temporaryLabel)
                }
                return try copier.copyDirectory(root.directory, to: temporary, in: targetParent,
                                                sourceLabel: label, destinationLabel: temporaryLabel)
            }
            return CopyResult(summary, name: name, direction: .outOf, source: label, destination: target,
                              replaced: replaced, idShift: root.idBase?.uid)
        }
    }

    /// Runs `copy` into a temporary entry of `directory`, then renames it to `name`: with
    /// RENAME_NOREPLACE, or with `replace` over a file, or swapped (RENAME_EXCHANGE) with a
    /// directory that is then removed. On any failure the temporary is removed.
    static func copyAtomically(into directory: Directory, as name: String, label: String, replace: Bool,
                               _ copy: (_ temporary: String, _ temporaryLabel: String) throws -> TreeCopier.Summary) throws -> (TreeCopier.Summary, replaced: Bool) {
        let existing: stat?
        do throws(Errno) { existing = try directory.status(name) } catch { throw NspawnError.system("cannot read '\(label)'", error) }
        if existing != nil && !replace {
            throw NspawnError.system("'\(label)' exists; use --replace to replace it", .fileExists)
        }
        let temporary = temporaryName("copy")
        let temporaryLabel = AtomicFile.split(label).parent + "/" + temporary
        let summary: TreeCopier.Summary
        var swapped = false
        do {
            summary = try copy(temporary, temporaryLabel)
            do throws(Errno) {
                if let existing, replace {
                    // rename() replaces a file with a file; with a directory on either side,
                    // the two are swapped and the old one, now under the temporary name, removed.
                    let isDirectory = { (st: stat?) in st.map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false }
                    let copied = try directory.status(temporary)
                    if isDirectory(existing) || isDirectory(copied) {
                        try directory.exchange(temporary, with: name)
                        swapped = true
                    } else {
                        try directory.rename(temporary, to: name)
                    }
                } else {
                    try directory.renameNoReplace(temporary, to: name)
                }
            } catch {
                throw NspawnError.system("cannot move the copy into place as '\(label)'", error)
            }
        } catch {
            try? directory.removeTree(temporary)
            throw error
        }
        if swapped {
            do throws(Errno) { try directory.removeTree(temporary) } catch {
                throw NspawnError.system("the copy is in place as '\(label)', but the directory it replaced could not be removed from '\(temporaryLabel)'", error)
            }
        }
        try? directory.sync()
        return (summary, existing != nil)
    }
}

extension CopyResult {
    init(_ summary: TreeCopier.Summary, name: MachineName, direction: CopyDirection, source: String, destination: String,
         replaced: Bool, idShift: UInt32?) {
        self.init(name: name.rawValue, direction: direction, source: source, destination: destination, replaced: replaced,
                  method: summary.method?.rawValue, idShift: idShift, files: summary.files, directories: summary.directories,
                  symlinks: summary.symlinks, hardlinks: summary.hardlinks, specialFiles: summary.specialFiles,
                  mountPoints: summary.mountPoints, bytes: summary.bytes)
    }
}
