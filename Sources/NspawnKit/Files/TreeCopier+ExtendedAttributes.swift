import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension Walk {
    /// The namespaces a root file system uses; others (such as system.nfs4_acl) do not carry over.
    static func isCopiedAttribute(_ name: String) -> Bool {
        name.hasPrefix("user.") || name.hasPrefix("trusted.") || name.hasPrefix("security.")
            || name == ExtendedAttributes.accessACL || name == ExtendedAttributes.defaultACL
    }

    func copyExtendedAttributes(from source: ExtendedAttributes, to destination: ExtendedAttributes,
                                sourcePath: String, destinationPath: String) throws(NspawnError) {
        let names: [String]
        do throws(Errno) { names = try source.names() } catch {
            if error == .notSupported { return }
            throw .system("cannot list the extended attributes of '\(sourcePath)'", error)
        }
        // The file capability last, once nothing else can change the file.
        let copied = names.filter(Self.isCopiedAttribute)
        for name in copied.filter({ $0 != "security.capability" }) + copied.filter({ $0 == "security.capability" }) {
            var value: [UInt8]
            do throws(Errno) {
                guard let read = try source.value(name) else { continue }
                value = read
            } catch {
                throw .system("cannot read extended attribute '\(name)' of '\(sourcePath)'", error)
            }
            if let shift = options.idShift { value = ExtendedAttributes.shifted(name, value, by: shift) }
            do throws(Errno) { try destination.set(name, value) } catch {
                throw .system("cannot set extended attribute '\(name)' on '\(destinationPath)'", error)
            }
        }
    }
}

extension TreeCopier {
    /// Whether a copy of a root carries the attribute `name` (see `Walk.isCopiedAttribute`).
    package static func carriesAttribute(_ name: String) -> Bool { Walk.isCopiedAttribute(name) }
}

/// Extended attributes of an open file, or of a node held by an O_PATH descriptor (through its
/// /proc/self/fd link, which leads to the node itself and never further).
package enum ExtendedAttributes {
    case descriptor(FileDescriptor)
    case procPath(FileDescriptor)

    package static let accessACL = "system.posix_acl_access"
    package static let defaultACL = "system.posix_acl_default"

    private var path: String {
        if case .procPath(let fd) = self { return "/proc/self/fd/\(fd.rawValue)" }
        return ""
    }

    package func names() throws(Errno) -> [String] {
        var size = 1024
        while true {
            var buffer = [CChar](repeating: 0, count: size)
            let count = switch self {
            case .descriptor(let fd): flistxattr(fd.rawValue, &buffer, size)
            case .procPath: listxattr(path, &buffer, size)
            }
            if count < 0 {
                if errno == ERANGE { size *= 4; continue }
                throw Errno.last
            }
            return buffer[..<count].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        }
    }

    /// The attribute's bytes; nil when it went away meanwhile.
    package func value(_ name: String) throws(Errno) -> [UInt8]? {
        var size = 256
        while true {
            var buffer = [UInt8](repeating: 0, count: size)
            let count = switch self {
            case .descriptor(let fd): fgetxattr(fd.rawValue, name, &buffer, size)
            case .procPath: getxattr(path, name, &buffer, size)
            }
            if count < 0 {
                if errno == ERANGE && size < 1 << 20 { size *= 4; continue }
                if errno == ENODATA { return nil }
                throw Errno.last
            }
            return Array(buffer[..<count])
        }
    }

    package func set(_ name: String, _ value: [UInt8]) throws(Errno) {
        let result = switch self {
        case .descriptor(let fd): fsetxattr(fd.rawValue, name, value, value.count, 0)
        case .procPath: setxattr(path, name, value, value.count, 0)
        }
        if result != 0 { throw Errno.last }
    }

    /// ACL entries and a v3 file capability's root id hold ids too; they move with the owners.
    package static func shifted(_ name: String, _ value: [UInt8], by shift: TreeCopier.IDShift) -> [UInt8] {
        var value = value
        func load(_ offset: Int) -> UInt32 {
            UInt32(value[offset]) | UInt32(value[offset + 1]) << 8 | UInt32(value[offset + 2]) << 16 | UInt32(value[offset + 3]) << 24
        }
        func store(_ id: UInt32, at offset: Int) {
            for byte in 0..<4 { value[offset + byte] = UInt8(truncatingIfNeeded: id >> (8 * UInt32(byte))) }
        }
        switch name {
        case accessACL, defaultACL:
            // Little endian: a 4-byte version, then entries of tag (2), permissions (2), id (4).
            guard value.count >= 4, (value.count - 4) % 8 == 0 else { return value }
            var offset = 4
            while offset < value.count {
                let tag = UInt16(value[offset]) | UInt16(value[offset + 1]) << 8
                if tag == 0x02 { store(shift.uid(load(offset + 4)), at: offset + 4) }     // ACL_USER
                if tag == 0x08 { store(shift.gid(load(offset + 4)), at: offset + 4) }     // ACL_GROUP
                offset += 8
            }
        case "security.capability":
            // VFS_CAP_REVISION_3 carries the user namespace root's uid after the capability sets.
            guard value.count == 24, load(0) & 0xFF00_0000 == 0x0300_0000 else { return value }
            store(shift.uid(load(20)), at: 20)
        default:
            break
        }
        return value
    }
}
