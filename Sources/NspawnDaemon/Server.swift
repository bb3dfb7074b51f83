import CLinux
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NspawnAPI
import NspawnKit
import SystemPackage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP/1.1 server on a unix socket: one task per connection, bounded request bodies,
/// a deadline for every request, and an exit once idle.
public struct DaemonServer: Sendable {
    public struct Configuration: Sendable {
        /// Exit after this long with no open connection; nil never exits.
        public var idleTimeout: Duration?
        /// Largest accepted request body.
        public var maximumBodySize: Int = 64 * 1024
        /// Largest body of a manifest route (the manifest travels whole), for a peer the route
        /// admits; anyone else is held to `maximumBodySize`.
        public var maximumManifestBodySize: Int = ManifestRequestLimits.maximumBodySize
        /// A client must send a whole request within this time, and a connection that sends
        /// nothing is closed after it, so slow or half-open clients cannot pin the daemon.
        public var requestTimeout: TimeAmount = .seconds(10)
        /// Connections beyond this are closed at once, before the daemon runs out of files.
        public var maximumConnections = 512

        public init(idleTimeout: Duration?) {
            self.idleTimeout = idleTimeout
        }
    }

    let configuration: Configuration
    let router: Router
    let logger: Logger

    public init(configuration: Configuration, router: Router, logger: Logger) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
    }

    /// Serves `listeningSocket` until idle for `idleTimeout`, and `metricsSockets` (the TCP
    /// sockets of nspawnd-metrics.socket) with `GET /metrics` alone. Both are already bound and
    /// listening, by systemd or by `ListenSocket.bind`.
    public func run(listeningSocket: SystemPackage.FileDescriptor, metricsSockets: [SystemPackage.FileDescriptor] = []) async throws {
        let acceptCounter = AcceptCounter()
        let server = try await Self.listener(listeningSocket, counter: acceptCounter)
        var metricsServers: [Listener] = []
        for socket in metricsSockets { metricsServers.append(try await Self.listener(socket, counter: AcceptCounter())) }
        let metricsListeners = metricsServers
        let activity = Activity()
        logger.info("serving", metadata: ["fd": "\(listeningSocket.rawValue)", "idle-timeout": "\(configuration.idleTimeout.map { "\($0)" } ?? "never")"])
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                var trimmed = 0
                var seen = 0
                var quietSince = ContinuousClock.now
                while true {
                    try await Task.sleep(for: .milliseconds(250))
                    // glibc keeps what a burst of requests freed; hand it back once no request
                    // has come for a second (an open event stream does not count). It walks the
                    // whole heap holding its locks, so on a thread of its own.
                    let served = activity.requests
                    if served != seen {
                        seen = served
                        quietSince = .now
                    } else if served != trimmed, ContinuousClock.now - quietSince >= .seconds(1) {
                        trimmed = served
                        _ = await OSThread.run { malloc_trim(0) }
                    }
                    // An import keeps the daemon up however long it takes.
                    if let idleTimeout = configuration.idleTimeout,
                       await router.operations.runningCount == 0, await activity.idleFor(longerThan: idleTimeout) {
                        logger.info("idle, exiting", metadata: ["idle-timeout": "\(idleTimeout)"])
                        await Self.stopAccepting(server.channel, accepted: acceptCounter, delivered: activity)
                        try? await server.channel.close()
                        for listener in metricsListeners { try? await listener.channel.close() }
                        return
                    }
                }
            }
            // machined's own news, and a health verdict's change, retire the shared listing,
            // whoever made the change.
            tasks.addTask {
                do {
                    for try await event in router.service.events() where [.machineNew, .machineRemoved, .machineHealth].contains(event.event) {
                        await router.listings.invalidate()
                    }
                } catch {
                    logger.warning("not following machined's signals; listings are not shared", metadata: ["error": "\(error)"])
                    await router.listings.disable()
                }
            }
            // Connections get their own group: going idle closes the listener, and what was
            // accepted before that is still served to its end, never cancelled with the
            // background tasks. Connections still in the backlog stay with systemd's copy of
            // the socket and start the next nspawnd.
            try await withThrowingDiscardingTaskGroup { listeners in
                listeners.addTask { try await self.accept(server, activity: activity, metricsOnly: false) }
                for listener in metricsListeners {
                    listeners.addTask { try await self.accept(listener, activity: activity, metricsOnly: true) }
                }
            }
            tasks.cancelAll()
        }
    }

    typealias Listener = NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>

    static func listener(_ socket: SystemPackage.FileDescriptor, counter: AcceptCounter) async throws -> Listener {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(counter) }
            }
            .bind(socket.rawValue) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
                    try channel.pipeline.syncOperations.addHandler(JSONProtocolErrorHandler())
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Serves what `listener` accepts until it closes. Connections get their own group: going
    /// idle closes the listener, and what was accepted before that is still served to its end,
    /// never cancelled with the background tasks. Connections still in the backlog stay with
    /// systemd's copy of the socket and start the next nspawnd.
    private func accept(_ listener: Listener, activity: Activity, metricsOnly: Bool) async throws {
        try await withThrowingDiscardingTaskGroup { serving in
            try await listener.executeThenClose { connections in
                for try await connection in connections {
                    activity.delivered()
                    guard await activity.open < configuration.maximumConnections else {
                        logger.warning("too many connections; closing a new one", metadata: ["limit": "\(configuration.maximumConnections)"])
                        try? await connection.channel.close()
                        continue
                    }
                    await activity.opened()
                    serving.addTask {
                        await self.serve(connection, activity: activity, metricsOnly: metricsOnly)
                        await activity.closed()
                    }
                }
            }
        }
    }

    /// Stops taking connections from the kernel and waits until each one taken has reached the
    /// accept loop. NIO drops a connection still being set up when the listener closes, and
    /// traps when it then becomes active; those still in the backlog are systemd's to hand on.
    private static func stopAccepting(_ channel: any Channel, accepted: AcceptCounter, delivered activity: Activity) async {
        try? await channel.setOption(.autoRead, value: false).get()
        let clock = ContinuousClock()
        // A setup that failed never arrives; do not wait for it past a bound.
        let deadline = clock.now + .seconds(2)
        while activity.deliveredCount < accepted.count, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// A TCP peer of the metrics listener has no credentials; it is nobody, and may only scrape.
    static let metricsPeer = Peer(pid: 0, uid: UInt32.max, gid: UInt32.max)

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, activity: Activity, metricsOnly: Bool = false) async {
        let peer: Peer
        do {
            peer = metricsOnly ? Self.metricsPeer : try await Self.peerCredentials(connection.channel)
        } catch {
            logger.warning("cannot read peer credentials; closing", metadata: ["error": "\(error)"])
            try? await connection.channel.close()
            return
        }
        let deadline = RequestDeadline(channel: connection.channel, timeout: configuration.requestTimeout)
        deadline.arm()
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body: [UInt8] = []
                var tooLarge = false
                var bodyLimit = configuration.maximumBodySize
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        body.removeAll(keepingCapacity: true)
                        bodyLimit = self.bodyLimit(requestHead, peer: peer)
                        tooLarge = Self.declaredLength(requestHead).map { $0 > bodyLimit } ?? false
                    case .body(let chunk):
                        if body.count + chunk.readableBytes > bodyLimit { tooLarge = true }
                        if !tooLarge { body += chunk.readableBytesView }
                    case .end:
                        deadline.disarm()
                        activity.answered()
                        let began = ContinuousClock.now
                        guard let requestHead = head else { continue }
                        let request = APIRequest(method: requestHead.method.rawValue, target: requestHead.uri, body: body,
                                                 contentType: requestHead.headers.first(name: "content-type"), peer: peer)
                        let upgrade = Self.upgradeRequested(requestHead)
                        let response: APIResponse
                        if tooLarge {
                            response = .error(status: 413, code: "invalid_input", message: "request body larger than \(bodyLimit) bytes")
                        } else if metricsOnly {
                            response = await router.routeMetricsOnly(request)
                        } else {
                            switch await router.route(request) {
                            case .answer(let answer):
                                response = answer
                            case .events:
                                try await streamEvents(on: connection.channel, deadline: deadline, version: requestHead.version, to: outbound)
                                return
                            case .logs(let name, let logRequest):
                                try await streamLogs(name, logRequest, deadline: deadline, version: requestHead.version, to: outbound)
                                return
                            case .exec(let name, let spec):
                                try await serveExec(request, name, spec, upgrade: upgrade, on: connection.channel, version: requestHead.version, to: outbound)
                                return
                            }
                        }
                        logger.debug("request", metadata: ["method": "\(requestHead.method.rawValue)", "uri": "\(requestHead.uri)",
                                                           "status": "\(response.status)", "peer": "\(peer)"])
                        // A body we refused to read leaves the stream unusable, and the parser reads
                        // nothing after a request that asked to switch protocols: close after answering.
                        let keepAlive = requestHead.isKeepAlive && !tooLarge && upgrade == nil
                        try await Self.write(response, keepAlive: keepAlive, version: requestHead.version, to: outbound)
                        router.metrics.record(route: Self.routeName(request, metricsOnly: metricsOnly), method: Self.methodLabel(request.method),
                                              status: response.status, seconds: (ContinuousClock.now - began).seconds)
                        if !keepAlive { return }
                        head = nil
                        deadline.arm()
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)", "peer": "\(peer)"])
        }
    }

    /// Server-sent events until the client goes away: machined's changes as they happen.
    /// A heartbeat comment every 15 s finds dead clients, so the request timeout is lifted.
    private func streamEvents(on channel: any Channel, deadline: RequestDeadline, version: HTTPVersion,
                              to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        deadline.disarm()
        let (frames, stop) = await router.eventFrames()
        defer { stop() }
        try await Self.stream(frames, contentType: "text/event-stream", version: version, to: outbound)
    }

    /// A machine's journal as JSON lines until it ends or the client goes away; the request
    /// timeout is lifted once it starts.
    private func streamLogs(_ name: MachineName, _ request: LogRequest, deadline: RequestDeadline, version: HTTPVersion,
                            to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        let chunks: AsyncStream<String>
        switch await router.startLogs(name, request) {
        case .refused(let refusal):
            try await Self.write(refusal, keepAlive: false, version: version, to: outbound)
            return
        case .started(let started):
            chunks = started
        }
        deadline.disarm()
        try await Self.stream(chunks, contentType: "application/x-ndjson", version: version, to: outbound)
    }

    /// A 200 whose body is `chunks` as they come, the connection closed at their end.
    private static func stream(_ chunks: AsyncStream<String>, contentType: String, version: HTTPVersion,
                               to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Cache-Control", value: "no-cache")
        headers.add(name: "Connection", value: "close")
        headers.add(name: APILevel.header, value: APILevel.current)
        try await outbound.write(.head(HTTPResponseHead(version: version, status: .ok, headers: headers)))
        for await chunk in chunks {
            try await outbound.write(.body(.byteBuffer(ByteBuffer(string: chunk))))
        }
        try await outbound.write(.end(nil))
    }

    /// An exec stream: the command started and the connection switched to frames until it
    /// ends, or the JSON error any other route gives. The connection stays open (and so the
    /// daemon busy) for as long as the stream lasts; the request deadline is already lifted.
    private func serveExec(_ request: APIRequest, _ name: MachineName, _ spec: ExecSpec, upgrade: String?, on channel: any Channel,
                           version: HTTPVersion, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        let process: any GuestProcess
        switch await router.startExec(name, spec, upgrade: upgrade) {
        case .refused(let refusal):
            logger.debug("request", metadata: ["method": "POST", "uri": "\(request.path)", "status": "\(refusal.status)", "peer": "\(request.peer)"])
            try await Self.write(refusal, keepAlive: false, version: version, to: outbound)
            return
        case .started(let started):
            process = started
        }
        logger.info("exec stream", metadata: ["uri": "\(request.path)", "peer": "\(request.peer)"])
        do {
            try await ExecRelay.run(on: channel, process: process, logger: logger)
        } catch let error as ExecRelay.SetupError {
            try await Self.write(.error(error.error), keepAlive: false, version: version, to: outbound)
        }
        logger.debug("exec stream ended", metadata: ["uri": "\(request.path)", "peer": "\(request.peer)"])
    }

    static func methodLabel(_ method: String) -> String {
        ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"].contains(method) ? method : "other"
    }

    /// The endpoint's name for the request counters; a path that is none is `unknown`, so a
    /// scanner's made-up paths cannot grow the label set.
    static func routeName(_ request: APIRequest, metricsOnly: Bool) -> String {
        if metricsOnly { return request.path == "/metrics" || request.path == Endpoint.metrics.template ? Endpoint.metrics.rawValue : "unknown" }
        if case .found(let endpoint, _) = Endpoint.match(method: request.method, path: request.path) { return endpoint.rawValue }
        return "unknown"
    }

    /// The protocol a request asks to switch to: its `Upgrade`, with `Connection: Upgrade`.
    static func upgradeRequested(_ head: HTTPRequestHead) -> String? {
        let connection = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connection.contains("upgrade") else { return nil }
        return head.headers.first(name: "upgrade")
    }

    /// The largest body `head` may bring: a manifest route's own limit when the peer may use
    /// it, so nobody else can make the daemon buffer megabytes.
    func bodyLimit(_ head: HTTPRequestHead, peer: Peer) -> Int {
        let path = APIRequest(method: head.method.rawValue, target: head.uri, peer: peer).path
        guard case .found(let endpoint, _) = Endpoint.match(method: head.method.rawValue, path: path),
              Router.manifestRoutes.contains(endpoint), router.refusal(endpoint, peer: peer) == nil else {
            return configuration.maximumBodySize
        }
        return max(configuration.maximumBodySize, configuration.maximumManifestBodySize)
    }

    static func declaredLength(_ head: HTTPRequestHead) -> Int? {
        head.headers.first(name: "content-length").flatMap { Int($0) }
    }

    static func write(_ response: APIResponse, keepAlive: Bool, version: HTTPVersion,
                      to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        if !response.headers.contains(where: { $0.0.lowercased() == "content-type" }) {
            headers.add(name: "Content-Type", value: "application/json")
        }
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        headers.add(name: APILevel.header, value: APILevel.current)
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        // One hand-over to the event loop for the whole response.
        try await outbound.write(contentsOf: [.head(head), .body(.byteBuffer(ByteBuffer(bytes: response.body))), .end(nil)])
    }

    /// SO_PEERCRED: the connecting process's pid, uid and gid as the kernel recorded them at connect.
    static func peerCredentials(_ channel: any Channel) async throws -> Peer {
        guard let provider = channel as? any SocketOptionProvider else { throw NspawnError.failed("the channel has no socket") }
        let credentials: PeerCredentialsValue = try await provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED)).get()
        return Peer(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }
}

