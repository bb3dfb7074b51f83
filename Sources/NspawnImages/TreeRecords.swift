import CLinux
import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One entry of a machine's root as `copy-machine --refresh` compares it: what stat and the
/// extended attributes say, never the data. Two records that agree are taken to be the same
/// file, as rsync's quick check does (size and modification time to the nanosecond).
struct TreeRecord: Equatable, Sendable {
    enum Kind: String, Sendable {
        case directory = "d", file = "f", symlink = "l", fifo = "p", character = "c", block = "b", socket = "s"

        /// The kind of a node, by the type bits of its `st_mode`.
        init(mode: mode_t) {
            self = switch mode & S_IFMT {
            case S_IFDIR: .directory
            case S_IFLNK: .symlink
            case S_IFIFO: .fifo
            case S_IFCHR: .character
            case S_IFBLK: .block
            case S_IFSOCK: .socket
            default: .file
            }
        }
    }

    /// Relative to the root, "" for the root itself.
    var path: String
    var kind: Kind
    /// The permission bits (07777).
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: Int64
    var seconds: Int64
    var nanoseconds: Int64
    var device: UInt64?
    var target: String?
    /// Name to base64 value.
    var xattrs: [String: String]?
    /// Regular files only: how many names the file has.
    var links: UInt64?
    /// The index of this file's first name, for its other names (hard links).
    var linkOf: Int?

    /// The same file as far as a quick check can tell: all but the index of its first name.
    func sameFile(as other: TreeRecord) -> Bool {
        path == other.path && kind == other.kind && mode == other.mode && uid == other.uid && gid == other.gid && size == other.size
            && seconds == other.seconds && nanoseconds == other.nanoseconds && device == other.device && target == other.target
            && (xattrs ?? [:]) == (other.xattrs ?? [:])
    }

