import Foundation
import Testing
@testable import NspawnDaemon
import NspawnKit

/// Records what the router asked for; plain values, no bus.
actor RecordingService: MachineService {
    var calls: [String] = []

    func record(_ call: String) { calls.append(call) }

    nonisolated func list(includeHidden: Bool) async throws -> [MachineSummary] {
        await record("list")
        return [MachineSummary(name: "web", state: .running, imageType: "directory"), MachineSummary(name: "adhoc", state: .running)]
    }
    nonisolated func status(_ name: MachineName) async throws -> MachineStatus {
        await record("status \(name)")
        throw NspawnError.noSuchImage(name.rawValue)
    }
    nonisolated func start(_ name: MachineName) async throws { await record("start \(name)") }
    nonisolated func stop(_ name: MachineName, timeout: Duration) async throws { await record("stop \(name) \(timeout)") }
    nonisolated func reboot(_ name: MachineName) async throws { await record("reboot \(name)") }
    nonisolated func terminate(_ name: MachineName) async throws { await record("terminate \(name)") }
    nonisolated func kill(_ name: MachineName, signal: UnixSignal, whom: KillWhom) async throws { await record("kill \(name) \(signal.number) \(whom)") }
    nonisolated func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws { await record("remove \(name) \(force)") }
    nonisolated func rename(_ name: MachineName, to newName: MachineName) async throws { await record("rename \(name) \(newName)") }
    nonisolated func clone(_ name: MachineName, to newName: MachineName, readOnly: Bool) async throws { await record("clone \(name) \(newName) \(readOnly)") }
}

@Suite("Router")
struct RouterTests {
    static let root = Peer(pid: 1, uid: 0, gid: 0)
    /// No such group exists, so only root is privileged.
    static let authorizer = Authorizer(group: "nspawnctl-test-no-such-group")

    func handle(_ method: String, _ path: String, body: String = "", peer: Peer = root,
                contentType: String? = "application/json") async -> (APIResponse, RecordingService) {
        let service = RecordingService()
        let router = Router(service: service, authorizer: Self.authorizer)
        let response = await router.handle(APIRequest(method: method, path: path, body: Array(body.utf8), contentType: contentType, peer: peer))
        return (response, service)
    }