/// The layout of `struct ucred`, which glibc declares only under _GNU_SOURCE.
struct PeerCredentialsValue: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// Answers a request the HTTP parser rejected with a JSON 400, like every other error, and
/// closes the connection: after a parse error the stream cannot be trusted.
final class JSONProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let body = APIResponse.error(status: 400, code: "invalid_input", message: "malformed HTTP request: \(error)").body
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        headers.add(name: APILevel.header, value: APILevel.current)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Closes the connection unless a whole request arrives in time, from the connection's start
/// or the last response: a silent client and one that trickles a byte now and then are both
/// cut off. It is disarmed while a request is served, however long that takes (a stop may
/// wait its whole timeout), and for an event stream, whose heartbeats find dead clients.
final class RequestDeadline: Sendable {
    private let channel: any Channel
    private let timeout: TimeAmount
    private let scheduled = NIOLockedValueBox<Scheduled<Void>?>(nil)

    init(channel: any Channel, timeout: TimeAmount) {
        self.channel = channel
        self.timeout = timeout
    }

    func arm() {
        let channel = channel
        let task = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        scheduled.withLockedValue { $0?.cancel(); $0 = task }
    }

    func disarm() {
        scheduled.withLockedValue { $0?.cancel(); $0 = nil }
    }
}

