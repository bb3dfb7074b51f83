import CSystemd
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The listening socket the daemon serves: the one systemd passed (socket activation), or one
/// it binds itself when started by hand.
public enum ListenSocket {
    /// The socket systemd passed, if any. Exactly one listening unix stream socket is accepted;
    /// anything else is a misconfigured unit and an error.
    public static func inherited() throws(NspawnError) -> FileDescriptor? {
        let count = sd_listen_fds(1)
        if count < 0 { throw .system("sd_listen_fds", Errno(rawValue: -count)) }
        if count == 0 { return nil }
        guard count == 1 else { throw .failed("systemd passed \(count) sockets; nspawnd.socket must list exactly one") }
        let fd = SD_LISTEN_FDS_START
        // type SOCK_STREAM, listening, any path
        let isUnixStream = sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0)
        if isUnixStream <= 0 {
            throw .failed("the socket systemd passed (fd \(fd)) is not a listening unix stream socket")
        }
        return FileDescriptor(rawValue: fd)
    }

    /// Binds and listens on `path` with `mode`, replacing a stale socket file (never another file).
    public static func bind(path: String, mode: mode_t) throws(NspawnError) -> FileDescriptor {
        try UnixSocket.listen(path: path, mode: mode)
    }
}
