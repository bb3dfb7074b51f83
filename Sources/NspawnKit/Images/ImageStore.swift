import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where images live and how one is put into place.
///
/// Work in progress is kept under names beginning `.#`, which machined and importd hide, and only a
/// final rename makes an image visible. The names carry the image name after a fixed-length random
/// part (`.#import.0123abcd.NAME`), so leftovers of one name are recognised exactly, never by prefix.
public struct ImageStore: Sendable {
    /// The directory new images go to (machined's /var/lib/machines).
    public var directory: String
    /// Other directories machined searches; a name there is taken too.
    public var searchDirectories: [String]
    /// Where name locks live; systemd's own tools lock image names here.
    public var lockDirectory: String

    public static let system = ImageStore(
        directory: "/var/lib/machines",
        searchDirectories: ["/etc/machines", "/run/machines", "/usr/local/lib/machines", "/usr/lib/machines"],
        lockDirectory: "/run/systemd/nspawn/locks")

    public init(directory: String, searchDirectories: [String] = [], lockDirectory: String) {
        self.directory = directory
        self.searchDirectories = searchDirectories
        self.lockDirectory = lockDirectory
    }

    package static let importPrefix = ".#import."
    package static let replacedPrefix = ".#replaced."
    /// A rebuild's new root before the swap, its old one after.
    package static let rebuildPrefix = ".#rebuild."
    /// A snapshot's copy before a restore swaps it in, the old root after.
    package static let restorePrefix = ".#restore."

    package static func temporaryName(_ prefix: String, for name: MachineName) -> String {
        let random = String(UInt32.random(in: .min ... .max), radix: 16).leftPadded(to: 8)
        return "\(prefix)\(random).\(name.rawValue)"
    }

    /// The image name a work-in-progress entry belongs to, if `entry` is one of ours.
    package static func owner(ofTemporary entry: String) -> String? {
        for prefix in [importPrefix, replacedPrefix, rebuildPrefix, restorePrefix] where entry.hasPrefix(prefix) {
            let rest = entry.dropFirst(prefix.count)
            guard rest.count > 9, rest[rest.index(rest.startIndex, offsetBy: 8)] == "." else { return nil }
            guard rest.prefix(8).allSatisfy(\.isHexDigit) else { return nil }
            return String(rest.dropFirst(9))
        }
        return nil
    }

    package func openDirectory() throws(NspawnError) -> Directory {
        do {
            return try Directory(path: directory)
        } catch .noSuchFileOrDirectory {
            do throws(Errno) {
                try makeDirectories(directory, mode: 0o700)
                return try Directory(path: directory)
            } catch {
                throw .system("cannot create image directory '\(directory)'", error)
            }
        } catch {
            throw .system("cannot open image directory '\(directory)'", error)
        }
    }

    /// Takes the lock on `name` that systemd's tools take too, so one import (or machined's
    /// remove/rename) at a time touches a name. A second taker gets a conflict, not a wait.
    package func lockName(_ name: MachineName) throws(NspawnError) -> FileLock {
        let lock: FileLock?
        do throws(Errno) {
            try makeDirectories(lockDirectory, mode: 0o755)
            lock = try Directory(path: lockDirectory).tryLock("name-\(name.rawValue)")
        } catch {
            // Without root, creating the lock file is what fails (EACCES): permission denied.
            throw .system("cannot lock image name '\(name)' in \(lockDirectory)", error)
        }
        guard let lock else {
            throw .busy(name.rawValue, reason: "another operation on this name (import, create, config, remove, rename) is in progress")
        }
        return lock
    }

    /// The lock file systemd-nspawn holds while it runs the image `name`.
    package static func imageLockName(_ name: MachineName) -> String { ".#\(name.rawValue).lck" }

    /// Where else machined would find `name`, shadowing or shadowed by ours.
    package func existingImage(_ name: MachineName, in store: Directory) throws(NspawnError) -> String? {
        for suffix in ["", ".raw"] {
            let found: stat?
            do { found = try store.status(name.rawValue + suffix) } catch {
                throw .system("cannot look for '\(directory)/\(name)\(suffix)'", error)
            }
            if found != nil { return "\(directory)/\(name)\(suffix)" }
        }
        for other in searchDirectories where other != directory {
            for suffix in ["", ".raw"] {
                var st = stat()
                let path = "\(other)/\(name)\(suffix)"
                if lstat(path, &st) == 0 { return path }
                // A search directory that does not exist holds nothing.
                let cause = Errno.last
                if cause != .noSuchFileOrDirectory && cause != .notDirectory {
                    throw .system("cannot look for '\(path)'", cause)
                }
            }
        }
        return nil
    }

    /// Removes what interrupted imports of `name` left (only call with the name lock held).
    package func removeLeftovers(of name: MachineName, in store: Directory) throws(NspawnError) -> [String] {
        var removed: [String] = []
        let entries: [String]
        do { entries = try store.entries() } catch { throw .system("cannot list '\(directory)'", error) }
        for entry in entries where ImageStore.owner(ofTemporary: entry) == name.rawValue {
            // An old root may be a btrfs subvolume.
            try SnapshotStore.removeTree(entry, in: store, label: "\(directory)/\(entry)")
            removed.append(entry)
        }
        return removed
    }
}

/// mkdir -p; existing directories are fine.
package func makeDirectories(_ path: String, mode: mode_t) throws(Errno) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, mode) != 0 && errno != EEXIST { throw Errno.last }
    }
}

extension ImageStore {
    /// The first `PREFIXNN` (child01, child02, …) no image uses, as the classic nspawn-arch picked.
    package func nextFreeName(prefix: String = "child") throws(NspawnError) -> MachineName {
        let store = try openDirectory()
        for number in 1...9999 {
            let name = try MachineName(prefix + String(number).leftPadded(to: 2))
            if try existingImage(name, in: store) == nil { return name }
        }
        throw .failed("no free name \(prefix)NN in \(directory)")
    }
}