/// Open connections and when the last one closed.
actor Activity {
    private(set) var open = 0
    private var lastClosed = ContinuousClock.now
    private nonisolated let requestCount = Atomic<Int>(0)

    /// Requests answered so far, counted and read without waiting for the actor.
    nonisolated var requests: Int { requestCount.load(ordering: .relaxed) }
    nonisolated func answered() { requestCount.add(1, ordering: .relaxed) }

    private nonisolated let deliveredConnections = Atomic<Int>(0)

    /// Connections the accept loop has taken, whether served or refused.
    nonisolated var deliveredCount: Int { deliveredConnections.load(ordering: .relaxed) }
    nonisolated func delivered() { deliveredConnections.add(1, ordering: .relaxed) }

    func opened() { open += 1 }

    func closed() {
        open -= 1
        lastClosed = .now
    }

    func idleFor(longerThan timeout: Duration) -> Bool {
        open == 0 && ContinuousClock.now - lastClosed >= timeout
    }
}

/// Counts the connections the listener accepted, first in its pipeline.
final class AcceptCounter: ChannelInboundHandler, Sendable {
    typealias InboundIn = any Channel
    private let accepted = Atomic<Int>(0)

    var count: Int { accepted.load(ordering: .relaxed) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        accepted.add(1, ordering: .relaxed)
        context.fireChannelRead(data)
    }
}
