import CSystemd
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The listening socket the daemon serves: the one systemd passed (socket activation), or one
/// it binds itself when started by hand.
public enum ListenSocket {
    public struct Inherited {
        /// The API's unix socket (nspawnd.socket).
        public var api: FileDescriptor
        /// nspawnd-metrics.socket's TCP sockets (`FileDescriptorName=metrics`), when enabled.
        public var metrics: [FileDescriptor]
    }

    /// The sockets systemd passed, if any: exactly one listening unix stream socket for the
    /// API, and any number named `metrics` that are listening stream sockets. Anything else is
    /// a misconfigured unit and an error.
    public static func inherited() throws(NspawnError) -> Inherited? {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        if count < 0 { throw .system("sd_listen_fds_with_names", Errno(rawValue: -count)) }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        if count == 0 { return nil }
        var api: [FileDescriptor] = []
        var metrics: [FileDescriptor] = []
        for index in 0..<count {
            let fd = SD_LISTEN_FDS_START + index
            let name = names?[Int(index)].map { String(cString: $0) } ?? ""
            if name == "metrics" {
                guard sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1) > 0 else {
                    throw .failed("the metrics socket systemd passed (fd \(fd)) is not a listening stream socket")
                }
                metrics.append(FileDescriptor(rawValue: fd))
            } else {
                // type SOCK_STREAM, listening, any path
                guard sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
                    throw .failed("the socket systemd passed (fd \(fd), '\(name.escapedForMessage)') is not a listening unix stream socket")
                }
                api.append(FileDescriptor(rawValue: fd))
            }
        }
        guard api.count == 1 else { throw .failed("systemd passed \(api.count) API sockets; nspawnd.socket must list exactly one") }
        return Inherited(api: api[0], metrics: metrics)
    }

    /// Binds and listens on `path` with `mode`, replacing a stale socket file (never another file).
    public static func bind(path: String, mode: mode_t) throws(NspawnError) -> FileDescriptor {
        try UnixSocket.listen(path: path, mode: mode)
    }
}
