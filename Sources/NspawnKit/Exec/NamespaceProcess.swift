import CLinux
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A command started by joining a machine's leader (CLinux/guest_exec.h): its cgroup, its
/// namespaces and its root. Works whatever the guest runs as PID 1, systemd or a bare payload.
///
/// An intermediate child of ours starts the command and stays to forward signals and report
/// how it ended over a control socket; the command itself is inside the PID namespace.
final class NamespaceProcess: GuestProcess {
    let input: FileDescriptor?
    let output: FileDescriptor
    let errorOutput: FileDescriptor?
    /// The terminal's master side (the same descriptor as `output`), for resizing.
    private let terminal: FileDescriptor?
    private let control: FileDescriptor
    private let intermediate: pid_t
    private let machine: String
    private let streamsOpen = Mutex(true)
    private let inputOpen = Mutex(true)
    private let ended = Mutex<ExitOutcome?>(nil)

    private init(input: FileDescriptor?, output: FileDescriptor, errorOutput: FileDescriptor?, terminal: FileDescriptor?,
                 control: FileDescriptor, intermediate: pid_t, machine: String) {
        self.input = input
        self.output = output
        self.errorOutput = errorOutput
        self.terminal = terminal
        self.control = control
        self.intermediate = intermediate
        self.machine = machine
    }

