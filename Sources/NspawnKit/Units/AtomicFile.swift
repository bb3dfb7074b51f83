import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Whole-file writes that a crash cannot leave half done: a temporary file in the same
/// directory, fsync, rename over the target, then fsync of the directory.
package enum AtomicFile {
    /// Replaces (or creates) `path` with `contents`, creating missing parent directories (0755).
    static func write(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(NspawnError) {
        try write(path, bytes: Array(contents.utf8), mode: mode)
    }

    static func write(_ path: String, bytes contents: [UInt8], mode: mode_t = 0o644) throws(NspawnError) {
        let (parent, base) = split(path)
        do throws(Errno) {
            try makeDirectories(parent, mode: 0o755)
            let directory = try Directory(path: parent)
            // Host files are written by nspawnctl and nspawnd alone: a temporary of a writer
            // that is gone is a kill -9's leftover.
            try directory.replaceFile(base, with: contents, mode: mode, removingStale: true)
            // The rename lasts through a crash only once the directory is synced too.
            try? directory.sync()
        } catch {
            throw .system("cannot write '\(path)'", error)
        }
    }

    /// Removes `path`; a file that is already gone is fine. Returns whether it existed.
    @discardableResult
    static func remove(_ path: String) throws(NspawnError) -> Bool {
        if unlink(path) == 0 {
            let (parent, _) = split(path)
            try? Directory(path: parent).sync()
            return true
        }
        let cause = Errno.last
        if cause == .noSuchFileOrDirectory || cause == .notDirectory { return false }
        throw .system("cannot remove '\(path)'", cause)
    }

    /// The file's text, or nil when it does not exist. Other read errors are thrown.
    static func read(_ path: String, limit: Int = 1024 * 1024) throws(NspawnError) -> String? {
        try readBytes(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
    }

    static func readBytes(_ path: String, limit: Int = 1024 * 1024) throws(NspawnError) -> [UInt8]? {
        do throws(Errno) {
            let fd = try FileDescriptor.opening { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
            defer { try? fd.close() }
            return try fd.readAll(limit: limit)
        } catch .noSuchFileOrDirectory {
            return nil
        } catch {
            throw .system("cannot read '\(path)'", error)
        }
    }

    package static func split(_ path: String) -> (parent: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let parent = String(path[..<slash])
        return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
    }
}

/// A host file read whole, as a caller's input: nil when it does not exist; larger than
/// `limit` is an error naming it.
package func readHostFile(_ path: String, limit: Int) throws(NspawnError) -> [UInt8]? {
    do throws(Errno) {
        let fd = try FileDescriptor.opening { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
        defer { try? fd.close() }
        return try fd.readAll(limit: limit)
    } catch .noSuchFileOrDirectory {
        return nil
    } catch .fileTooLarge {
        throw .invalidArgument("'\(path.escapedForMessage)' is larger than \(limit) bytes")
    } catch {
        throw .unusableInput("cannot read '\(path.escapedForMessage)'", error)
    }
}
