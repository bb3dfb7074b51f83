import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NspawnAPI
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One exec stream after `101 Switching Protocols`: frames from the client to the command's
/// stdin (and its terminal size and signals), its stdout and stderr back as frames, then its
/// exit. The command's descriptors become NIO pipe channels on the connection's own event loop,
/// so nothing blocks the loop, and each side reads only while the other can take more: a
/// command that does not read its stdin stops the socket being read, a client that does not
/// read stops the command's output being read. Only `wait()` runs on a thread of its own.
///
/// A client that hangs up before the exit frame gets the command a HUP, as a closed terminal
/// does; one that has not ended `hangUpGrace` later is killed, so it is always reaped.
final class ExecRelay: @unchecked Sendable {
    static let hangUpGrace: TimeAmount = .seconds(10)

    private let loop: any EventLoop
    private let process: any GuestProcess
    private let logger: Logger
    private let done: EventLoopPromise<Void>
    // Everything below is touched only on `loop`.
    private var socket: ChannelHandlerContext?
    private var stdin: (any Channel)?
    private var stdinEnded = false
    private var outputs: [ObjectIdentifier: (any Channel, ExecFrameType)] = [:]
    /// Outputs that stopped reading until the socket can take more.
    private var waitingOutputs: [any Channel] = []
    private var holdingSocketReads = false
    private var socketReadPending = false
    private var decoder = ExecFrameDecoder(from: .client)
    private var waiting = false
    private var finished = false
    private var hungUp = false
    private var completed = false
    /// Output read before the 101 went out, sent right after it.
    private var early: [(ByteBuffer, ExecFrameType)] = []
    private var lastFrameSent: EventLoopFuture<Void>?

    private init(loop: any EventLoop, process: any GuestProcess, logger: Logger) {
        self.loop = loop
        self.process = process
        self.logger = logger
        self.done = loop.makePromise()
    }

    /// Switches `channel` to the exec stream for `process`: sets up its pipes, answers 101 and
    /// relays until the command has ended and its exit is sent, or the client has gone and the
    /// command is reaped. Closes `process` at the end, also when the switch fails.
    static func run(on channel: any Channel, process: any GuestProcess, logger: Logger) async throws {
        let relay = ExecRelay(loop: channel.eventLoop, process: process, logger: logger)
        do {
            try await relay.openPipes()
        } catch {
            relay.loop.execute { relay.abandon() }
            throw SetupError(error: error as? NspawnError ?? .failed("\(error)"))
        }
        do {
            try await channel.eventLoop.submit { try relay.switchProtocols(channel) }.get()
        } catch {
            relay.loop.execute { relay.abandon() }
            throw error
        }
        try await relay.done.futureResult.get()
    }

    /// A failure before the 101, which the client still hears as an HTTP error.
    struct SetupError: Error {
        var error: NspawnError
    }

    // MARK: Setting up

