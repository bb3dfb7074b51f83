import NspawnKit
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A program on this host behind the `GuestProcess` interface, with pipes for its streams:
/// what the relay tests run where a machine's command would be.
final class LocalProgram: GuestProcess, @unchecked Sendable {
    let input: FileDescriptor?
    let output: FileDescriptor
    let errorOutput: FileDescriptor?
    let pid: pid_t
    private let state = Mutex<(inputClosed: Bool, closed: Bool, outcome: ExitOutcome?, signals: [Int32], sizes: [TerminalSize])>((false, false, nil, [], []))

    init(_ spec: ExecSpec) throws(NspawnError) {
        guard !spec.command.isEmpty else { throw .invalidArgument("a local program needs a command") }
        do {
            let stdout = try FileDescriptor.pipe()
            let stderr = spec.tty ? nil : try FileDescriptor.pipe()
            let stdin = spec.interactive ? try FileDescriptor.pipe() : nil
            for end in [stdout.readEnd, stderr?.readEnd, stdin?.writeEnd].compactMap({ $0 }) { _ = fcntl(end.rawValue, F_SETFD, FD_CLOEXEC) }
            defer {
                try? stdout.writeEnd.close()
                try? stderr?.writeEnd.close()
                try? stdin?.readEnd.close()
            }
            let child = try ChildProcess.spawn(spec.command, stdin: stdin?.readEnd, stdout: stdout.writeEnd,
                                               stderr: stderr?.writeEnd ?? stdout.writeEnd)
            pid = child.pid
            output = stdout.readEnd
            errorOutput = stderr?.readEnd
            input = stdin?.writeEnd
        } catch let error as NspawnError {
            throw error
        } catch {
            throw .failed("cannot start \(spec.command): \(error)")
        }
    }

    /// Signals and sizes the relay passed on, in order.
    var signals: [Int32] { state.withLock { $0.signals } }
    var sizes: [TerminalSize] { state.withLock { $0.sizes } }
    /// How it ended, once reaped.
    var outcome: ExitOutcome? { state.withLock { $0.outcome } }

    func closeInput() {
        let first = state.withLock { state in
            defer { state.inputClosed = true }
            return !state.inputClosed
        }
        if first { try? input?.close() }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {
        state.withLock { $0.sizes.append(size) }
    }

    func signal(_ signal: UnixSignal) throws(NspawnError) {
        state.withLock { $0.signals.append(signal.number) }
        guard state.withLock({ $0.outcome == nil }) else { return }
        kill(pid, signal.number)
    }

    func wait() throws(NspawnError) -> ExitOutcome {
        if let outcome { return outcome }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw .system("cannot wait for process \(pid)", Errno(rawValue: errno)) }
        }
        let signal = status & 0x7f
        let outcome: ExitOutcome = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
        state.withLock { $0.outcome = outcome }
        return outcome
    }

    func close() {
        closeInput()
        let first = state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        try? output.close()
        try? errorOutput?.close()
    }
}
