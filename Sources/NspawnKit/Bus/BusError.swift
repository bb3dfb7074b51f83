import CSystemd

/// A failure reported by sd-bus or by the peer of a call.
///
/// `name` is the D-Bus error name (for example `org.freedesktop.machine1.NoSuchMachine`);
/// errors raised locally by sd-bus carry a `System.Error.E…` name derived from `errno`.
public struct BusError: Error, Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var message: String
    public var errno: Int32

    public init(name: String, message: String, errno: Int32) {
        self.name = name
        self.message = message
        self.errno = errno
    }

    /// Builds an error from a negative sd-bus return code and the `sd_bus_error` it may have filled.
    init(code: Int32, error: UnsafePointer<sd_bus_error>?, operation: String) {
        let errnoValue = code < 0 ? -code : code
        if let error, let namePointer = error.pointee.name {
            self.name = String(cString: namePointer)
            self.message = error.pointee.message.map { String(cString: $0) } ?? ""
            self.errno = errnoValue
        } else {
            self.name = BusError.systemErrorName(errnoValue)
            self.message = "\(operation): \(String(cString: strerror(errnoValue)))"
            self.errno = errnoValue
        }
    }

    static func systemErrorName(_ errnoValue: Int32) -> String {
        // sd-bus names errno-derived errors "System.Error.<ENAME>"; mirror that for local failures.
        guard let name = errnoName(errnoValue) else { return "System.Error.\(errnoValue)" }
        return "System.Error.\(name)"
    }

    public var description: String {
        message.isEmpty ? name : "\(message) (\(name))"
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

private func errnoName(_ value: Int32) -> String? {
    switch value {
    case EPERM: "EPERM"
    case ENOENT: "ENOENT"
    case EACCES: "EACCES"
    case EEXIST: "EEXIST"
    case EBUSY: "EBUSY"
    case EINVAL: "EINVAL"
    case ENOTCONN: "ENOTCONN"
    case ECONNREFUSED: "ECONNREFUSED"
    case ETIMEDOUT: "ETIMEDOUT"
    case ENXIO: "ENXIO"
    case ESRCH: "ESRCH"
    case ENOMEDIUM: "ENOMEDIUM"
    case EOPNOTSUPP: "EOPNOTSUPP"
    case EBADMSG: "EBADMSG"
    case ENOMEM: "ENOMEM"
    default: nil
    }
}