    func errorCode(_ response: APIResponse) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: [String: String]]
        return try #require(object?["error"]?["code"])
    }

    @Test func versionIsOpenToEveryone() async throws {
        let (response, _) = await handle("GET", "/v1/version", peer: Peer(pid: 2, uid: 1000, gid: 1000))
        #expect(response.status == 200)
        #expect(String(decoding: response.body, as: UTF8.self).contains("\"api\":\"v1\""))
    }

    @Test func outsidersGet403AndNothingIsCalled() async throws {
        let outsider = Peer(pid: 2, uid: 1000, gid: 1000)
        for (method, path) in [("GET", "/v1/machines"), ("POST", "/v1/machines/web/start"), ("DELETE", "/v1/images/web")] {
            let (response, service) = await handle(method, path, peer: outsider)
            #expect(response.status == 403)
            #expect(try errorCode(response) == "permission_denied")
            #expect(await service.calls.isEmpty)
        }
    }

    @Test func actionsReachTheLibraryWithValidatedArguments() async throws {
        let (stop, stopService) = await handle("POST", "/v1/machines/web/stop", body: #"{"timeout": 2.5}"#)
        #expect(stop.status == 200)
        #expect(await stopService.calls == ["stop web 2.5 seconds"])
        let (kill, killService) = await handle("POST", "/v1/machines/web/kill", body: #"{"signal": "HUP", "whom": "leader"}"#)
        #expect(kill.status == 200)
        #expect(await killService.calls == ["kill web 1 leader"])
        let (clone, cloneService) = await handle("POST", "/v1/images/web/clone", body: #"{"name": "web2", "read_only": true}"#)
        #expect(clone.status == 201)
        #expect(await cloneService.calls == ["clone web web2 true"])
        let (images, _) = await handle("GET", "/v1/images")
        #expect(String(decoding: images.body, as: UTF8.self).contains("\"web\"") && !String(decoding: images.body, as: UTF8.self).contains("adhoc"))
    }

    static let badRequests: [(String, String, String, String?, Int)] = [
        ("GET", "/v1/machines/a..b", "", "application/json", 400),
        ("POST", "/v1/machines/web/stop", #"{"timeout": -1}"#, "application/json", 400),
        ("POST", "/v1/machines/web/stop", #"{"timeout": 1e300}"#, "application/json", 400),
        ("POST", "/v1/machines/web/stop", "{", "application/json", 400),
        ("POST", "/v1/machines/web/kill", #"{"signal": "SIGNOPE"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/kill", #"{"whom": "everyone"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/fly", "", "application/json", 404),
        ("POST", "/v1/images/web/clone", "", "application/json", 400),
        ("POST", "/v1/images/web/clone", #"{"name": "../etc"}"#, "application/json", 400),
        ("POST", "/v1/images/web/clone", #"{"name": "x"}"#, "text/plain", 415),
        ("GET", "/v1/machines/web/extra/segments", "", nil, 404),
        ("GET", "/machines", "", nil, 404),
        ("PATCH", "/v1/machines", "", nil, 405),
        ("GET", "/v1/machines/web", "", nil, 404),
        // An explicit null is no value: "url": null beside a recipe is not "no url".
        ("POST", "/v1/images", #"{"name": "x", "url": null, "recipe": "archlinux"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/kill", #"{"signal": null}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "recipe": "no-such-recipe"}"#, "application/json", 404),
        ("POST", "/v1/images", #"{"name": "x", "url": "http://"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "url": "HTTPS://"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "url": "http://h/a", "signature": "/s"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "url": "http://h/a", "mirror": "http://m"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "url": "http://h/a", "verify": false}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "recipe": "archlinux", "verify": false, "checksum": "sha256:\#(String(repeating: "0", count: 64))"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "recipe": "archlinux", "checksum": "md5:0"}"#, "application/json", 400),
        ("POST", "/v1/images", #"{"name": "x", "recipe": "\#(String(repeating: "r", count: 65))"}"#, "application/json", 400),
    ]

    @Test func aRefusedMethodNamesTheAllowedOnes() async throws {
        for (method, path, allowed) in [("PUT", "/v1/images", "GET, POST"), ("POST", "/v1/machines/web", "GET"),
                                        ("GET", "/v1/images/web", "DELETE"), ("PATCH", "/v1/operations/abc", "GET, DELETE")] {
            let (response, _) = await handle(method, path)
            #expect(response.status == 405)
            #expect(response.headers.first { $0.0 == "Allow" }?.1 == allowed, "\(method) \(path)")
        }
    }

    @Test(arguments: badRequests)
    func badRequestsGetAnErrorAndCallNothingThatChanges(_ method: String, _ path: String, _ body: String, _ contentType: String?, _ status: Int) async throws {
        let (response, service) = await handle(method, path, body: body, contentType: contentType)
        #expect(response.status == status, "\(method) \(path) \(body)")
        #expect(!(try errorCode(response)).isEmpty)
        let changes = await service.calls.filter { !$0.hasPrefix("status") && !$0.hasPrefix("list") }
        #expect(changes.isEmpty)
    }
}

/// Counts listings and holds each one until released, so calls can overlap on purpose.
actor SlowListing: MachineService {
    var listings = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func release() {
        for continuation in waiting { continuation.resume() }
        waiting.removeAll()
    }

    var pending: Int { waiting.count }

    func list(includeHidden: Bool) async throws -> [MachineSummary] {
        listings += 1
        let number = listings
        await withCheckedContinuation { waiting.append($0) }
        return [MachineSummary(name: "listing-\(number)", state: .running)]
    }
    func status(_ name: MachineName) async throws -> MachineStatus { throw NspawnError.noSuchImage(name.rawValue) }
    func start(_ name: MachineName) async throws {}
    func stop(_ name: MachineName, timeout: Duration) async throws {}
    func reboot(_ name: MachineName) async throws {}
    func terminate(_ name: MachineName) async throws {}
    func kill(_ name: MachineName, signal: UnixSignal, whom: KillWhom) async throws {}
    func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws {}
    func rename(_ name: MachineName, to newName: MachineName) async throws {}
    func clone(_ name: MachineName, to newName: MachineName, readOnly: Bool) async throws {}
}

@Suite("List coalescing", .timeLimit(.minutes(1)))
struct ListCoalescerTests {
    @Test func concurrentListsShareOneRoundButNotAcrossAChange() async throws {
        let service = SlowListing()
        let coalescer = ListCoalescer(maxAge: .zero)
        async let first = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        async let second = coalescer.list(service)
        // The second joins the running listing instead of starting its own.
        for _ in 0..<100 { await Task.yield() }
        #expect(await service.listings == 1)
        await service.release()
        let (a, b) = try await (first, second)
        #expect(a.map(\.name) == ["listing-1"] && b.map(\.name) == ["listing-1"])

        // A change that finishes while a listing runs retires it for later callers.
        async let third = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await coalescer.invalidate()
        async let fourth = coalescer.list(service)
        while await service.pending < 2 { await Task.yield() }
        await service.release()
        let (c, d) = try await (third, fourth)
        #expect(c.map(\.name) == ["listing-2"] && d.map(\.name) == ["listing-3"])
        #expect(await service.listings == 3)
    }
}

extension ListCoalescerTests {
    @Test func aFinishedListingAnswersUntilAChange() async throws {
        let service = SlowListing()
        let coalescer = ListCoalescer(maxAge: .seconds(60))
        async let first = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await first.map(\.name) == ["listing-1"])
        #expect(try await coalescer.list(service).map(\.name) == ["listing-1"], "reused within maxAge")
        #expect(await service.listings == 1)

        await coalescer.invalidate()
        async let after = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await after.map(\.name) == ["listing-2"], "a change retires it")

        await coalescer.disable()
        async let uncached = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await uncached.map(\.name) == ["listing-3"])
        async let again = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await again.map(\.name) == ["listing-4"], "without signals nothing is reused")
    }

    @Test func anOlderListingAnswersWhileItsReplacementRuns() async throws {
        let service = SlowListing()
        let coalescer = ListCoalescer(maxAge: .milliseconds(1))
        async let first = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await first.map(\.name) == ["listing-1"])
        try await Task.sleep(for: .milliseconds(5))

        // Past maxAge: the first caller starts a listing and waits for it...
        async let refreshed = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        // ...while a caller arriving meanwhile gets the previous one at once.
        #expect(try await coalescer.list(service).map(\.name) == ["listing-1"])
        await service.release()
        #expect(try await refreshed.map(\.name) == ["listing-2"])
        #expect(await service.listings == 2)

        // After a change nobody gets the older listing, even while the next one runs.
        try await Task.sleep(for: .milliseconds(5))
        async let afterAge = coalescer.list(service)
        while await service.pending < 1 { await Task.yield() }
        await coalescer.invalidate()
        async let afterChange = coalescer.list(service)
        while await service.pending < 2 { await Task.yield() }
        await service.release()
        #expect(try await afterAge.map(\.name) == ["listing-3"])
        #expect(try await afterChange.map(\.name) == ["listing-4"])
    }
}

@Suite("URL checks")
struct URLCheckTests {
    @Test func schemesAreComparedByBytes() {
        // An emoji modifier after "//" joins the slash into one Character; the scheme is still http.
        #expect(ImageSource.isURL("HTtP://\u{1F3FB}<"))
        #expect(Router.isURL("https://\u{301}x"))
        #expect(Router.isURL("http://h/a.tar.gz"))
        #expect(!Router.isURL("http://"))
        #expect(!Router.isURL("https://"))
        #expect(!Router.isURL("ftp://h/a"))
        #expect(!ImageSource.isURL("/srv/http://x"))
    }
}