    /// A path a record may carry: relative, plain components, no way out.
    static func isSafe(_ path: String) -> Bool {
        if path.isEmpty { return true }
        guard path.utf8.count <= 4096, !path.utf8.contains(0) else { return false }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// The directory part and the last component of `path` ("" and the name at the top).
    static func split(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}

/// A record as one line of the refresh stream, tab-separated (JSON costs more than the walk):
/// kind, mode (octal), uid, gid, size, seconds, nanoseconds, device, links, first name, path,
/// link target, then `name=base64` per extended attribute. Strings escape `\\`, tab, newline
/// and `=`; absent numbers are empty.
extension TreeRecord {
    var line: [UInt8] {
        var fields: [String] = [kind.rawValue, String(mode, radix: 8), String(uid), String(gid), String(size), String(seconds), String(nanoseconds)]
        let device: String = self.device.map { String($0) } ?? ""
        let links: String = self.links.map { String($0) } ?? ""
        let linkOf: String = self.linkOf.map { String($0) } ?? ""
        let target: String = self.target.map(Self.escape) ?? ""
        fields += [device, links, linkOf, Self.escape(path), target]
        for (name, value) in (xattrs ?? [:]).sorted(by: { $0.key < $1.key }) { fields.append(Self.escape(name) + "=" + value) }
        return Array(fields.joined(separator: "\t").utf8) + [UInt8(ascii: "\n")]
    }

    init?(line: [UInt8]) {
        let fields = line.split(separator: UInt8(ascii: "\t"), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard fields.count >= 12, let kind = Kind(rawValue: fields[0]), let mode = UInt32(fields[1], radix: 8), mode <= 0o7777,
              let uid = UInt32(fields[2]), let gid = UInt32(fields[3]), let size = Int64(fields[4]), size >= 0,
              let seconds = Int64(fields[5]), let nanoseconds = Int64(fields[6]), (0..<1_000_000_000).contains(nanoseconds),
              let path = Self.unescape(fields[10]) else { return nil }
        func optional<T: LosslessStringConvertible>(_ text: String) -> T?? { text.isEmpty ? .some(nil) : T(text).map { .some($0) } }
        guard let device: UInt64? = optional(fields[7]), let links: UInt64? = optional(fields[8]), let linkOf: Int? = optional(fields[9]) else { return nil }
        var target: String?
        if !fields[11].isEmpty { guard let text = Self.unescape(fields[11]) else { return nil }; target = text }
        var xattrs: [String: String] = [:]
        for field in fields.dropFirst(12) {
            guard let equals = field.firstIndex(of: "="), let name = Self.unescape(String(field[..<equals])) else { return nil }
            xattrs[name] = String(field[field.index(after: equals)...])
        }
        self.init(path: path, kind: kind, mode: mode, uid: uid, gid: gid, size: size, seconds: seconds, nanoseconds: nanoseconds,
                  device: device, target: target, xattrs: xattrs.isEmpty ? nil : xattrs, links: links, linkOf: linkOf)
    }

    static func escape(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "=") })
        else { return text }
        var escaped = ""
        for character in text.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\t": escaped += "\\t"
            case "\n": escaped += "\\n"
            case "=": escaped += "\\e"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    static func unescape(_ text: String) -> String? {
        guard text.contains("\\") else { return text }
        var plain = ""
        var escaping = false
        for character in text.unicodeScalars {
            if escaping {
                switch character {
                case "\\": plain += "\\"
                case "t": plain += "\t"
                case "n": plain += "\n"
                case "e": plain += "="
                default: return nil
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                plain.unicodeScalars.append(character)
            }
        }
        return escaping ? nil : plain
    }
}

enum TreeRecords {
    /// Every entry below `root`, parents before their children, names sorted.
    static func walk(_ root: Directory, label: String) throws(NspawnError) -> [TreeRecord] {
        var records: [TreeRecord] = []
        var firstNames: [FileIdentity: Int] = [:]
        var status = stat()
        guard fstat(root.descriptor.rawValue, &status) == 0 else { throw .system("cannot read '\(label)'", .last) }
        records.append(record("", status: status, xattrs: try xattrs(of: root.descriptor, label: label), target: nil))
        try walk(root, prefix: "", label: label, into: &records, firstNames: &firstNames)
        return records
    }

    struct FileIdentity: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private static func walk(_ directory: Directory, prefix: String, label: String, into records: inout [TreeRecord],
                             firstNames: inout [FileIdentity: Int]) throws(NspawnError) {
        let names: [String]
        do throws(Errno) { names = try directory.entries().sorted() } catch {
            throw .system("cannot list '\(label)/\(prefix)'", error)
        }
        for name in names {
            let path = prefix.isEmpty ? name : "\(prefix)/\(name)"
            let found: stat?
            do throws(Errno) { found = try directory.status(name) } catch {
                throw .system("cannot read '\(label)/\(path)'", error)
            }
            // A name that is no UTF-8 comes back from the listing changed, and is not found:
            // refused, rather than left out of the copy.
            guard let status = found else {
                throw .invalidArgument("cannot read '\(label)/\(path.escapedForMessage)': it vanished, or its name is not UTF-8, which a copy refuses")
            }
            let type = status.st_mode & S_IFMT
            var target: String?
            if type == S_IFLNK {
                target = try readLink(name, in: directory, label: "\(label)/\(path)")
            }
            var attributes: [String: String]?
            var child: Directory?
            if type == S_IFDIR {
                do throws(Errno) { child = try directory.openDirectory(name) } catch {
                    throw .system("cannot open '\(label)/\(path)'", error)
                }
                attributes = try xattrs(of: child!.descriptor, label: "\(label)/\(path)")
            } else if type == S_IFREG {
                // A real descriptor: flistxattr on it is cheaper than listxattr through /proc.
                let node: FileDescriptor
                do throws(Errno) {
                    let flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
                    do {
                        node = try FileDescriptor.opening { openat(directory.descriptor.rawValue, name, flags | nspawnctl_o_noatime) }
                    } catch .notPermitted {
                        node = try FileDescriptor.opening { openat(directory.descriptor.rawValue, name, flags) }
                    }
                } catch {
                    throw .system("cannot open '\(label)/\(path)'", error)
                }
                defer { try? node.close() }
                attributes = try xattrs(of: node, label: "\(label)/\(path)")
            }
            var entry = record(path, status: status, xattrs: attributes, target: target)
            if type == S_IFREG && status.st_nlink > 1 {
                let identity = FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
                if let first = firstNames[identity] { entry.linkOf = first } else { firstNames[identity] = records.count }
            }
            records.append(entry)
            if let child {
                try walk(child, prefix: path, label: label, into: &records, firstNames: &firstNames)
            }
        }
    }

    static func record(_ path: String, status: stat, xattrs: [String: String]?, target: String?) -> TreeRecord {
        let kind = TreeRecord.Kind(mode: status.st_mode)
        let isDevice = kind == .character || kind == .block
        return TreeRecord(
            path: path, kind: kind, mode: UInt32(status.st_mode & 0o7777), uid: status.st_uid, gid: status.st_gid,
            size: kind == .file || kind == .symlink ? Int64(status.st_size) : 0,
            seconds: Int64(status.st_mtim.tv_sec), nanoseconds: Int64(status.st_mtim.tv_nsec),
            device: isDevice ? UInt64(status.st_rdev) : nil, target: target, xattrs: xattrs,
            links: kind == .file ? UInt64(status.st_nlink) : nil, linkOf: nil)
    }

    private static func readLink(_ name: String, in directory: Directory, label: String) throws(NspawnError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlinkat(directory.descriptor.rawValue, name, &buffer, buffer.count)
        guard count >= 0 else { throw .system("cannot read the link '\(label)'", .last) }
        guard let target = String(validating: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) else {
            throw .invalidArgument("the link '\(label)' points at a name that is not UTF-8, which a copy refuses")
        }
        return target
    }

    static func xattrs(of descriptor: FileDescriptor, label: String) throws(NspawnError) -> [String: String]? {
        try read(ExtendedAttributes.descriptor(descriptor), label: label)
    }

    private static func read(_ attributes: ExtendedAttributes, label: String) throws(NspawnError) -> [String: String]? {
        var values: [String: String] = [:]
        do throws(Errno) {
            for name in try attributes.names() where TreeCopier.carriesAttribute(name) {
                if let value = try attributes.value(name) { values[name] = Data(value).base64EncodedString() }
            }
        } catch .notSupported {
            return nil
        } catch {
            throw .system("cannot read the extended attributes of '\(label)'", error)
        }
        return values.isEmpty ? nil : values
    }
}