    deinit {
        close()
        try? control.close()
        // The intermediate reports and exits once the command ends; reap it then.
        let pid = intermediate
        if ended.withLock({ $0 }) == nil {
            OSThread.detach { _ = ChildProcess(pid: pid, argv: []).wait() }
        }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {
        guard let terminal, streamsOpen.withLock({ $0 }) else { return }
        let code = nspawnctl_set_window_size(terminal.rawValue, size.rows, size.columns)
        if code < 0 { throw .system("cannot resize the terminal of machine '\(machine)'", Errno(rawValue: -code)) }
    }

    func signal(_ signal: UnixSignal) throws(NspawnError) {
        guard ended.withLock({ $0 }) == nil else { return }
        let code = nspawnctl_send_signal_request(control.rawValue, signal.number)
        // EPIPE: the command has ended meanwhile, and there is no one left to signal.
        if code < 0, code != -EPIPE, code != -ECONNRESET {
            throw .system("cannot forward \(signal) to the command in machine '\(machine)'", Errno(rawValue: -code))
        }
    }

    func wait() throws(NspawnError) -> ExitOutcome {
        if let outcome = ended.withLock({ $0 }) { return outcome }
        var status: Int32?
        while status == nil {
            let message: Message
            do {
                guard let received = try Self.receive(control) else { break }
                message = received
            } catch {
                throw .system("cannot learn how the command in machine '\(machine)' ended", error)
            }
            if message.kind == Int32(NSPAWNCTL_GUEST_EXITED) { status = message.a }
        }
        _ = ChildProcess(pid: intermediate, argv: []).wait()
        guard let status else {
            throw .failed("the process that ran the command in machine '\(machine)' ended without telling how the command did")
        }
        let outcome = ExitOutcome(waitStatus: status)
        ended.withLock { $0 = outcome }
        return outcome
    }

    func closeInput() {
        guard terminal == nil, let input else { return }
        let wasOpen = inputOpen.withLock { open in
            defer { open = false }
            return open
        }
        if wasOpen { try? input.close() }
    }

    func close() {
        closeInput()
        let wasOpen = streamsOpen.withLock { open in
            defer { open = false }
            return open
        }
        guard wasOpen else { return }
        if terminal != nil { try? input?.close() }
        try? output.close()
        try? errorOutput?.close()
    }

    // MARK: Starting

    struct Message {
        var kind: Int32
        var a: Int32
        var b: Int32
        var descriptor: FileDescriptor?
    }

    /// One message from the intermediate, or nil at the end of the stream.
    static func receive(_ control: FileDescriptor) throws(Errno) -> Message? {
        var raw = nspawnctl_guest_message()
        var fd: Int32 = -1
        let count = nspawnctl_guest_receive(control.rawValue, &raw, &fd)
        if count < 0 { throw Errno(rawValue: -count) }
        if count == 0 { return nil }
        return Message(kind: raw.kind, a: raw.a, b: raw.b, descriptor: fd >= 0 ? FileDescriptor(rawValue: fd) : nil)
    }

    /// Starts `command` (argv; empty means the user's login shell) in the machine.
    /// - Returns: the running command; or, when it cannot be started for the reasons a shell
    ///   reports as 126 or 127, a process that says why on its error output and ends so.
    /// - Throws: `NspawnError` for every failure of our own (joining the machine, the working
    ///   directory, switching user).
    static func start(_ spec: ExecSpec, leader: MachineLeader, user: GuestUser) throws(NspawnError) -> any GuestProcess {
        let machine = leader.machine
        let environment = ExecEnvironment.build(leader: leader.environment, user: user,
                                                terminal: spec.tty ? (spec.terminal ?? "xterm") : nil, extra: spec.environment)
        let file: String
        let argv: [String]
        if spec.command.isEmpty {
            file = user.loginShell
            argv = ["-" + (file.split(separator: "/").last.map(String.init) ?? "sh")]
        } else {
            file = spec.command[0]
            argv = spec.command
        }
        let searchPath: String? = file.contains("/") ? nil
            : environment.last(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) } ?? ExecEnvironment.defaultPath
        let directory = spec.workingDirectory ?? user.home

        // The descriptors: ours stay, the child's are closed here once it has forked.
        var ours: [FileDescriptor] = []
        var theirs: [FileDescriptor] = []
        var started = false
        defer {
            for fd in theirs { try? fd.close() }
            if !started { for fd in ours { try? fd.close() } }
        }
        var stdio: [Int32] = [-1, -1, -1]
        var input: FileDescriptor?
        var output: FileDescriptor?
        var errorOutput: FileDescriptor?
        let control: FileDescriptor
        do throws(Errno) {
            var pair: [Int32] = [-1, -1]
            guard nspawnctl_seqpacket_pair(&pair) == 0 else { throw Errno.last }
            control = FileDescriptor(rawValue: pair[0])
            ours.append(control)
            theirs.append(FileDescriptor(rawValue: pair[1]))
            if !spec.tty {
                if spec.interactive {
                    let (read, write) = try FileDescriptor.closeOnExecPipe()
                    theirs.append(read); ours.append(write)
                    stdio[0] = read.rawValue
                    input = write
                } else {
                    let null = try FileDescriptor.opening { open("/dev/null", O_RDONLY | O_CLOEXEC) }
                    theirs.append(null)
                    stdio[0] = null.rawValue
                }
                for index in 1...2 {
                    let (read, write) = try FileDescriptor.closeOnExecPipe()
                    theirs.append(write); ours.append(read)
                    stdio[index] = write.rawValue
                    if index == 1 { output = read } else { errorOutput = read }
                }
            }
        } catch {
            throw .system("cannot create the streams of a command in machine '\(machine)'", error)
        }

        let arena = CStringArena()
        let groups = user.groups
        let cgroupFDs = leader.cgroupProcs.map(\.rawValue)
        let intermediate: Int32 = groups.withUnsafeBufferPointer { groupsBuffer in cgroupFDs.withUnsafeBufferPointer { cgroupBuffer in
            var request = nspawnctl_guest_spawn()
            request.leader_pidfd = leader.pidFD.rawValue
            request.namespaces = leader.namespaces
            request.root_fd = leader.root.descriptor.rawValue
            request.cgroup_directory_fd = leader.cgroupDirectory?.rawValue ?? -1
            request.cgroup_procs_fds = cgroupBuffer.baseAddress
            request.cgroup_count = Int32(cgroupBuffer.count)
            request.control_fd = theirs[0].rawValue
            request.stdio = (stdio[0], stdio[1], stdio[2])
            request.tty = spec.tty ? 1 : 0
            request.rows = spec.size?.rows ?? 0
            request.columns = spec.size?.columns ?? 0
            request.capability_bounding = leader.capabilityBounding
            request.uid = user.uid
            request.gid = user.gid
            request.groups = groupsBuffer.baseAddress
            request.group_count = Int32(groupsBuffer.count)
            request.directory = UnsafePointer(arena.string(directory))
            request.directory_required = spec.workingDirectory == nil ? 0 : 1
            request.search_path = searchPath.map { UnsafePointer(arena.string($0)) }
            request.file = UnsafePointer(arena.string(file))
            request.argv = UnsafePointer(arena.array(argv))
            request.envp = UnsafePointer(arena.array(environment))
            return nspawnctl_guest_spawn(&request)
        } }
        if intermediate < 0 {
            throw .system("cannot start a process for machine '\(machine)'", Errno(rawValue: -intermediate))
        }
        // Its copies are the only ones now: end of file on them means the command is done.
        for fd in theirs { try? fd.close() }
        theirs = []

        var terminal: FileDescriptor?
        func abandon() {
            try? terminal?.close()
            _ = ChildProcess(pid: intermediate, argv: []).wait()
        }
        while true {
            let message: Message?
            do {
                message = try receive(control)
            } catch {
                abandon()
                throw .system("cannot hear from the process entering machine '\(machine)'", error)
            }
            guard let message else {
                abandon()
                throw .failed("the process entering machine '\(machine)' ended before the command started")
            }
            switch message.kind {
            case Int32(NSPAWNCTL_GUEST_PTY):
                terminal = message.descriptor
            case Int32(NSPAWNCTL_GUEST_FAILED):
                abandon()
                let stage = ExecStage(rawValue: message.a) ?? .exec
                let cause = Errno(rawValue: message.b)
                let action = stage.action(command: file, directory: directory, user: user, machine: machine)
                guard stage == .exec, let outcome = ExitOutcome.startFailure(cause) else { throw .system(action, cause) }
                let reason = cause == .noSuchFileOrDirectory && searchPath != nil ? "command not found" : cause.description
                return try FailedStart(message: "nspawnctl: \(action): \(reason)", tty: spec.tty, outcome: outcome, machine: machine)
            case Int32(NSPAWNCTL_GUEST_STARTED):
                if let terminal {
                    var copy: FileDescriptor?
                    if spec.interactive {
                        do {
                            copy = try terminal.closeOnExecDuplicate()
                        } catch {
                            // Without us on the control socket the command gets on by itself; stop it.
                            _ = nspawnctl_send_signal_request(control.rawValue, SIGKILL)
                            abandon()
                            throw .system("cannot duplicate the terminal of machine '\(machine)'", Errno(rawValue: errno))
                        }
                    }
                    started = true
                    return NamespaceProcess(input: copy, output: terminal, errorOutput: nil, terminal: terminal,
                                            control: control, intermediate: intermediate, machine: machine)
                }
                started = true
                return NamespaceProcess(input: input, output: output!, errorOutput: errorOutput, terminal: nil,
                                        control: control, intermediate: intermediate, machine: machine)
            default:
                continue
            }
        }
    }
}

