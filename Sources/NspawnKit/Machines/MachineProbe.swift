import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Learns what machined forks into a container to learn (GetMachineOSRelease,
/// GetMachineAddresses) from the host, through the leader's /proc entries: os-release read
/// inside the leader's root (openat2 RESOLVE_IN_ROOT, so a guest symlink stays in the guest),
/// addresses from a netlink socket made in the leader's network namespace.
/// machined stays the record of which machines exist and who leads them; anything the probe
/// cannot vouch for (no permission, a VM, a leader that is not the machine's any more, an odd
/// file) is left unknown, for machined to answer.
enum MachineProbe {
    struct Request {
        var name: String
        var leader: UInt32?
        var machineClass: String?
        /// The machine's scope or service: the leader's cgroup must lie in it.
        var unit: String?
        var wantsOS: Bool
        var wantsAddresses: Bool

        init(name: String, properties: MachineProperties, wantsOS: Bool = true, wantsAddresses: Bool = true) {
            self.name = name
            leader = properties.leader
            machineClass = properties.machineClass
            unit = properties.unit
            self.wantsOS = wantsOS
            self.wantsAddresses = wantsAddresses
        }
    }

    /// What was learned; nil fields are for machined to answer.
    struct Answer: Equatable {
        /// `.some(nil)`: the machine has no os-release (machined answers with an error then).
        var os: String??
        var addresses: [String]?
    }

    static let osReleaseLimit = 64 * 1024

    /// The display name of the os-release in `root`: /etc/os-release, else /usr/lib/os-release,
    /// both resolved inside it. `.some(nil)` when neither exists; nil when unsure.
    static func osRelease(in root: Directory) -> String?? {
        let contained = ContainedRoot(root: root)
        for path in ["/etc/os-release", "/usr/lib/os-release"] {
            let bytes: [UInt8]?
            do { bytes = try contained.read(path, limit: osReleaseLimit) } catch { return nil }
            guard let bytes else { continue }
            guard let pairs = EnvironmentFile.pairs(bytes) else { return nil }
            return .some(osDisplayName(pairs))
        }
        return .some(nil)
    }

    /// A stopped directory or subvolume image's os-release, read from its tree. machined's
    /// GetImageOSRelease takes a shared lock on the image while it reads, and a start at that
    /// moment fails with "Directory tree … is currently busy"; reading here takes none.
    /// nil when unsure (another image type, an unreadable tree): then ask machined.
    static func imageOSRelease(type: String?, path: String?) -> String?? {
        guard type == "directory" || type == "subvolume", let path,
              let root = try? Directory(path: path) else { return nil }
        return osRelease(in: root)
    }

    static func probe(_ requests: [Request]) -> [String: Answer] {
        var answers: [String: Answer] = [:]
        guard !requests.isEmpty, Host.current.sharesMachinedPIDNamespace else { return answers }
        let host = Host.current
        var pending: [(name: String, namespace: FileDescriptor)] = []
        for request in requests {
            guard let leader = try? Leader(request) else { continue }
            var answer = Answer()
            if request.wantsOS { answer.os = leader.osRelease() }
            var namespace: FileDescriptor?
            if request.wantsAddresses {
                switch leader.network(host: host) {
                case .shared: answer.addresses = []  // machined: "does not use private networking"
                case .own(let fd): namespace = fd
                case nil: break
                }
            }
            // Everything above came from the process the pidfd names only if it is still alive now.
            guard leader.isAlive else {
                try? namespace?.close()
                continue
            }
            answers[request.name] = answer
            if let namespace { pending.append((request.name, namespace)) }
        }
        let sockets = RouteSocket.open(in: pending.map(\.namespace))
        for (entry, socket) in zip(pending, sockets) {
            try? entry.namespace.close()
            guard case .success(let socket) = socket, let addresses = try? socket.addresses() else { continue }
            answers[entry.name]?.addresses = LocalAddresses.formatted(addresses)
        }
        return answers
    }

    /// Facts about where we run, read once per process.
    struct Host: Sendable {
        /// Our /proc shows PIDs of our own namespace (NSpid has one field), as machined's leaders are.
        var sharesMachinedPIDNamespace: Bool
        /// Our network namespace when it is PID 1's (machined's); nil when not, or unknown.
        var network: (dev: UInt64, ino: UInt64)?

        static let current = Host()

        init() {
            let status = (try? readFile("/proc/self/status", limit: 64 * 1024)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let nspid = status.split(separator: "\n").first { $0.hasPrefix("NSpid:") }
            sharesMachinedPIDNamespace = nspid.map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).count == 2 } ?? false
            let ours = namespaceIdentity("/proc/self/ns/net")
            let init1 = namespaceIdentity("/proc/1/ns/net")
            network = ours != nil && ours?.dev == init1?.dev && ours?.ino == init1?.ino ? ours : nil
        }
    }

    enum Network {
        /// The leader uses the host's network: machined reports no addresses.
        case shared
        case own(FileDescriptor)
    }

    /// The leader machined named, pinned by a pidfd and checked to lie in the machine's unit.
    final class Leader {
        let pid: UInt32
        let pidFD: FileDescriptor
        /// /proc/PID/cgroup as read for the check, for callers that need the leader's cgroup.
        let cgroupFile: String

        init(_ request: Request) throws(Errno) {
            guard request.machineClass == "container", let pid = request.leader, pid > 1,
                  let unit = request.unit, !unit.isEmpty, !unit.contains("/") else { throw .invalidArgument }
            let fd = try FileDescriptor.opening { nspawnctl_pidfd_open(Int32(bitPattern: pid)) }
            // A PID reused by another process would sit in another cgroup; isAlive rules out a
            // reuse after this read.
            let cgroups = (try? readFile("/proc/\(pid)/cgroup", limit: 64 * 1024)).map { String(decoding: $0, as: UTF8.self) }
            guard let cgroups, Self.cgroups(cgroups, contain: unit) else {
                try? fd.close()
                throw .noSuchProcess
            }
            self.pid = pid
            pidFD = fd
            cgroupFile = cgroups
        }

        deinit { try? pidFD.close() }

        /// Whether some cgroup line of /proc/PID/cgroup has `unit` as a path component.
        static func cgroups(_ file: String, contain unit: String) -> Bool {
            file.split(separator: "\n").contains { line in
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                return fields.count == 3 && fields[2].split(separator: "/").contains { $0 == unit }
            }
        }

        var isAlive: Bool {
            // A pidfd turns readable when its process exits.
            (try? pidFD.waitReadable(timeout: .zero)) == false
        }

        /// The display name of the guest's os-release: /etc/os-release, else /usr/lib/os-release,
        /// both resolved inside the leader's root. `.some(nil)` when neither exists; nil when unsure.
        func osRelease() -> String?? {
            guard let root = try? Directory(FileDescriptor.opening { open("/proc/\(pid)/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC) })
            else { return nil }
            return MachineProbe.osRelease(in: root)
        }

        func network(host: Host) -> Network? {
            guard let ours = host.network, let theirs = namespaceIdentity("/proc/\(pid)/ns/net") else { return nil }
            if theirs.dev == ours.dev && theirs.ino == ours.ino { return .shared }
            guard let fd = try? FileDescriptor.opening({ open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC) }) else { return nil }
            return .own(fd)
        }
    }
}

private func namespaceIdentity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return (UInt64(st.st_dev), UInt64(st.st_ino))
}

private func readFile(_ path: String, limit: Int) throws(Errno) -> [UInt8] {
    let fd = try FileDescriptor.opening { open(path, O_RDONLY | O_CLOEXEC) }
    defer { try? fd.close() }
    return try fd.readAll(limit: limit)
}
