import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A child started with posix_spawn; used only for the standard interfaces (systemd-nspawn, gpgv).
package struct ChildProcess: Sendable {
    package let pid: pid_t
    package let argv: [String]

    package enum Termination: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        package var succeeded: Bool { self == .exited(0) }
        package var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Starts `argv[0]` from PATH with the given descriptors as its stdin, stdout and stderr
    /// (nil: /dev/null). `extra` maps our descriptors to the child's descriptor 3 and up, in order.
    /// The child holds no other descriptor of ours, close-on-exec or not: SwiftNIO accepts
    /// connections without SOCK_CLOEXEC, and an import child must not keep a client's socket open.
    package static func spawn(_ argv: [String], stdin: FileDescriptor? = nil, stdout: FileDescriptor? = nil,
                              stderr: FileDescriptor? = nil, extra: [FileDescriptor] = []) throws(NspawnError) -> ChildProcess {
        try spawnRaw(argv, stdin: stdin?.rawValue, stdout: stdout?.rawValue, stderr: stderr?.rawValue, extra: extra.map(\.rawValue),
                     isolated: nil)
    }

    /// Starts `argv[0]` (a path) as a stranger to this process: only `environment`, `/` as its
    /// working directory, and a process group of its own, so `signalGroup` reaches whatever it forks.
    package static func spawnIsolated(_ argv: [String], environment: [String], stdout: FileDescriptor,
                                      stderr: FileDescriptor) throws(NspawnError) -> ChildProcess {
        try spawnRaw(argv, stdin: nil, stdout: stdout.rawValue, stderr: stderr.rawValue, extra: [], isolated: environment)
    }

    /// posix_spawn's file actions take raw numbers; they stay in here.
    private static func spawnRaw(_ argv: [String], stdin: Int32?, stdout: Int32?, stderr: Int32?,
                                 extra: [Int32], isolated environment: [String]?) throws(NspawnError) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, fd) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            if let fd {
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            } else {
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            }
        }
        for (index, fd) in extra.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + index)) }
        nspawnctl_spawn_close_from(&actions, Int32(3 + extra.count))
        if environment != nil { nspawnctl_spawn_chdir(&actions, "/") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The caller may ignore or block signals; the child starts with the defaults.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT] { sigaddset(&defaults, signal) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (environment != nil ? POSIX_SPAWN_SETPGROUP : 0)))

        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for arg in cArgs { free(arg) } }
        var cEnvironment: [UnsafeMutablePointer<CChar>?] = (environment ?? []).map { strdup($0) } + [nil]
        defer { for variable in cEnvironment { free(variable) } }
        var pid = pid_t()
        func attempt() -> Int32 {
            guard environment != nil else { return posix_spawnp(&pid, argv[0], &actions, &attributes, &cArgs, Glibc.environ) }
            return cEnvironment.withUnsafeMutableBufferPointer { posix_spawnp(&pid, argv[0], &actions, &attributes, &cArgs, $0.baseAddress) }
        }
        var code = attempt()
        // A program written just now may still be open for writing in a child another thread
        // forked meanwhile, until that child execs; the kernel says ETXTBSY for that moment.
        for _ in 0..<20 where code == ETXTBSY {
            usleep(5_000)
            code = attempt()
        }
        guard code == 0 else {
            throw .system("cannot run '\(argv[0])'", Errno(rawValue: code))
        }
        return ChildProcess(pid: pid, argv: argv)
    }

    package func wait() -> Termination {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return .exited(127) }
        }
        return Self.termination(status)
    }

    /// Reaps the child if it has ended, without waiting: nil while it still runs.
    package func reapIfEnded() throws(Errno) -> Termination? {
        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { return Self.termination(status) }
            if reaped == 0 { return nil }
            if errno != EINTR { throw Errno.last }
        }
    }

    /// Waits until the child has exited without reaping it: its pid stays taken, so a signal
    /// sent meanwhile can never reach another process that reused it.
    package func waitUntilExited() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
    }

    /// Sends `signal` to the child, which must not have been reaped yet (its pid could be reused).
    package func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// Sends `signal` to the process group of a child started by `spawnIsolated`.
    package func signalGroup(_ signal: Int32) {
        kill(-pid, signal)
    }

    /// Waits up to `timeout` for the child to exit, without reaping it; whether it did.
    package func waitUntilExited(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if nspawnctl_child_has_exited(pid) != 0 { return true }
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
    }

    /// A raw status from waitpid(2).
    private static func termination(_ status: Int32) -> Termination {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    /// Runs to the end with stdin from /dev/null and returns how it ended with its output (stdout and
    /// stderr interleaved, the last `limit` bytes).
    package static func run(_ argv: [String], limit: Int = 16 * 1024) throws(NspawnError) -> (Termination, String) {
        let capture = try MemoryFile()
        let child = try spawn(argv, stdout: capture.descriptor, stderr: capture.descriptor)
        let termination = child.wait()
        return (termination, capture.text(limit: limit))
    }
}

extension ChildProcess {
    /// For a helper started as a child: SIGTERM when the parent ends, even by SIGKILL, so an
    /// import cancels itself and an apply stops rather than going on unwatched. Exits at once
    /// when the parent is already gone (reparented before the request took effect).
    package static func endWithParent() {
        let parent = getppid()
        _ = nspawnctl_set_parent_death_signal(SIGTERM)
        if parent == 1 || getppid() != parent { exit(130) }  // as a cancelled command exits
    }
}