/// A command that could not be started, told as a shell tells it: a message on the error
/// stream (or the terminal), then status 126 or 127.
final class FailedStart: GuestProcess {
    let input: FileDescriptor? = nil
    let output: FileDescriptor
    let errorOutput: FileDescriptor?
    private let outcome: ExitOutcome

    /// On a terminal the message is its output (raw mode wants "\r\n"); otherwise the error stream's.
    init(message: String, tty: Bool, outcome: ExitOutcome, machine: String) throws(NspawnError) {
        self.outcome = outcome
        do throws(Errno) {
            let (read, write) = try FileDescriptor.closeOnExecPipe()
            defer { try? write.close() }
            try write.writeFully(Array((message + (tty ? "\r\n" : "\n")).utf8))
            if tty {
                output = read
                errorOutput = nil
            } else {
                let (emptyRead, emptyWrite) = try FileDescriptor.closeOnExecPipe()
                try? emptyWrite.close()
                output = emptyRead
                errorOutput = read
            }
        } catch {
            throw .system("cannot report a failed start in machine '\(machine)'", error)
        }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {}
    func signal(_ signal: UnixSignal) throws(NspawnError) {}
    func closeInput() {}
    func wait() throws(NspawnError) -> ExitOutcome { outcome }
    func close() {
        try? output.close()
        try? errorOutput?.close()
    }
}

/// C strings that live until the arena is dropped: values for a call that forks.
final class CStringArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { for pointer in allocations { free(pointer) } }

    func string(_ text: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(text)!
        allocations.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    /// A NULL-terminated array of C strings.
    func array(_ texts: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let raw = malloc(MemoryLayout<UnsafeMutablePointer<CChar>?>.stride * (texts.count + 1))!
        allocations.append(raw)
        let array = raw.bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: texts.count + 1)
        for (index, text) in texts.enumerated() { array[index] = string(text) }
        array[texts.count] = nil
        return array
    }
}
