import FoundationEssentials
import NspawnKit
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension APIClient {
    /// Starts a command in a machine of nspawnd's host over an exec stream. What comes back
    /// behaves as a process started here: its descriptors are socket pairs that two threads
    /// relay to and from the stream, so the caller's loop works the same either way.
    /// - Throws: the daemon's refusal before the switch (403, 404, 409, 400) with its
    ///   category, or why the connection failed. Failures after the switch come from `wait()`.
    public func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess {
        let body = Array(try WireJSON.encoder(pretty: false).encode(ExecRequest(spec)))
        let request = HTTPRequestMessage(method: Endpoint.exec.method, target: Endpoint.exec.path(name.rawValue), body: body,
                                         upgrade: ExecStream.upgradeToken)
        // Starting may wait for the guest: a PAM session, a user lookup.
        switch try await transport.upgrade(request, wait: .seconds(60)) {
        case .answered(let response):
            throw ErrorMapping.error(status: response.status, body: response.body, from: transport.peerName)
        case .switched(let connection, let buffered):
            do {
                return try StreamedGuestProcess(connection: connection, buffered: buffered, spec: spec, peerName: transport.peerName)
            } catch {
                connection.close()
                throw error
            }
        }
    }
}

/// A command at the other end of an exec stream. One thread reads frames and writes stdout
/// and stderr into the caller's socket pairs (blocking when the caller does not read, which
/// stops reading the stream: the daemon then stops reading the command); another, with
/// `interactive`, reads what the caller writes to `input` and sends it as stdin frames.
final class StreamedGuestProcess: GuestProcess, @unchecked Sendable {
    let input: FileDescriptor?
    let output: FileDescriptor
    let errorOutput: FileDescriptor?

    private let relay: ExecStreamRelay
    private let reader: OSThread
    private let writer: OSThread?
    private let closing = Mutex<(inputClosed: Bool, closed: Bool)>((false, false))
    /// Serializes joining the reader; never held by the threads.
    private let joining = Mutex<Bool>(false)

    init(connection: any ByteConnection, buffered: [UInt8], spec: ExecSpec, peerName: String) throws(NspawnError) {
        var opened: [FileDescriptor] = []
        func pair() throws(NspawnError) -> (FileDescriptor, FileDescriptor) {
            do {
                let ends = try UnixSocket.pair()
                opened += [ends.0, ends.1]
                return ends
            } catch {
                for descriptor in opened { try? descriptor.close() }
                throw .system("cannot create a socket pair for the exec stream", error)
            }
        }
        let (output, outputSink) = try pair()
        let errorEnds = spec.tty ? nil : try pair()
        let inputEnds = spec.interactive ? try pair() : nil
        self.output = output
        errorOutput = errorEnds?.0
        input = inputEnds?.0
        let relay = ExecStreamRelay(connection: connection, peerName: peerName, outputSink: outputSink,
                                    errorSink: errorEnds?.1, stdinSource: inputEnds?.1)
        self.relay = relay
        reader = OSThread { relay.readFrames(buffered) }
        writer = inputEnds == nil ? nil : OSThread { relay.sendInput() }
    }

    func closeInput() {
        let first = closing.withLock { state in
            defer { state.inputClosed = true }
            return !state.inputClosed
        }
        if first, let input { try? input.close() }
    }

    func resize(_ size: TerminalSize) throws(NspawnError) {
        try relay.send(.resize(size), what: "the terminal size")
    }

    func signal(_ signal: UnixSignal) throws(NspawnError) {
        try relay.send(.signal(signal.number), what: "signal \(signal)")
    }

    func wait() throws(NspawnError) -> ExitOutcome {
        joinReader()
        return try relay.outcome.get()
    }

    func close() {
        let first = closing.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        closeInput()
        try? output.close()
        try? errorOutput?.close()
        // Wakes the reader; nspawnd sees the hang-up and signals the command (HUP).
        relay.hangUp()
        joinReader()
        writer?.join()
        relay.release()
    }

    deinit { close() }

    private func joinReader() {
        joining.withLock { joined in
            guard !joined else { return }
            joined = true
            reader.join()
        }
    }
}

/// The stream's side of a `StreamedGuestProcess`: what its two threads share.
final class ExecStreamRelay: Sendable {
    let connection: any ByteConnection
    let peerName: String
    private let outputSink: FileDescriptor
    private let errorSink: FileDescriptor?
    private let stdinSource: FileDescriptor?
    /// Held while a frame is written, so frames from the threads and the caller never interleave.
    private let sending = Mutex<Void>(())
    private let state = Mutex<(outcome: Result<ExitOutcome, NspawnError>?, hungUp: Bool)>((nil, false))