    /// The command's descriptors as pipe channels. Each gets a duplicate, which NIO owns and
    /// closes; the process keeps (and closes) its own.
    private func openPipes() async throws {
        var pipes: [(SystemPackage.FileDescriptor, ExecFrameType)] = [(process.output, .stdout)]
        if let errorOutput = process.errorOutput { pipes.append((errorOutput, .stderr)) }
        for (descriptor, type) in pipes {
            let copy = try Self.duplicate(descriptor, what: "\(type)")
            let bootstrap = NIOPipeBootstrap(group: loop)
                .channelOption(.autoRead, value: false)
                .channelInitializer { [self] channel in
                    // Known before it can end: a command that exits at once closes it on registration.
                    outputs[ObjectIdentifier(channel)] = (channel, type)
                    return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(OutputHandler(relay: self, type: type)) }
                }
            do {
                _ = try await bootstrap.takingOwnershipOfDescriptor(input: copy.rawValue).get()
            } catch {
                try? copy.close()
                throw NspawnError.failed("cannot relay the command's \(type): \(error)")
            }
        }
        if let input = process.input {
            let copy = try Self.duplicate(input, what: "stdin")
            let bootstrap = NIOPipeBootstrap(group: loop)
                .channelInitializer { [self] channel in
                    stdin = channel
                    return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(InputHandler(relay: self)) }
                }
            do {
                _ = try await bootstrap.takingOwnershipOfDescriptor(output: copy.rawValue).get()
            } catch {
                try? copy.close()
                throw NspawnError.failed("cannot relay the command's stdin: \(error)")
            }
        }
    }

    private static func duplicate(_ descriptor: SystemPackage.FileDescriptor, what: String) throws(NspawnError) -> SystemPackage.FileDescriptor {
        do { return try descriptor.closeOnExecDuplicate() } catch { throw .system("cannot duplicate the command's \(what)", error) }
    }

    /// In one turn of the loop, so no byte of the client's can arrive in between: the HTTP
    /// handlers leave, the frame handler takes their place, and the 101 goes out.
    private func switchProtocols(_ channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        let decoder = try pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let handler = SocketHandler(relay: self)
        try pipeline.addHandler(handler, position: .after(decoder.handler))
        for context in [decoder, try? pipeline.context(handlerType: HTTPResponseEncoder.self),
                        try? pipeline.context(handlerType: HTTPServerPipelineHandler.self),
                        try? pipeline.context(handlerType: NIOHTTPResponseHeadersValidator.self),
                        try? pipeline.context(handlerType: JSONProtocolErrorHandler.self)].compactMap({ $0 }) {
            pipeline.removeHandler(context: context, promise: nil)
        }
        let context = try pipeline.context(handler: handler)
        socket = context
        let head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: \(ExecStream.upgradeToken)\r\n"
            + "\(APILevel.header): \(APILevel.current)\r\n\r\n"
        context.write(NIOAny(context.channel.allocator.buffer(string: head)), promise: nil)
        for (buffer, type) in early { forward(buffer, as: type) }
        early.removeAll()
        context.flush()
        context.read()
        for (output, _) in outputs.values { output.read() }
        if outputs.isEmpty { outputsEnded() }
    }

    // MARK: Client to command

    func received(_ bytes: ByteBuffer) {
        decoder.feed(bytes.readableBytesView)
        do {
            while !finished, let frame = try decoder.next() {
                try handle(frame)
            }
        } catch let error as NspawnError {
            fail(error)
        } catch {
            fail(.failed("\(error)"))
        }
    }

    private func handle(_ frame: ExecFrame) throws {
        switch frame {
        case .stdin(let bytes):
            guard !stdinEnded else { throw NspawnError.invalidArgument("exec stream: a stdin frame after stdin-end") }
            // Without `interactive` the command reads /dev/null; what is sent is dropped.
            stdin?.write(ByteBuffer(bytes: bytes), promise: nil)
        case .stdinEnd:
            guard !stdinEnded else { throw NspawnError.invalidArgument("exec stream: a second stdin-end frame") }
            stdinEnded = true
            endInput()
        case .resize(let size):
            do { try process.resize(size) } catch { logger.debug("exec: resize failed", metadata: ["error": "\(error)"]) }
        case .signal(let number):
            let signal = try UnixSignal(number: number)
            do { try process.signal(signal) } catch { logger.debug("exec: signal failed", metadata: ["error": "\(error)"]) }
        case .stdout, .stderr, .exit, .error:
            // The decoder refuses these from a client.
            throw NspawnError.invalidArgument("exec stream: a \(frame.type) frame from the client")
        }
    }

    /// The command reads end of file once what was written before has gone through.
    private func endInput() {
        guard let channel = stdin else {
            process.closeInput()
            return
        }
        stdin = nil
        let process = process
        channel.writeAndFlush(ByteBuffer())
            .flatMap { channel.close() }
            .whenComplete { _ in process.closeInput() }
        resumeSocketReads()
    }

    func socketReadCompleted() {
        stdin?.flush()
        if let stdin, !stdin.isWritable { holdingSocketReads = true }
    }

    /// The socket's reads wait while the command's stdin is full.
    func socketRead(_ context: ChannelHandlerContext) {
        if holdingSocketReads {
            socketReadPending = true
        } else {
            context.read()
        }
    }

    func stdinWritabilityChanged(_ writable: Bool) {
        if writable { resumeSocketReads() }
    }

    private func resumeSocketReads() {
        holdingSocketReads = false
        if socketReadPending, let socket {
            socketReadPending = false
            socket.read()
        }
    }

    /// The command stopped reading its stdin (it ended or closed it): what comes is dropped.
    func stdinClosed(_ channel: any Channel) {
        if stdin === channel { stdin = nil }
        resumeSocketReads()
    }

    // MARK: Command to client

    func forward(_ buffer: ByteBuffer, as type: ExecFrameType) {
        guard !finished else { return }
        guard let socket else {
            // A command that writes and ends at once is read (to its end of file) before the switch.
            early.append((buffer, type))
            return
        }
        var buffer = buffer
        while buffer.readableBytes > 0, let slice = buffer.readSlice(length: min(buffer.readableBytes, ExecStream.maximumPayload)) {
            var frame = socket.channel.allocator.buffer(capacity: ExecStream.headerSize + slice.readableBytes)
            frame.writeBytes(ExecFrame.header(type, length: slice.readableBytes))
            frame.writeImmutableBuffer(slice)
            socket.write(NIOAny(frame), promise: nil)
        }
    }

    /// After a batch of output: send it, and read more only while the socket takes it.
    func outputReadCompleted(_ channel: any Channel) {
        guard let socket, !finished else { return }
        socket.flush()
        if socket.channel.isWritable {
            channel.read()
        } else {
            waitingOutputs.append(channel)
        }
    }

    func socketWritabilityChanged(_ writable: Bool) {
        guard writable else { return }
        let waiting = waitingOutputs
        waitingOutputs.removeAll()
        for channel in waiting where channel.isActive { channel.read() }
    }

    /// End of file (or an error such as a terminal's EIO once its last user is gone).
    func outputClosed(_ channel: any Channel) {
        guard outputs.removeValue(forKey: ObjectIdentifier(channel)) != nil else { return }
        waitingOutputs.removeAll { $0 === channel }
        // Before the switch, the switch sends the exit.
        if outputs.isEmpty && socket != nil { outputsEnded() }
    }

    /// All output has been read: the command is ending; its exit goes last.
    private func outputsEnded() {
        guard !finished else { return }
        awaitExit { [self] result in
            guard let socket, !finished else { return }
            finished = true
            let frame: ExecFrame
            switch result {
            case .success(let outcome): frame = .exit(outcome)
            case .failure(let error): frame = .error(error)
            }
            // Closing drops what the socket has not taken yet: close once the last frame is out.
            sendLast(frame, on: socket)
            finish()
        }
    }

    // MARK: Ending

    /// The exit or error frame, then the end of the connection once the socket has taken all
    /// of it: closing earlier (nspawnd's or the connection task's close) drops queued frames.
    private func sendLast(_ frame: ExecFrame, on socket: ChannelHandlerContext) {
        let channel = socket.channel
        lastFrameSent = socket.writeAndFlush(NIOAny(channel.allocator.buffer(bytes: frame.encoded))).always { _ in
            channel.close(promise: nil)
        }
    }

    /// A protocol error: the client hears why, the command is hung up on.
    private func fail(_ error: NspawnError) {
        guard !finished, let socket else { return }
        logger.info("exec stream refused", metadata: ["error": "\(error)"])
        finished = true
        sendLast(.error(error), on: socket)
        hangUp()
    }

    /// The client is gone before the end.
    func socketClosed() {
        if !finished {
            logger.debug("exec client hung up; sending HUP")
            finished = true
        }
        hangUp()
    }

    private func hangUp() {
        guard !hungUp else { return }
        hungUp = true
        if exit == nil { try? process.signal(UnixSignal(number: SIGHUP)) }
        stdin?.close(promise: nil)
        stdin = nil
        process.closeInput()
        for (channel, _) in outputs.values { channel.close(promise: nil) }
        outputs.removeAll()
        let process = process
        let kill = loop.scheduleTask(in: Self.hangUpGrace) { try? process.signal(.kill) }
        awaitExit { [self] _ in
            kill.cancel()
            finish()
        }
    }

    /// A switch that failed: the command goes as after a hang-up.
    private func abandon() {
        finished = true
        hangUp()
    }

    /// Waits for the command on a thread of its own (once), then calls `body` on the loop.
    private var exitWaiters: [(Result<ExitOutcome, NspawnError>) -> Void] = []
    private var exit: Result<ExitOutcome, NspawnError>?

    private func awaitExit(_ body: @escaping (Result<ExitOutcome, NspawnError>) -> Void) {
        if let exit { return body(exit) }
        exitWaiters.append(body)
        guard !waiting else { return }
        waiting = true
        let (process, loop) = (process, loop)
        Task {
            let result: Result<ExitOutcome, NspawnError>
            do throws(NspawnError) {
                result = .success(try await OSThread.run { () throws(NspawnError) -> ExitOutcome in try process.wait() })
            } catch {
                result = .failure(error)
            }
            loop.execute { [self] in
                exit = result
                let waiters = exitWaiters
                exitWaiters.removeAll()
                for waiter in waiters { waiter(result) }
            }
        }
    }

    private func finish() {
        guard exit != nil, !completed else { return }
        completed = true
        stdin?.close(promise: nil)
        stdin = nil
        for (channel, _) in outputs.values { channel.close(promise: nil) }
        outputs.removeAll()
        process.close()
        if let lastFrameSent {
            lastFrameSent.whenComplete { [done] _ in done.succeed() }
        } else {
            done.succeed()
        }
    }
}
