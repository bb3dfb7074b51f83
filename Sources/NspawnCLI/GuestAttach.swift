import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import NspawnKit
import SystemPackage

/// Connects this process's standard streams (or its terminal) to a command in a machine,
/// wherever that command runs: the library's process here, a stream from nspawnd later.
struct GuestAttach {
    var process: any GuestProcess
    /// Relay our stdin to the command (`-i`).
    var interactive: Bool
    /// The command runs on a terminal (`-t`): our own terminal goes raw and its size follows.
    var tty: Bool

    /// Relays until the command's output ends, then returns how the command ended.
    /// Our terminal is restored and our signal handling reset on every way out.
    func run() async throws -> ExitOutcome {
        let process = process
        // A command that stops reading its input must not kill us with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let terminal = tty ? RawTerminal.enter() : nil
        let signals = SignalRelay(process: process, followWindowSize: tty)
        defer {
            signals.stop()
            terminal?.restore()
            process.close()
        }
        if interactive, let input = process.input {
            let tty = tty
            OSThread.detach {
                Self.relay(from: FileDescriptor.standardInput, to: input)
                if !tty { process.closeInput() }
            }
        }
        async let output: Void = OSThread.run { Self.relay(from: process.output, to: .standardOutput) }
        if let errorOutput = process.errorOutput {
            await OSThread.run { Self.relay(from: errorOutput, to: .standardError) }
        }
        await output
        return try await OSThread.run { () throws(NspawnError) in try process.wait() }
    }

    /// Copies until end of file (or EIO: a terminal whose other side hung up). A reader that
    /// went away does not stop the copy: the writer must still be drained, or it blocks.
    static func relay(from source: FileDescriptor, to target: FileDescriptor) {
        var targetOpen = true
        // A read error ends the copy as end of file does; stdin is not read on once nobody takes it.
        try? source.forEachChunk { chunk throws(Errno) in
            if targetOpen {
                do { try target.writeFully(chunk) } catch { targetOpen = false }
            }
            if !targetOpen && source == .standardInput { throw .brokenPipe }
        }
    }

    /// The size of our terminal, if stdin or stdout is one.
    static func terminalSize() -> TerminalSize? {
        TerminalSize.of(.standardInput) ?? TerminalSize.of(.standardOutput)
    }
}

/// Our terminal in raw mode: keys, ^C included, go to the command's terminal as they are.
final class RawTerminal {
    private var saved: termios

    private init(saved: termios) { self.saved = saved }

    /// Nil when stdin is not a terminal (a pipe or a file is relayed as it is).
    static func enter() -> RawTerminal? {
        guard isatty(0) == 1 else { return nil }
        var current = termios()
        guard tcgetattr(0, &current) == 0 else { return nil }
        var raw = current
        cfmakeraw(&raw)
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return nil }
        return RawTerminal(saved: current)
    }

    func restore() {
        _ = tcsetattr(0, TCSANOW, &saved)
    }
}

/// INT, TERM and HUP we receive go to the command; a change of our window size resizes its
/// terminal. Undone by `stop()`, which gives the signals their default action back.
final class SignalRelay: @unchecked Sendable {
    private static let forwarded = [SIGINT, SIGTERM, SIGHUP]
    private var sources: [any DispatchSourceSignal] = []
    private var numbers: [Int32] = []

    init(process: any GuestProcess, followWindowSize: Bool) {
        for number in Self.forwarded {
            add(number) {
                guard let signal = try? UnixSignal(number: number) else { return }
                try? process.signal(signal)
            }
        }
        if followWindowSize {
            add(SIGWINCH) {
                if let size = GuestAttach.terminalSize() { try? process.resize(size) }
            }
        }
    }

    private func add(_ number: Int32, _ handler: @escaping @Sendable () -> Void) {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler(handler: handler)
        source.resume()
        sources.append(source)
        numbers.append(number)
    }

    func stop() {
        for source in sources { source.cancel() }
        for number in numbers { signal(number, SIG_DFL) }
    }
}
