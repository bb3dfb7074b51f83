import Foundation
import Logging
import NspawnAPI
@testable import NspawnDaemon
import NspawnKit
import SystemPackage
import Testing

/// nspawnd's exec stream end to end on this host: a real server on a unix socket, the real
/// client, and a local program where a machine's command would be (the recorder's `exec`).
/// What runs in machines is the testbed's to check; this is the relay.
@Suite("Exec stream relay", .timeLimit(.minutes(2)))
struct ExecRelayTests {
    /// A daemon on a socket of its own, exiting once idle for `idle`.
    final class TestDaemon: Sendable {
        let path: String
        let service = RecordingService()
        let task: Task<Void, any Error>

        /// Idle from its start too: a test starts it when it is ready to connect. Without an
        /// idle timeout it serves until `cancelled()`.
        init(idle: Duration? = .seconds(1)) throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnd-exec-\(UUID().uuidString).sock").path
            let listener = try UnixSocket.listen(path: path, mode: 0o600)
            let server = DaemonServer(configuration: DaemonServer.Configuration(idleTimeout: idle),
                                      router: Router(service: service), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            let path = path
            task = Task {
                defer { unlink(path) }
                try await server.run(listeningSocket: listener)
            }
        }

        var client: APIClient { APIClient(transport: StreamTransport(connector: UnixSocketConnector(path: path))) }

        /// Waits for the daemon to exit (idle), as a test's last step.
        func stopped() async throws {
            try await task.value
        }

        /// Ends a daemon that has no idle timeout, as a test's last step.
        func cancelled() async throws {
            task.cancel()
            do {
                try await task.value
            } catch is CancellationError {}
        }
    }

    struct Ran {
        var output: [UInt8]
        var errors: [UInt8]
        var outcome: ExitOutcome
    }

    /// What a CLI's attach loop does: feeds stdin and ends it, reads both outputs to their end
    /// at the same time, then waits.
    static func run(_ process: any GuestProcess, stdin: [UInt8]? = nil) async throws -> Ran {
        let writer = Task {
            try await OSThread.run { () throws(NspawnError) in
                guard let input = process.input else { return }
                if let stdin {
                    do { _ = try stdin.withUnsafeBytes { try input.writeAll($0) } } catch { throw .failed("cannot write stdin: \(error)") }
                }
                process.closeInput()
            }
        }
        async let output = OSThread.run { () throws(NspawnError) in try readAll(process.output) }
        async let errors = OSThread.run { () throws(NspawnError) -> [UInt8] in
            guard let errorOutput = process.errorOutput else { return [] }
            return try readAll(errorOutput)
        }
        let ran = Ran(output: try await output, errors: try await errors, outcome: try await OSThread.run { () throws(NspawnError) in try process.wait() })
        try await writer.value
        process.close()
        return ran
    }

    @Test(arguments: [("exit 0", ExitOutcome.exited(0)), ("exit 3", .exited(3)), ("kill -KILL $$", .signaled(9))])
    func theOutcomeIsTheCommands(_ script: String, _ expected: ExitOutcome) async throws {
        let daemon = try TestDaemon()
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", script]))
        let ran = try await Self.run(process)
        #expect(ran.outcome == expected)
        #expect(await daemon.service.calls.filter { $0 != .events } == [.exec("web", ExecSpec(command: ["/bin/sh", "-c", script]))])
        try await daemon.stopped()
    }

    /// 10 MB through `cat` and back unchanged, while stderr arrives on its own.
    @Test func stdinComesBackWholeAndStderrStaysApart() async throws {
        var data = [UInt8](repeating: 0, count: 10 * 1024 * 1024)
        var seed: UInt64 = 0x9E3779B97F4A7C15
        for index in data.indices {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            data[index] = UInt8(truncatingIfNeeded: seed >> 33)
        }
        let spec = ExecSpec(command: ["/bin/sh", "-c", "echo before >&2; cat; echo after >&2; exit 4"], interactive: true)
        let daemon = try TestDaemon()
        let clock = ContinuousClock()
        let start = clock.now
        let process = try await daemon.client.exec(MachineName("web"), spec)
        let ran = try await Self.run(process, stdin: data)
        let elapsed = clock.now - start
        #expect(ran.output.count == data.count)
        #expect(ran.output == data)
        #expect(String(decoding: ran.errors, as: UTF8.self) == "before\nafter\n")
        #expect(ran.outcome == .exited(4))
        print("exec stream: 10 MiB through cat and back in \(elapsed)")
        try await daemon.stopped()
    }

    /// Output of every size, cut into frames no larger than the limit, in order.
    @Test func largeOutputIsCutIntoFramesAndArrivesInOrder() async throws {
        let daemon = try TestDaemon()
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", "seq 1 200000"]))
        let ran = try await Self.run(process)
        let expected = (1...200_000).map(String.init).joined(separator: "\n") + "\n"
        #expect(ran.output == Array(expected.utf8))
        #expect(ran.outcome == .exited(0))
        try await daemon.stopped()
    }