    init(connection: any ByteConnection, peerName: String, outputSink: FileDescriptor, errorSink: FileDescriptor?, stdinSource: FileDescriptor?) {
        self.connection = connection
        self.peerName = peerName
        self.outputSink = outputSink
        self.errorSink = errorSink
        self.stdinSource = stdinSource
    }

    /// How the command ended, once the reader has finished.
    var outcome: Result<ExitOutcome, NspawnError> {
        state.withLock { $0.outcome } ?? .failure(.failed("the exec stream from \(peerName) ended without an outcome"))
    }

    private var ended: Bool { state.withLock { $0.outcome != nil } }

    /// The caller is done: ends the connection both ways, which wakes the reader.
    func hangUp() {
        state.withLock { $0.hungUp = true }
        try? connection.descriptor.shutdownSocket(.both)
    }

    /// After both threads have ended.
    func release() {
        try? stdinSource?.close()
        connection.close()
    }

    /// A control frame from the caller; nothing once the stream has ended.
    func send(_ frame: ExecFrame, what: String) throws(NspawnError) {
        guard !ended else { return }
        do throws(Errno) {
            try sending.withLock { _ throws(Errno) in try connection.descriptor.sendAll(frame.encoded) }
        } catch .brokenPipe, .connectionReset {
            // The stream is ending; the reader says why.
        } catch {
            throw .system("cannot send \(what) to \(peerName)", error)
        }
    }

    func readFrames(_ buffered: [UInt8]) {
        var decoder = ExecFrameDecoder(from: .server)
        decoder.feed(buffered)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var outputOpen = true
        var errorOpen = true
        var outcome: Result<ExitOutcome, NspawnError>?
        while outcome == nil {
            do {
                while outcome == nil, let frame = try decoder.next() {
                    switch frame {
                    case .stdout(let bytes):
                        if outputOpen { outputOpen = Self.deliver(bytes, to: outputSink) }
                    case .stderr(let bytes):
                        if let errorSink {
                            if errorOpen { errorOpen = Self.deliver(bytes, to: errorSink) }
                        } else if outputOpen {
                            outputOpen = Self.deliver(bytes, to: outputSink)
                        }
                    case .exit(let exit):
                        outcome = .success(exit)
                    case .error:
                        outcome = .failure(frame.nspawnError ?? .failed("\(peerName) failed"))
                    default:
                        break
                    }
                }
            } catch {
                outcome = .failure(.failed("\(peerName): \(error)"))
            }
            if outcome != nil { break }
            var count = 0
            var failure: Errno?
            do {
                count = try chunk.withUnsafeMutableBytes { try connection.descriptor.read(into: $0, retryOnInterrupt: true) }
            } catch {
                failure = error as? Errno
            }
            if count > 0 {
                decoder.feed(chunk[..<count])
                continue
            }
            if state.withLock({ $0.hungUp }) {
                outcome = .failure(.failed("the exec stream to \(peerName) was closed before the command ended"))
            } else if let ssh = connection.failureAtEnd() {
                outcome = .failure(ssh)
            } else if let failure {
                outcome = .failure(.system("cannot read the exec stream from \(peerName)", failure))
            } else {
                let detail = decoder.truncation.map { "; \($0)" } ?? ""
                outcome = .failure(.failed("\(peerName) ended the exec stream before the command ended\(detail)"))
            }
        }
        state.withLock { $0.outcome = outcome }
        // The caller reads end of file after the last byte, as from a local command.
        try? outputSink.close()
        try? errorSink?.close()
        // A writer still waiting for the caller's input has nobody to send it to.
        try? stdinSource?.shutdownSocket(.receiving)
    }

    /// False once the caller has closed its end: what follows is dropped, as a local command
    /// writing to a closed pipe would lose it.
    private static func deliver(_ bytes: [UInt8], to sink: FileDescriptor) -> Bool {
        do {
            try sink.sendAll(bytes)
            return true
        } catch {
            return false
        }
    }

    func sendInput() {
        guard let stdinSource else { return }
        var chunk = [UInt8](repeating: 0, count: ExecStream.maximumPayload)
        while true {
            let count = (try? chunk.withUnsafeMutableBytes { try stdinSource.read(into: $0, retryOnInterrupt: true) }) ?? 0
            if ended { return }
            let frame: ExecFrame = count == 0 ? .stdinEnd : .stdin(Array(chunk[..<count]))
            do throws(Errno) {
                try sending.withLock { _ throws(Errno) in try connection.descriptor.sendAll(frame.encoded) }
            } catch {
                return
            }
            if count == 0 { return }
        }
    }
}
