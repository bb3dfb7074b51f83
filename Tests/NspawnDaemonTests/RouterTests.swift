import Foundation
import Testing
import NspawnAPI
@testable import NspawnDaemon
import NspawnKit

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
        #expect(await stopService.calls == [.stop("web", StopRequest(timeout: 2.5))])
        let (kill, killService) = await handle("POST", "/v1/machines/web/kill", body: #"{"signal": "HUP", "whom": "leader"}"#)
        #expect(kill.status == 200)
        #expect(await killService.calls == [.kill("web", KillRequest(signal: "HUP", whom: .leader))])
        let (clone, cloneService) = await handle("POST", "/v1/images/web/clone", body: #"{"name": "web2", "read_only": true}"#)
        #expect(clone.status == 201)
        #expect(await cloneService.calls == [.clone("web", CloneRequest(name: "web2", readOnly: true))])
        let (snapshot, snapshotService) = await handle("POST", "/v1/machines/web/snapshots")
        #expect(snapshot.status == 201)
        #expect(await snapshotService.calls == [.snapshot("web", SnapshotRequest())])
        let (removal, removalService) = await handle("DELETE", "/v1/machines/web/snapshots", body: #"{"snapshot": "s1"}"#)
        #expect(removal.status == 200)
        #expect(await removalService.calls == [.removeSnapshot("web", SnapshotRemoveRequest(snapshot: "s1"))])
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
        ("POST", "/v1/machines/web/snapshots", #"{"name": "../root"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/snapshots", #"{"name": ".hidden"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/restore", "", "application/json", 400),
        ("POST", "/v1/machines/web/restore", #"{"snapshot": "a/b"}"#, "application/json", 400),
        ("DELETE", "/v1/machines/web/snapshots", "", "application/json", 400),
        ("DELETE", "/v1/machines/web/snapshots", #"{"snapshot": "\#(String(repeating: "s", count: 65))"}"#, "application/json", 400),
        ("GET", "/v1/machines/web/extra/segments", "", nil, 404),
        ("GET", "/machines", "", nil, 404),
        ("PATCH", "/v1/machines", "", nil, 405),
        // An explicit null is no value: "url": null beside a recipe is not "no url".
        ("POST", "/v1/images", #"{"name": "x", "url": null, "recipe": "archlinux"}"#, "application/json", 400),
        ("POST", "/v1/machines/web/kill", #"{"signal": null}"#, "application/json", 400),
        // A null body is not "no body" (schemathesis found config taking one).
        ("POST", "/v1/machines/web/config", "null", "application/json", 400),
        ("POST", "/v1/machines/web/stop", "null", "application/json", 400),
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
        let changes = await service.calls.filter {
            switch $0 {
            case .status, .list, .config: false
            default: true
            }
        }
        #expect(changes.isEmpty)
    }
}

/// Counts listings and holds each one until released, so calls can overlap on purpose.
actor SlowListing {
    var listings = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func release() {
        for continuation in waiting { continuation.resume() }
        waiting.removeAll()
    }

    var pending: Int { waiting.count }

    func list() async throws -> [MachineSummary] {
        listings += 1
        let number = listings
        await withCheckedContinuation { waiting.append($0) }
        return [MachineSummary(name: "listing-\(number)", state: .running)]
    }

    nonisolated var listing: @Sendable () async throws -> [MachineSummary] { { try await self.list() } }
}

@Suite("List coalescing", .timeLimit(.minutes(1)))
struct ListCoalescerTests {
    @Test func concurrentListsShareOneRoundButNotAcrossAChange() async throws {
        let service = SlowListing()
        let coalescer = ListCoalescer(maxAge: .zero)
        async let first = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        async let second = coalescer.list(service.listing)
        // The second joins the running listing instead of starting its own; waiting for that,
        // not for a number of yields, keeps a loaded machine from releasing too early.
        while await coalescer.joined < 1, await service.listings == 1 { await Task.yield() }
        #expect(await service.listings == 1)
        await service.release()
        let (a, b) = try await (first, second)
        #expect(a.map(\.name) == ["listing-1"] && b.map(\.name) == ["listing-1"])

        // A change that finishes while a listing runs retires it for later callers.
        async let third = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await coalescer.invalidate()
        async let fourth = coalescer.list(service.listing)
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
        async let first = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await first.map(\.name) == ["listing-1"])
        #expect(try await coalescer.list(service.listing).map(\.name) == ["listing-1"], "reused within maxAge")
        #expect(await service.listings == 1)

        await coalescer.invalidate()
        async let after = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await after.map(\.name) == ["listing-2"], "a change retires it")

        await coalescer.disable()
        async let uncached = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await uncached.map(\.name) == ["listing-3"])
        async let again = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await again.map(\.name) == ["listing-4"], "without signals nothing is reused")
    }

    @Test func anOlderListingAnswersWhileItsReplacementRuns() async throws {
        let service = SlowListing()
        let coalescer = ListCoalescer(maxAge: .milliseconds(1))
        async let first = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await service.release()
        #expect(try await first.map(\.name) == ["listing-1"])
        try await Task.sleep(for: .milliseconds(5))

        // Past maxAge: the first caller starts a listing and waits for it...
        async let refreshed = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        // ...while a caller arriving meanwhile gets the previous one at once.
        #expect(try await coalescer.list(service.listing).map(\.name) == ["listing-1"])
        await service.release()
        #expect(try await refreshed.map(\.name) == ["listing-2"])
        #expect(await service.listings == 2)

        // After a change nobody gets the older listing, even while the next one runs.
        try await Task.sleep(for: .milliseconds(5))
        async let afterAge = coalescer.list(service.listing)
        while await service.pending < 1 { await Task.yield() }
        await coalescer.invalidate()
        async let afterChange = coalescer.list(service.listing)
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
        #expect(ImportRequest.isDownloadURL("https://\u{301}x"))
        #expect(ImportRequest.isDownloadURL("http://h/a.tar.gz"))
        #expect(!ImportRequest.isDownloadURL("http://"))
        #expect(!ImportRequest.isDownloadURL("https://"))
        #expect(!ImportRequest.isDownloadURL("ftp://h/a"))
        #expect(!ImageSource.isURL("/srv/http://x"))
    }
}

@Suite("Registry import requests")
struct RegistryImportRequestTests {
    @Test func aRegistryImportNeedsANameAndOnlyItsReference() throws {
        try ImportRequest(name: "web", oci: "docker://debian:12").validate()
        try ImportRequest(name: "web", force: true, oci: "docker://127.0.0.1:5000/a/b@sha256:" + String(repeating: "a", count: 64)).validate()
        let refused: [(ImportRequest, String)] = [
            (ImportRequest(oci: "docker://debian"), "needs a name"),
            (ImportRequest(name: "web", url: "http://h/a", oci: "docker://debian"), "exactly one of url, recipe, oci or stream"),
            (ImportRequest(name: "web", recipe: "arch", oci: "docker://debian"), "exactly one of url, recipe, oci or stream"),
            (ImportRequest(name: "web", checksum: "sha256:" + String(repeating: "a", count: 64), oci: "docker://debian"), "do not apply"),
            (ImportRequest(name: "web", oci: "oci:/srv/layout:web"), "images on a host are imported there"),
            (ImportRequest(name: "web", oci: "docker://Bad/Name"), "invalid image reference"),
            (ImportRequest(name: "web", oci: "docker://debian:"), "invalid image reference"),
        ]
        for (request, message) in refused {
            #expect {
                try request.validate()
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}

@Suite struct LogQueryTests {
    @Test func queriesRoundTrip() throws {
        let requests = [LogRequest(), LogRequest(lines: 5, since: "2026-12-06 10:00:00", until: "now", priority: "err", boot: true),
                        LogRequest(since: "5 min ago", follow: true), LogRequest(since: "ü&=%+")]
        for request in requests {
            #expect(try LogRequest(query: request.query) == request, "\(request.query ?? "")")
        }
        #expect(try LogRequest(query: "since=2026-12-06+10%3A00&lines=3") == LogRequest(lines: 3, since: "2026-12-06 10:00"))
    }

    @Test(arguments: ["lines=x", "lines=1&lines=2", "color=always", "since=%ZZ", "since=%C3", "boot=yes", "follow=", "lines"])
    func badQueriesAreRefusedBeforeAnyLine(_ query: String) async throws {
        let service = RecordingService()
        let router = Router(service: service, authorizer: Authorizer(group: "root"))
        let response = await router.handle(APIRequest(method: "GET", target: "/v1/machines/web/logs?\(query)", peer: Peer(pid: 1, uid: 0, gid: 0)))
        #expect(response.status == 400, "\(query): \(String(decoding: response.body, as: UTF8.self))")
        #expect(await service.calls.isEmpty)
    }

    /// A window the library refuses (a time it cannot read) is 400 too, with the library's words.
    @Test func refusedWindowsAreErrorsNotStreams() async throws {
        let router = Router(service: RecordingService(), authorizer: Authorizer(group: "root"))
        guard case .refused(let response) = await router.startLogs(try MachineName("web"), LogRequest(since: "tomorrowish")) else {
            Issue.record("an unreadable time started a stream")
            return
        }
        #expect(response.status == 400)
        #expect(String(decoding: response.body, as: UTF8.self).contains("cannot read 'tomorrowish' as a time"))
    }
}

@Suite struct StatsQueryTests {
    @Test func namesRoundTripAndBadOnesAreRefused() async throws {
        #expect(try StatsRequest(query: StatsRequest(names: ["web", "db-1"]).query) == StatsRequest(names: ["web", "db-1"]))
        #expect(try StatsRequest(query: nil) == StatsRequest())
        let service = RecordingService()
        let router = Router(service: service, authorizer: Authorizer(group: "root"))
        for query in ["machine=web", "name=../etc", "name=%ZZ", "name="] {
            let response = await router.handle(APIRequest(method: "GET", target: "/v1/stats?\(query)", peer: Peer(pid: 1, uid: 0, gid: 0)))
            #expect(response.status == 400, "\(query): \(String(decoding: response.body, as: UTF8.self))")
        }
    }
}

@Suite struct MetricsTests {
    @Test func theTextFormatEscapesLabelsAndWritesEachFamilyOnce() {
        var out = PrometheusText()
        out.family("nspawn_machine_tasks", "gauge", "Tasks.")
        out.sample("nspawn_machine_tasks", [("machine", "we\"b\\\n")], 3)
        out.sample("nspawn_machine_tasks", [("machine", "db")], 0.25)
        #expect(out.text == "# HELP nspawn_machine_tasks Tasks.\n# TYPE nspawn_machine_tasks gauge\nnspawn_machine_tasks{machine=\"we\\\"b\\\\\\n\"} 3\nnspawn_machine_tasks{machine=\"db\"} 0.25\n")
        #expect(PrometheusText.number(.infinity) == "+Inf" && PrometheusText.number(1e20) == "1e+20")
    }

    @Test func machinesBecomeSeriesAndAbsentNumbersStayAbsent() {
        var running = MachineStats(name: "web", sampledUsec: 1)
        running.cpuSeconds = 1.5
        running.tasks = 4
        var out = PrometheusText()
        Router.machineFamilies([MachineSummary(name: "web", state: .running, imageType: "directory"), MachineSummary(name: "db", state: .stopped)],
                               [running], into: &out)
        #expect(out.text.contains("nspawn_machine_state{machine=\"web\",state=\"running\"} 1\n"))
        #expect(out.text.contains("nspawn_machine_state{machine=\"db\",state=\"running\"} 0\n"))
        #expect(out.text.contains("nspawn_machine_state{machine=\"db\",state=\"stopped\"} 1\n"))
        #expect(out.text.contains("nspawn_machine_cpu_seconds_total{machine=\"web\"} 1.5\n"))
        #expect(out.text.contains("nspawn_machine_tasks{machine=\"web\"} 4\n"))
        #expect(!out.text.contains("nspawn_machine_memory_bytes{"), "no memory number, no sample")
        #expect(!out.text.contains("machine=\"db\"} "), "a stopped machine has no use")
    }

    /// The metrics listener answers GET /metrics to nobody in particular, and nothing else.
    @Test func theMetricsListenerServesOnlyMetrics() async throws {
        let service = RecordingService()
        let router = Router(service: service, authorizer: Authorizer(group: "root"))
        let nobody = Peer(pid: 0, uid: UInt32.max, gid: UInt32.max)
        let scraped = await router.routeMetricsOnly(APIRequest(method: "GET", target: "/metrics", peer: nobody))
        #expect(scraped.status == 200 && scraped.headers.contains { $0.0 == "Content-Type" && $0.1.hasPrefix("text/plain; version=0.0.4") })
        #expect(String(decoding: scraped.body, as: UTF8.self).contains("# TYPE nspawnd_requests_total counter"))
        for (method, target) in [("GET", "/v1/machines"), ("POST", "/v1/machines/web/start"), ("GET", "/v1/version"), ("GET", "/metrics/../v1/machines")] {
            let refused = await router.routeMetricsOnly(APIRequest(method: method, target: target, peer: nobody))
            #expect(refused.status == 404, "\(method) \(target)")
        }
        #expect(await router.routeMetricsOnly(APIRequest(method: "POST", target: "/metrics", peer: nobody)).status == 405)
        let calls = await service.calls
        #expect(calls.allSatisfy { if case .stats = $0 { true } else { $0 == .list(ListRequest()) } }, "only reads: \(calls)")
        // On the API socket the route is group nspawn's, like the other reads.
        #expect(router.refusal(.metrics, peer: nobody)?.status == 403)
    }
}
