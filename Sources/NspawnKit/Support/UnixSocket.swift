import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Unix stream sockets by path: the client's connection to nspawnd and the daemon's own
/// listening socket share one address type and one set of syscall wrappers.
public enum UnixSocket {
    /// Connects to `path`. Failures keep their errno: ENOENT and ECONNREFUSED mean nothing
    /// listens there, EACCES that the caller may not.
    public static func connect(path: String) throws(Errno) -> FileDescriptor {
        var address = try socketAddress(path)
        let fd = socket(AF_UNIX, nspawnctl_sock_stream_cloexec, 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        while true {
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if connected == 0 { return FileDescriptor(rawValue: fd) }
            let code = errno
            if code == EINTR { continue }
            close(fd)
            throw Errno(rawValue: code)
        }
    }

    /// Binds and listens on `path` with `mode`, replacing a stale socket file (never another file).
    public static func listen(path: String, mode: mode_t) throws(NspawnError) -> FileDescriptor {
        var address: sockaddr_un
        do { address = try socketAddress(path) } catch { throw .invalidArgument("socket path '\(path.escapedForMessage)' is too long") }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw .busy(path, reason: "it exists and is not a socket") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, nspawnctl_sock_stream_cloexec, 0)
        guard fd >= 0 else { throw .system("cannot create a socket for '\(path.escapedForMessage)'", Errno(rawValue: errno)) }
        // No umask(2) around bind: it is process-wide and would strip the modes of files other
        // threads create meanwhile. Nobody can connect before listen(2), and chmod comes first.
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, mode) == 0, Glibc.listen(fd, 128) == 0 else {
            let code = Errno(rawValue: errno)
            close(fd)
            throw .system("cannot listen on '\(path.escapedForMessage)'", code)
        }
        return FileDescriptor(rawValue: fd)
    }

    /// A connected pair, both ends close-on-exec: one end for us, one to hand a child.
    public static func pair() throws(Errno) -> (FileDescriptor, FileDescriptor) {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, nspawnctl_sock_stream_cloexec, 0, &ends) == 0 else { throw Errno(rawValue: errno) }
        return (FileDescriptor(rawValue: ends[0]), FileDescriptor(rawValue: ends[1]))
    }

    private static func socketAddress(_ path: String) throws(Errno) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .fileNameTooLong }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        return address
    }
}
