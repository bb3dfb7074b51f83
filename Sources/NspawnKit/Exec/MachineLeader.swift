import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What a command needs from a machine's leader to run beside it: handles on its process,
/// root, cgroup and namespaces, and what the guest says about its users and environment.
/// Everything is opened up front, so a leader that goes away fails here with a clear message.
final class MachineLeader {
    let machine: String
    let pid: UInt32
    let pidFD: FileDescriptor
    /// The guest's `/`, as the leader sees it.
    let root: Directory
    /// The leader's cgroup.procs in every hierarchy we can join it in, open for writing.
    let cgroupProcs: [FileDescriptor]
    /// The CLONE_NEW* flags of the namespaces the leader does not share with us.
    let namespaces: Int32
    let capabilityBounding: UInt64
    let environment: [String]
    let comm: String

    init(machine: String, pid: UInt32) throws(NspawnError) {
        self.machine = machine
        self.pid = pid
        let proc = "/proc/\(pid)"
        let leaderGone = { (errno: Errno) -> NspawnError in
            errno == .noSuchProcess || errno == .noSuchFileOrDirectory
                ? .notRunning(machine) : .system("cannot open the leader of machine '\(machine)' (pid \(pid))", errno)
        }
        do {
            pidFD = try FileDescriptor.opening { nspawnctl_pidfd_open(Int32(bitPattern: pid)) }
        } catch {
            throw leaderGone(error)
        }
        do {
            root = Directory(try FileDescriptor.opening { open("\(proc)/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC) })
        } catch {
            throw leaderGone(error)
        }
        guard let environ = try AtomicFile.readBytes("\(proc)/environ"),
              let status = try AtomicFile.read("\(proc)/status"),
              let cgroups = try AtomicFile.read("\(proc)/cgroup"),
              let comm = try AtomicFile.read("\(proc)/comm")
        else { throw .notRunning(machine) }
        environment = ExecEnvironment.parseEnviron(environ)
        capabilityBounding = Self.capabilityBounding(status: status) ?? UInt64.max
        self.comm = comm.trimmedWhitespace
        namespaces = try Self.differingNamespaces(leader: proc, machine: machine)
        let mounts = CgroupMount.parse(try AtomicFile.read("/proc/self/mountinfo") ?? "")
        var procs: [FileDescriptor] = []
        for path in CgroupMount.directories(of: cgroups, in: mounts).prefix(Int(nspawnctl_guest_max_cgroups)) {
            let file = path + "/cgroup.procs"
            do {
                procs.append(try FileDescriptor.opening { open(file, O_WRONLY | O_CLOEXEC) })
            } catch {
                for fd in procs { try? fd.close() }
                throw .system("cannot open '\(file)' to join the cgroup of machine '\(machine)'", error)
            }
        }
        cgroupProcs = procs
        // The pid was machined's answer a moment ago; make sure it is still that process.
        if kill(Int32(bitPattern: pid), 0) != 0, Errno.last == .noSuchProcess { throw .notRunning(machine) }
    }

    deinit {
        try? pidFD.close()
        for fd in cgroupProcs { try? fd.close() }
    }

    /// Whether the guest's own systemd is PID 1 (its leader), with a bus to ask.
    var runsSystemd: Bool { comm == "systemd" }

    /// Reads the guest's account files inside its root, so a symlink there cannot point the
    /// read at the host's.
    func resolveUser(_ user: String?) throws(NspawnError) -> GuestUser {
        let contained = ContainedRoot(root: root)
        func text(_ path: String) throws(NspawnError) -> String {
            do {
                return try contained.read(path, limit: 16 * 1024 * 1024).map { String(decoding: $0, as: UTF8.self) } ?? ""
            } catch {
                throw .system("cannot read \(path) of machine '\(machine)'", error)
            }
        }
        return try GuestAccounts.resolve(user, passwd: GuestAccounts.parsePasswd(try text("/etc/passwd")),
                                         groups: GuestAccounts.parseGroup(try text("/etc/group")), machine: machine)
    }

    static func capabilityBounding(status: String) -> UInt64? {
        for line in status.split(separator: "\n") where line.hasPrefix("CapBnd:") {
            return UInt64(line.dropFirst("CapBnd:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" }), radix: 16)
        }
        return nil
    }

    private static let namespaceKinds: [(String, Int32)] = [
        ("user", nspawnctl_clone_newuser), ("mnt", nspawnctl_clone_newns), ("uts", nspawnctl_clone_newuts),
        ("ipc", nspawnctl_clone_newipc), ("net", nspawnctl_clone_newnet), ("pid", nspawnctl_clone_newpid),
        ("cgroup", nspawnctl_clone_newcgroup),
    ]

    /// Only namespaces that differ are entered: setns refuses to re-enter our own user namespace.
    static func differingNamespaces(leader proc: String, machine: String) throws(NspawnError) -> Int32 {
        var flags: Int32 = 0
        for (kind, flag) in namespaceKinds {
            var ours = stat()
            var theirs = stat()
            guard stat("/proc/self/ns/\(kind)", &ours) == 0 else { continue }
            guard stat("\(proc)/ns/\(kind)", &theirs) == 0 else {
                let cause = Errno.last
                if cause == .noSuchFileOrDirectory || cause == .noSuchProcess { throw .notRunning(machine) }
                throw .system("cannot read the \(kind) namespace of machine '\(machine)'", cause)
            }
            if ours.st_ino != theirs.st_ino || ours.st_dev != theirs.st_dev { flags |= flag }
        }
        return flags
    }
}

/// A cgroup file system mounted here: the unified (v2) one, or a v1 hierarchy with its controllers.
struct CgroupMount: Equatable {
    /// Empty for the unified hierarchy; "cpu", "name=systemd", … for a v1 one.
    var controllers: Set<String>
    /// The directory of the hierarchy mounted here, within it ("/" unless only a part is).
    var root: String
    var mountPoint: String
    var readOnly: Bool

    /// The cgroup mounts in `/proc/self/mountinfo`.
    static func parse(_ mountinfo: String) -> [CgroupMount] {
        mountinfo.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard let separator = fields.firstIndex(of: "-"), separator >= 6, fields.count > separator + 3 else { return nil }
            let type = fields[separator + 1]
            guard type == "cgroup" || type == "cgroup2" else { return nil }
            let mountOptions = fields[5].split(separator: ",")
            let superOptions = Set(fields[separator + 3].split(separator: ",").map(String.init))
            let controllers = type == "cgroup2" ? [] : superOptions.subtracting(["rw", "ro", "relatime", "noprefix", "xattr", "clone_children"])
            return CgroupMount(controllers: controllers, root: unescape(fields[3]), mountPoint: unescape(fields[4]),
                               readOnly: mountOptions.contains("ro"))
        }
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes.
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The directories of the leader's cgroups (`/proc/PID/cgroup`) we can join it in: every
    /// hierarchy where it is below the root and which is mounted here, writable, with its
    /// cgroup inside the part mounted. On a unified system that is one; on a hybrid or legacy
    /// one also name=systemd and the controllers the container has cgroups of.
    static func directories(of cgroupFile: String, in mounts: [CgroupMount]) -> [String] {
        var directories: [String] = []
        for line in cgroupFile.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[2].hasPrefix("/"), fields[2] != "/" else { continue }
            let path = String(fields[2])
            // A path that climbs out of what we see is not one to write into.
            guard !path.split(separator: "/").contains(where: { $0 == ".." }) else { continue }
            let controllers = Set(fields[1].split(separator: ",").map(String.init))
            let isUnified = fields[0] == "0" && controllers.isEmpty
            guard let mount = mounts.first(where: { mount in
                isUnified ? mount.controllers.isEmpty : !controllers.isEmpty && controllers.isSubset(of: mount.controllers)
            }), !mount.readOnly else { continue }
            let relative: String
            if mount.root == "/" {
                relative = path
            } else if path == mount.root || path.hasPrefix(mount.root + "/") {
                relative = String(path.dropFirst(mount.root.count))
            } else {
                continue
            }
            let directory = mount.mountPoint + (relative == "/" ? "" : relative)
            if !directories.contains(directory) { directories.append(directory) }
        }
        return directories
    }
}
