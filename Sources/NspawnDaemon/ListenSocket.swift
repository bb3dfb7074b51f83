import CSystemd
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// The listening socket the daemon serves: the one systemd passed (socket activation), or one
/// it binds itself when started by hand.
public enum ListenSocket {
    /// The socket systemd passed, if any. Exactly one listening unix stream socket is accepted;
    /// anything else is a misconfigured unit and an error.
    public static func inherited() throws(NspawnError) -> Int32? {
        let count = sd_listen_fds(1)
        if count < 0 { throw .failed("sd_listen_fds failed: \(String(cString: strerror(-count)))") }
        if count == 0 { return nil }
        guard count == 1 else { throw .failed("systemd passed \(count) sockets; nspawnd.socket must list exactly one") }
        let fd = SD_LISTEN_FDS_START
        // type SOCK_STREAM, listening, any path
        let isUnixStream = sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0)
        if isUnixStream <= 0 {
            throw .failed("the socket systemd passed (fd \(fd)) is not a listening unix stream socket")
        }
        return fd
    }

    /// Binds and listens on `path` with `mode`, replacing a stale socket file (never another file).
    public static func bind(path: String, mode: mode_t) throws(NspawnError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .invalidArgument("socket path '\(path)' is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw .busy(path, reason: "it exists and is not a socket") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .failed("cannot create a socket: \(String(cString: strerror(errno)))") }
        let previousMask = umask(0o177)
        defer { umask(previousMask) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, mode) == 0, listen(fd, 128) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw .failed("cannot listen on '\(path)': \(message)")
        }
        return fd
    }
}