    /// A command that writes and ends before the switch: what it wrote is read then and sent after the 101.
    @Test func outputWrittenBeforeTheSwitchIsNotLost() async throws {
        // Twenty connections one after another, so this daemon never goes idle: with no systemd
        // here to hold the socket, a connection after an idle exit is refused, and on a loaded
        // runner a gap between two has lasted over a second.
        let daemon = try TestDaemon(idle: nil)
        for _ in 0..<20 {
            let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", "echo early; echo err >&2; exit 2"]))
            let ran = try await Self.run(process)
            #expect(String(decoding: ran.output, as: UTF8.self) == "early\n" && String(decoding: ran.errors, as: UTF8.self) == "err\n")
            #expect(ran.outcome == .exited(2))
        }
        try await daemon.cancelled()
    }

    /// A client that reads slowly still gets every byte before the exit: nspawnd closes the
    /// connection once the socket has taken the last frame, not when the command ends.
    @Test func aSlowReaderStillGetsEverything() async throws {
        let daemon = try TestDaemon()
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["head", "-c", "3000000", "/dev/zero"]))
        let count = try await OSThread.run { () throws(NspawnError) -> Int in
            var total = 0
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let read: Int
                do { read = try chunk.withUnsafeMutableBytes { try process.output.read(into: $0) } } catch { throw .failed("\(error)") }
                if read == 0 { return total }
                total += read
                usleep(400)
            }
        }
        #expect(count == 3_000_000)
        #expect(try await OSThread.run { () throws(NspawnError) in try process.wait() } == .exited(0))
        process.close()
        try await daemon.stopped()
    }

    @Test func resizeAndSignalFramesReachTheCommand() async throws {
        let daemon = try TestDaemon()
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", "echo ready; exec sleep 30"]))
        var line = [UInt8](repeating: 0, count: 6)
        _ = try line.withUnsafeMutableBytes { try process.output.read(into: $0) }
        try process.resize(TerminalSize(rows: 40, columns: 120))
        try process.signal(.term)
        let ran = try await Self.run(process)
        #expect(ran.outcome == .signaled(SIGTERM))
        let program = try #require(await daemon.service.started)
        #expect(program.sizes == [TerminalSize(rows: 40, columns: 120)])
        #expect(program.signals == [SIGTERM])
        try await daemon.stopped()
    }

    /// A client that goes away gets the command a HUP, and the daemon reaps it.
    @Test func aClientThatHangsUpGetsTheCommandHungUpOnAndReaped() async throws {
        let daemon = try TestDaemon()
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnd-hup-\(UUID().uuidString)").path
        defer { unlink(marker) }
        let script = "trap 'echo hup > \(marker); exit 7' HUP; echo ready; while :; do sleep 0.05; done"
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", script], interactive: true))
        var line = [UInt8](repeating: 0, count: 6)
        _ = try line.withUnsafeMutableBytes { try process.output.read(into: $0) }
        process.close()
        let program = try #require(await daemon.service.started)
        for _ in 0..<100 where program.outcome == nil { try await Task.sleep(for: .milliseconds(50)) }
        #expect(program.outcome == .exited(7))
        #expect((try? String(contentsOfFile: marker, encoding: .utf8)) == "hup\n")
        // HUP first; on a loaded machine the daemon's KILL 10 s later may also land before the
        // wait thread has reaped the already-exited command, which is harmless.
        #expect(program.signals.first == SIGHUP && program.signals.allSatisfy { $0 == SIGHUP || $0 == SIGKILL }, "\(program.signals)")
        try await daemon.stopped()
    }

    /// An open stream is not idleness: the daemon waits for it however long it lasts.
    @Test func aLiveStreamKeepsTheDaemonUp() async throws {
        let daemon = try TestDaemon(idle: .milliseconds(300))
        let process = try await daemon.client.exec(MachineName("web"), ExecSpec(command: ["/bin/sh", "-c", "sleep 1; echo still here"]))
        let ran = try await Self.run(process)
        #expect(String(decoding: ran.output, as: UTF8.self) == "still here\n")
        #expect(ran.outcome == .exited(0))
        try await daemon.stopped()
    }

    /// Before the switch the route answers as every other: JSON errors with their categories.
    @Test func refusalsBeforeTheSwitchAreJSONErrors() async throws {
        let daemon = try TestDaemon()
        let missing = RecordingService(failure: .noSuchMachine("gone"))
        // Group root: a peer whose primary group is 0 is an operator, not root.
        let router = Router(service: missing, authorizer: Authorizer(group: "root"))
        let peer = Peer(pid: 1, uid: 0, gid: 0)
        func start(_ path: String, body: String = #"{"command": ["true"]}"#, upgrade: String? = ExecStream.upgradeToken,
                   peer: Peer = peer, router: Router = router) async -> APIResponse? {
            let request = APIRequest(method: "POST", target: path, body: Array(body.utf8), contentType: "application/json", peer: peer)
            switch await router.startExec(request, upgrade: upgrade) {
            case .started(let process):
                process.close()
                return nil
            case .refused(let response):
                return response
            }
        }
        let notFound = await start("/v1/machines/gone/exec")
        #expect(notFound?.status == 404)
        let operatorPeer = Peer(pid: 1, uid: 4242, gid: 0)
        let forbidden = await start("/v1/machines/web/exec", peer: operatorPeer)
        #expect(forbidden?.status == 403)
        let refusal = String(decoding: forbidden?.body ?? [], as: UTF8.self)
        #expect(refusal.contains("running commands in machines needs root"))
        #expect(await start("/v1/machines/web/exec", upgrade: nil)?.status == 400)
        #expect(await start("/v1/machines/web/exec", upgrade: "websocket")?.status == 400)
        #expect(await start("/v1/machines/web/exec", body: #"{"command": "true"}"#)?.status == 400)
        #expect(await start("/v1/machines/.hidden/exec")?.status == 400)
        let conflict = Router(service: RecordingService(failure: .notRunning("web")), authorizer: Authorizer(group: "root"))
        #expect(await start("/v1/machines/web/exec", router: conflict)?.status == 409)

        // Over the socket: a request without the upgrade (what schemathesis sends) is a 400 that names it.
        let response = try await StreamTransport(connector: UnixSocketConnector(path: daemon.path)).exchange(
            HTTPRequestMessage(method: "POST", target: "/v1/machines/web/exec", body: Array(#"{"command": ["true"]}"#.utf8)), wait: .zero)
        #expect(response.status == 400)
        #expect(String(decoding: response.body, as: UTF8.self).contains("Upgrade: \(ExecStream.upgradeToken)"))
        #expect(await daemon.service.calls.filter { $0 != .events }.isEmpty)
        try await daemon.stopped()
    }

    /// A client that breaks the protocol hears why in an error frame, and the command goes.
    @Test func aBrokenClientGetsAnErrorFrameAndTheCommandIsHungUpOn() async throws {
        let daemon = try TestDaemon()
        let connection = try UnixSocket.connect(path: daemon.path)
        defer { try? connection.close() }
        let body = #"{"command": ["/bin/sh", "-c", "sleep 30"], "interactive": true}"#
        let request = "POST /v1/machines/web/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: \(ExecStream.upgradeToken)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        try connection.sendAll(Array(request.utf8))
        var received: [UInt8] = []
        let headEnd = Array("\r\n\r\n".utf8)
        while !received.contains(headEnd) { received += try await OSThread.run { () throws(NspawnError) in try readSome(connection) } }
        let head = String(decoding: received, as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(head.contains("Upgrade: \(ExecStream.upgradeToken)\r\n"))
        try connection.sendAll([9, 0, 0, 0, 0])
        let rest = try await OSThread.run { () throws(NspawnError) in try readAll(connection) }
        var decoder = ExecFrameDecoder(from: .server)
        decoder.feed(rest)
        let frame = try decoder.next()
        #expect(frame?.nspawnError?.category == .invalidInput)
        #expect(frame?.nspawnError?.description.contains("unknown frame type 9") == true)
        let started = await daemon.service.started
        let program = try #require(started)
        for _ in 0..<100 where program.outcome == nil { try await Task.sleep(for: .milliseconds(50)) }
        #expect(program.outcome == .signaled(SIGHUP))
        try await daemon.stopped()
    }

    /// A client we did not write (Python's socket module, nothing else) reads the documented
    /// frames: stdout, stderr, stdin echoed, and the exit.
    @Test func anIndependentClientSpeaksTheDocumentedProtocol() async throws {
        let daemon = try TestDaemon()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/exec-stream-client").path
        let (termination, output) = try await OSThread.run { () throws(NspawnError) in
            try ChildProcess.run(["python3", script, daemon.path, "web"])
        }
        #expect(termination == .exited(0), "\(output)")
        #expect(output.contains("ok"), "\(output)")
        try await daemon.stopped()
    }
}

func readSome(_ descriptor: FileDescriptor) throws(NspawnError) -> [UInt8] {
    var chunk = [UInt8](repeating: 0, count: 65536)
    do {
        let count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0, retryOnInterrupt: true) }
        guard count > 0 else { throw NspawnError.failed("end of stream") }
        return Array(chunk[..<count])
    } catch let error as NspawnError {
        throw error
    } catch {
        throw .failed("cannot read: \(error)")
    }
}
