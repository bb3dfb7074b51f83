import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One apply at a time per machine, whichever process runs it (nspawnctl's direct path,
/// nspawnd, a second nspawnd on a copy of the socket): each takes a BSD lock on
/// `/run/nspawnctl/apply/NAME.lock` before it looks at the machine, and holds it to the end.
/// The kernel drops the lock when its holder dies, so a killed apply never blocks the next.
package final class ApplyLocks {
    package static let systemDirectory = "/run/nspawnctl/apply"

    private let directory: String
    private let holder: String
    private var held: [MachineName: FileLock] = [:]
    /// Opened (and made) by the first `acquire`.
    private var lockDirectory: Directory?

    /// `manifest` names the holder in the message a second apply gets.
    package init(manifest: String, directory: String = systemDirectory) {
        self.directory = directory
        holder = "pid \(getpid()), manifest '\(manifest.escapedForMessage)'"
    }

    /// Locks `name` for this apply; `busy`, naming the other apply, when one holds it.
    package func acquire(_ name: MachineName) throws(NspawnError) {
        if held[name] != nil { return }
        let lockDirectory: Directory
        do throws(Errno) {
            if let opened = self.lockDirectory {
                lockDirectory = opened
            } else {
                try makeDirectories(directory, mode: 0o700)
                lockDirectory = try Directory(path: directory)
                self.lockDirectory = lockDirectory
            }
        } catch {
            throw .system("cannot open '\(directory)'", error)
        }
        let file = "\(name).lock"
        let taken: FileLock?
        do {
            taken = try lockDirectory.tryLock(file)
            // Who holds it, for the message below; written only while held.
            if let taken {
                _ = try taken.descriptor.resize(to: 0)
                _ = try taken.descriptor.writeAll(toAbsoluteOffset: 0, Array((holder + "\n").utf8))
            }
        } catch {
            throw .system("cannot lock '\(directory)/\(file)'", error as? Errno ?? .ioError)
        }
        guard let lock = taken else {
            // The holder writes its name just after taking the lock: give it that moment.
            var other = ""
            for _ in 0..<20 {
                other = (try? AtomicFile.read("\(directory)/\(file)", limit: 4096))??.trimmingSpaces ?? ""
                if !other.isEmpty { break }
                usleep(5_000)
            }
            throw .busy(name.rawValue, reason: "another apply is converging it (\(other.isEmpty ? "holder unknown" : other)); "
                        + "run apply again when it has ended")
        }
        held[name] = lock
    }

    /// Whether this apply holds `name`'s lock.
    package func holds(_ name: MachineName) -> Bool { held[name] != nil }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
