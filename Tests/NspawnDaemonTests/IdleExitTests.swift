import Foundation
import Logging
import NspawnAPI
@testable import NspawnDaemon
import NspawnKit
import SystemPackage
import Synchronization
import Testing

/// An idle exit never drops a request. The listening socket outlives each nspawnd, as
/// systemd's copy does, and a new nspawnd takes it over as soon as the old one exits (systemd
/// would start it on the next connection). Requests come at gaps around the idle timeout, so
/// some land just as a daemon decides to exit.
@Suite("Idle exit", .timeLimit(.minutes(2)))
struct IdleExitTests {
    final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    @Test func noRequestIsLostWhenTheDaemonExitsAsIdle() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnd-idle-\(UUID().uuidString).sock").path
        let listener = try UnixSocket.listen(path: path, mode: 0o600)
        defer {
            try? listener.close()
            unlink(path)
        }
        let finished = Flag()
        let daemons = Task {
            var generations = 0
            while !finished.value.load(ordering: .relaxed) {
                let socket = try listener.duplicate()
                let server = DaemonServer(configuration: DaemonServer.Configuration(idleTimeout: .milliseconds(100)),
                                          router: Router(service: RecordingService()),
                                          logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
                try await server.run(listeningSocket: socket)
                generations += 1
            }
            return generations
        }
        let client = APIClient(transport: StreamTransport(connector: UnixSocketConnector(path: path)))
        // Gaps below, at and above the moment a daemon goes idle (100 ms, checked every 250 ms).
        let gaps = [0, 90, 240, 330, 360, 20, 400, 300, 350, 380]
        var failures: [String] = []
        for request in 0..<60 {
            try await Task.sleep(for: .milliseconds(gaps[request % gaps.count]))
            do { _ = try await client.list(ListRequest()) } catch { failures.append("request \(request): \(error)") }
        }
        finished.value.store(true, ordering: .relaxed)
        // The last daemon goes idle on its own, and no new one starts.
        let generations = try await daemons.value
        #expect(failures == [])
        // Otherwise no daemon ever went idle, and this test saw nothing of an exit.
        #expect(generations >= 2)
        print("idle exit: 60 requests over \(generations) daemons, \(failures.count) lost")
    }
}
