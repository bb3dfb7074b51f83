import Foundation
import NspawnAPI
import NspawnKit
import SystemPackage
import Testing

/// The client against servers that misbehave on a real unix socket: each answer ends in a
/// clear error within the client's patience, never a hang or a crash.
@Suite("Hostile servers", .timeLimit(.minutes(1)))
struct HostileServerTests {
    /// Serves one connection: reads the request, sends `answer`, then stays silent for
    /// `linger` or streams `endless` bytes until the client leaves.
    static func serve(_ answer: [UInt8], linger: Duration = .zero, endless: Bool = false) throws -> (path: String, done: Thread) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-hostile-\(UUID().uuidString).sock").path
        let listener = try UnixSocket.listen(path: path, mode: 0o600)
        let thread = Thread {
            defer {
                try? listener.close()
                unlink(path)
            }
            let fd = accept(listener.rawValue, nil, nil)
            guard fd >= 0 else { return }
            let connection = FileDescriptor(rawValue: fd)
            defer { try? connection.close() }
            var request = [UInt8](repeating: 0, count: 65536)
            _ = try? request.withUnsafeMutableBytes { try connection.read(into: $0) }
            // MSG_NOSIGNAL: a client that leaves must not take the test process down with SIGPIPE.
            _ = try? connection.sendAll(answer)
            if endless {
                let chunk = [UInt8](repeating: 0x78, count: 65536)
                while (try? connection.sendAll(chunk)) != nil {}
            }
            Thread.sleep(forTimeInterval: Double(linger.components.seconds))
        }
        thread.start()
        return (path, thread)
    }

    static func list(_ path: String, patience: Duration = .seconds(2)) async -> (NspawnError?, Duration) {
        let client = APIClient(transport: StreamTransport(connector: UnixSocketConnector(path: path), patience: patience))
        let clock = ContinuousClock()
        let start = clock.now
        do {
            _ = try await client.list(ListRequest())
            return (nil, clock.now - start)
        } catch {
            return (error as? NspawnError, clock.now - start)
        }
    }

    static let head = "HTTP/1.1 200 OK\r\nNspawnd-Api: v1\r\nContent-Type: application/json\r\n"

    @Test(arguments: [
        ("garbage", "garbage\r\n\r\n", "not HTTP"),
        ("cut short", head + "Content-Length: 1000\r\n\r\n[{\"name", "closed the connection mid-body"),
        ("closed at once", "", "without answering"),
        ("bad length", head + "Content-Length: -5\r\n\r\n", "Content-Length"),
        ("bad chunk", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        ("not the list", head + "Content-Length: 14\r\n\r\n{\"name\": \"x\"}\n", "does not decode"),
    ])
    func malformedAnswersFailClearly(_ what: String, _ answer: String, _ expected: String) async throws {
        let server = try Self.serve(Array(answer.utf8))
        let (error, _) = await Self.list(server.path)
        let failure = try #require(error, "\(what) was accepted")
        #expect(failure.category == .failure, "\(what): \(failure)")
        #expect(failure.description.contains(expected), "\(what): \(failure)")
        #expect(failure.description.contains(server.path))
    }

    @Test func anotherAPILevelIsRefused() async throws {
        for answer in ["HTTP/1.1 200 OK\r\nNspawnd-Api: v9\r\nContent-Length: 2\r\n\r\n[]", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"] {
            let server = try Self.serve(Array(answer.utf8))
            let (error, _) = await Self.list(server.path)
            #expect(error?.category == .unsupportedAPI, "\(String(describing: error))")
        }
    }

    @Test func aSilentServerIsLeftAfterThePatience() async throws {
        let server = try Self.serve(Array((Self.head + "Content-Length: 10\r\n\r\n").utf8), linger: .seconds(20))
        let (error, waited) = await Self.list(server.path, patience: .seconds(1))
        #expect(error?.description.contains("sent nothing for 1 s") == true, "\(String(describing: error))")
        #expect(waited < .seconds(10))
    }

    @Test func anEndlessBodyIsCutAtItsLimit() async throws {
        let server = try Self.serve(Array((Self.head + "\r\n").utf8), endless: true)
        let (error, _) = await Self.list(server.path)
        #expect(error?.description.contains("larger than 64 MiB") == true, "\(String(describing: error))")
    }

    @Test func anEndlessHeaderLineIsCut() async throws {
        let server = try Self.serve(Array(("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 100_000)).utf8))
        let (error, _) = await Self.list(server.path)
        #expect(error?.description.contains("header line longer than") == true, "\(String(describing: error))")
    }
}
