import ArgumentParser
import Foundation
import NspawnAPI
@testable import NspawnCLI
@testable import NspawnDaemon
import NspawnKit
import NspawnProvisioning
import Synchronization
import Testing

/// Stands in for the provisioner behind the router: records what reached it and makes up a
/// plan or a report from the manifest's machines, so the routes, the operation and the CLI's
/// daemon path are tested without machined.
final class FakeProvisioner: Sendable {
    let calls = Mutex<[String]>([])
    /// Changes each machine gets.
    let changesPerMachine: Int
    /// This machine fails after its changes.
    let failing: String?
    /// When set, apply waits for it after its progress lines, before it returns.
    let gate: Gate?

    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func open() {
            let waiters = state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            waiters.forEach { $0.resume() }
        }
        func wait() async {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if state.open { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    init(changesPerMachine: Int = 2, failing: String? = nil, gate: Gate? = nil) {
        self.changesPerMachine = changesPerMachine
        self.failing = failing
        self.gate = gate
    }

    func changes(_ machine: ManifestMachine) -> [PlannedChange] {
        (0..<changesPerMachine).map { PlannedChange(.add, .file("/etc/f\($0)"), new: .text("\($0)")) }
    }

    var engine: ManifestEngine {
        ManifestEngine(plan: { manifest, prune in
            self.calls.withLock { $0.append("plan \(manifest.name) \(manifest.file) prune=\(prune)") }
            return ProvisionPlan(manifest: manifest.name, file: manifest.file,
                                 machines: manifest.machines.map { MachinePlan(name: $0.name.rawValue, action: .create, changes: self.changes($0)) })
        }, apply: { manifest, options, progress in
            self.calls.withLock { $0.append("apply \(manifest.name) \(manifest.file) prune=\(options.prune) keepGoing=\(options.keepGoing)") }
            var results: [MachineApplyResult] = []
            var stop = false
            for machine in manifest.machines {
                let name = machine.name.rawValue
                if stop {
                    results.append(MachineApplyResult(name: name, result: .skipped, changes: []))
                    continue
                }
                let done = self.changes(machine)
                done.forEach { progress(.change(machine: name, $0)) }
                if name == self.failing {
                    let failed = MachineApplyResult(name: name, result: .failed, changes: done, error: "machine '\(name)': run[0] exited with 3", rolledBack: true)
                    progress(.failure(failed))
                    results.append(failed)
                    stop = !options.keepGoing
                } else {
                    results.append(MachineApplyResult(name: name, result: .changed, changes: done))
                }
            }
            await self.gate?.wait()
            return ApplyReport(manifest: manifest.name, file: manifest.file, machines: results)
        })
    }
}

@Suite("Manifest routes", .serialized, .timeLimit(.minutes(1)))
struct ManifestRouteTests {
    static let root = Peer(pid: 1, uid: 0, gid: 0)
    /// Primary group root; with `Authorizer(group: "root")` that makes an operator.
    static let member = Peer(pid: 2, uid: 4242, gid: 0)
    static let outsider = Peer(pid: 3, uid: 4243, gid: 4243)
    static let authorizer = Authorizer(group: "root")

    static let manifest = """
        name: demo
        machines:
          web1:
            image: { clone: base }
            enabled: true
          web2:
            image: { clone: base }
        """

    static func router(_ fake: FakeProvisioner) -> Router {
        Router(service: RecordingService(), authorizer: authorizer, manifests: fake.engine)
    }

    static func body(_ request: some Encodable) throws -> [UInt8] {
        Array(try WireJSON.encoder(pretty: false).encode(request))
    }

    static func send(_ router: Router, _ method: String, _ path: String, _ body: [UInt8] = [], peer: Peer = root,
                     contentType: String? = "application/json") async -> APIResponse {
        await router.handle(APIRequest(method: method, path: path, body: body, contentType: contentType, peer: peer))
    }

    static func message(_ response: APIResponse) -> String {
        (try? WireJSON.decoder().decode(ErrorBody.self, from: Data(response.body)))?.error.message ?? String(decoding: response.body, as: UTF8.self)
    }

    static func operation(_ response: APIResponse) throws -> NspawnAPI.Operation {
        try WireJSON.decoder().decode(NspawnAPI.Operation.self, from: Data(response.body))
    }

    /// Polls the router until the operation has ended.
    static func finished(_ router: Router, _ id: String) async throws -> NspawnAPI.Operation {
        for _ in 0..<500 {
            let current = try operation(await send(router, "GET", "/v1/operations/\(id)"))
            if current.state != .running { return current }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw NspawnError.failed("operation \(id) did not end")
    }

    @Test func aRefusedManifestIs400NamingFileLineAndKeyAndNothingStarts() async throws {
        let fake = FakeProvisioner()
        let router = Self.router(fake)
        let bad = "machines:\n  web1:\n    image: { clone: base }\n    colour: blue\n"
        for path in ["/v1/manifests/plan", "/v1/manifests/apply"] {
            let response = await Self.send(router, "POST", path, try Self.body(ApplyRequest(manifest: bad, file: "/srv/demo.yaml")))
            #expect(response.status == 400, "\(path)")
            let message = Self.message(response)
            #expect(message.hasPrefix("/srv/demo.yaml:4:"), "\(path): \(message)")
            #expect(message.contains("machines.web1") && message.contains("colour"), "\(path): \(message)")
        }
        // Not YAML at all, and no file given: the name is `-`.
        let broken = await Self.send(router, "POST", "/v1/manifests/apply", try Self.body(ApplyRequest(manifest: "machines: [\n")))
        #expect(broken.status == 400)
        #expect(Self.message(broken).hasPrefix("-:"), "\(Self.message(broken))")
        #expect(fake.calls.withLock { $0 } == [])
        #expect(await router.operations.runningCount == 0)
    }

    @Test func onlyRootPlansOrApplies() async throws {
        let fake = FakeProvisioner()
        let router = Self.router(fake)
        let body = try Self.body(ApplyRequest(manifest: Self.manifest))
        for path in ["/v1/manifests/plan", "/v1/manifests/apply"] {
            let member = await Self.send(router, "POST", path, body, peer: Self.member)
            #expect(member.status == 403)
            #expect(Self.message(member).contains("needs root"), "\(Self.message(member))")
            let outsider = await Self.send(router, "POST", path, body, peer: Self.outsider)
            #expect(outsider.status == 403)
            // Refused before the body is even looked at.
            let garbage = await Self.send(router, "POST", path, Array("{".utf8), peer: Self.member)
            #expect(garbage.status == 403)
        }
        #expect(Endpoint.planManifest.role == .admin && Endpoint.applyManifest.role == .admin)
        #expect(fake.calls.withLock { $0 } == [])
    }

    @Test func requestsOutsideTheLimitsAreRefused() async throws {
        let fake = FakeProvisioner()
        let router = Self.router(fake)
        #expect(ManifestRequestLimits.maximumTextSize == ManifestLimits.maximumSize, "the daemon takes what the CLI reads")
        let tooLong = String(repeating: "#", count: ManifestRequestLimits.maximumTextSize + 1)
        let cases: [(String, [UInt8], String?, Int, String)] = [
            ("too large", try Self.body(ApplyRequest(manifest: tooLong)), "application/json", 400, "larger than 4194304 bytes"),
            ("control character in file", try Self.body(ApplyRequest(manifest: Self.manifest, file: "a\nb")), "application/json", 400, "invalid file"),
            ("empty file", try Self.body(ApplyRequest(manifest: Self.manifest, file: "")), "application/json", 400, "invalid file"),
            ("long file", try Self.body(ApplyRequest(manifest: Self.manifest, file: String(repeating: "f", count: 4097))), "application/json", 400, "invalid file"),
            ("no manifest", Array(#"{"file": "x"}"#.utf8), "application/json", 400, "missing key 'manifest'"),
            ("null prune", Array(#"{"manifest": "x", "prune": null}"#.utf8), "application/json", 400, "'prune' must not be null"),
            ("wrong type", Array(#"{"manifest": ["x"]}"#.utf8), "application/json", 400, "wrong type at 'manifest'"),
            ("no body", [], "application/json", 400, "a JSON body is required"),
            ("not JSON", try Self.body(ApplyRequest(manifest: Self.manifest)), "text/yaml", 415, "expected Content-Type application/json"),
        ]
        for path in ["/v1/manifests/plan", "/v1/manifests/apply"] {
            for (what, body, contentType, status, text) in cases {
                let response = await Self.send(router, "POST", path, body, contentType: contentType)
                #expect(response.status == status, "\(path) \(what): \(Self.message(response))")
                #expect(Self.message(response).contains(text), "\(path) \(what): \(Self.message(response))")
            }
        }
        // The largest manifest still passes the limits (then fails as YAML that is no manifest).
        let largest = String(repeating: "#", count: ManifestRequestLimits.maximumTextSize)
        let response = await Self.send(router, "POST", "/v1/manifests/plan", try Self.body(PlanRequest(manifest: largest)))
        #expect(response.status == 400 && Self.message(response).contains("empty"), "\(Self.message(response))")
        #expect(fake.calls.withLock { $0 } == [])
    }

    @Test func planAnswersAtOnce() async throws {
        let fake = FakeProvisioner()
        let response = await Self.send(Self.router(fake), "POST", "/v1/manifests/plan",
                                       try Self.body(PlanRequest(manifest: Self.manifest, file: "/srv/demo.yaml", prune: true)))
        #expect(response.status == 200)
        let plan = try WireJSON.decoder().decode(ProvisionPlan.self, from: Data(response.body))
        #expect(plan.manifest == "demo" && plan.file == "/srv/demo.yaml" && plan.changes == 4)
        #expect(plan.machines.map(\.name) == ["web1", "web2"])
        #expect(fake.calls.withLock { $0 } == ["plan demo /srv/demo.yaml prune=true"])
    }

    @Test func applyIsAnOperationWithItsLinesAndReport() async throws {
        let gate = FakeProvisioner.Gate()
        let fake = FakeProvisioner(failing: "web1", gate: gate)
        let router = Self.router(fake)
        let (key, events) = await router.operations.subscribe()
        defer { Task { await router.operations.unsubscribe(key) } }
        let accepted = await Self.send(router, "POST", "/v1/manifests/apply",
                                       try Self.body(ApplyRequest(manifest: Self.manifest, file: "/srv/demo.yaml", keepGoing: true)))
        #expect(accepted.status == 202)
        let started = try Self.operation(accepted)
        #expect(accepted.headers.contains { $0 == ("Location", "/v1/operations/\(started.id)") })
        #expect(started.kind == "apply" && started.name == "demo" && started.source == "/srv/demo.yaml" && started.state == .running)

        // One apply at a time, and a running one is not cancelled.
        let second = await Self.send(router, "POST", "/v1/manifests/apply", try Self.body(ApplyRequest(manifest: Self.manifest)))
        #expect(second.status == 409, "\(Self.message(second))")
        #expect(Self.message(second).contains("one apply at a time"))
        let cancel = await Self.send(router, "DELETE", "/v1/operations/\(started.id)")
        #expect(cancel.status == 409, "\(Self.message(cancel))")

        gate.open()
        let ended = try await Self.finished(router, started.id)
        let report = try #require(ended.report)
        #expect(ended.state == .failed && ended.error?.message == "1 of 2 machines failed: web1")
        #expect(report.failed == 1 && report.changes == 2 && report.machines.map(\.result) == [.failed, .changed])
        let expectedLines = ["+ web1 file:/etc/f0: 0", "+ web1 file:/etc/f1: 1", "web1: machine 'web1': run[0] exited with 3",
                             "+ web2 file:/etc/f0: 0", "+ web2 file:/etc/f1: 1"]
        #expect(ended.events?.map(\.text) == expectedLines && ended.eventCount == 5)
        #expect(ended.events?.map(\.isFailure) == [false, false, true, false, false])
        #expect(report.events == ended.events, "the report gives back every event")
        #expect(fake.calls.withLock { $0 } == ["apply demo /srv/demo.yaml prune=false keepGoing=true"])

        // Listeners of /v1/events saw it start, each line, and its end.
        var seen: [NspawnAPI.Operation] = []
        for await operation in events where operation.id == started.id {
            seen.append(operation)
            if operation.state != .running { break }
        }
        #expect(seen.first?.state == .running && seen.first?.eventCount == 0)
        #expect(seen.compactMap(\.eventCount) == [0, 1, 2, 3, 4, 5, 5])
        #expect(seen.last?.report == report)

        // A finished apply is forgotten on DELETE.
        #expect(await Self.send(router, "DELETE", "/v1/operations/\(started.id)").status == 200)
        #expect(await Self.send(router, "GET", "/v1/operations/\(started.id)").status == 404)
    }

    @Test func anApplyThatCannotStartEndsFailedWithoutAReport() async throws {
        let engine = ManifestEngine(plan: { _, _ in throw NspawnError.failed("unused") },
                                    apply: { _, _, _ in throw NspawnError.remote(.unreachable, message: "machined is not running", busError: nil) })
        let router = Router(service: RecordingService(), authorizer: Self.authorizer, manifests: engine)
        let started = try Self.operation(await Self.send(router, "POST", "/v1/manifests/apply", try Self.body(ApplyRequest(manifest: Self.manifest))))
        let ended = try await Self.finished(router, started.id)
        #expect(ended.state == .failed && ended.report == nil)
        #expect(ended.error == .init(code: "unreachable", message: "machined is not running"))
        #expect(ended.failure?.category == .unreachable)
    }

    // MARK: The CLI's daemon path

    static func run(_ argv: [String], router: Router) async throws -> (output: String, exit: Int32?) {
        let route = OutputOptions.Route.daemon(APIClient(transport: InProcessTransport(router: router, peer: root)))
        return try await captured {
            try await OutputOptions.Route.$override.withValue(route) {
                try await ContractTests.run(argv, along: route)
            }
        }
    }

    /// Runs `body`, and returns what it printed and the exit status a GuestExit asked for.
    static func captured(_ body: () async throws -> Void) async throws -> (String, Int32?) {
        let printed = Mutex<String>("")
        var exit: Int32?
        do {
            try await PrintedOutput.$sink.withValue({ line in printed.withLock { $0 += line + "\n" } }) { try await body() }
        } catch let guest as GuestExit {
            exit = guest.status
        }
        return (printed.withLock { $0 }, exit)
    }

    static func manifestFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("demo-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// (The failed machine's line goes to stderr as an error message, as on the direct path.)
    @Test func theCLIPrintsWhatTheDirectPathPrintsAndExits1WhenAMachineFailed() async throws {
        let file = try Self.manifestFile(Self.manifest)
        defer { unlink(file) }
        let fake = FakeProvisioner(failing: "web1")
        let (text, textExit) = try await Self.run(["apply", "-f", file], router: Self.router(fake))
        #expect(text == """
            + web1 file:/etc/f0: 0
            + web1 file:/etc/f1: 1
            skipped web2
            apply: 0 changes, 1 failed

            """)
        #expect(textExit == ExitStatus.failure.rawValue)

        let (json, jsonExit) = try await Self.run(["apply", "--json", "--keep-going", "--prune", "-f", file], router: Self.router(fake))
        let report = try WireJSON.decoder().decode(ApplyReport.self, from: Data(json.utf8))
        #expect(report.file == file && report.manifest == "demo")
        #expect(report.machines.map(\.result) == [.failed, .changed] && report.machines[0].rolledBack == true)
        // What the direct path prints: the report through the one renderer.
        #expect(json == Renderer.json(report) + "\n")
        #expect(jsonExit == ExitStatus.failure.rawValue)
        #expect(fake.calls.withLock { $0 }.last == "apply demo \(file) prune=true keepGoing=true")

        let (plan, planExit) = try await Self.run(["plan", "-f", file], router: Self.router(FakeProvisioner(changesPerMachine: 1)))
        #expect(plan == "+ web1 file:/etc/f0: 0\n+ web2 file:/etc/f0: 0\nplan: 2 changes in 2 of 2 machines\n")
        #expect(planExit == nil)
    }

    /// More events than an operation keeps pass between two polls: the CLI still prints every
    /// one, once, in order.
    @Test func theCLIMissesNoLineWhenTheWindowOverflows() async throws {
        let file = try Self.manifestFile(Self.manifest)
        defer { unlink(file) }
        let fake = FakeProvisioner(changesPerMachine: Operation.eventsKept * 2)
        let (text, exit) = try await Self.run(["apply", "-f", file], router: Self.router(fake))
        let lines = text.split(separator: "\n").map(String.init)
        let expected = ["web1", "web2"].flatMap { name in (0..<Operation.eventsKept * 2).map { "+ \(name) file:/etc/f\($0): \($0)" } }
        #expect(Array(lines.dropLast()) == expected)
        #expect(lines.last == "apply: \(expected.count) changes, 0 failed")
        #expect(exit == nil)
    }

    @Test func aRefusedManifestExits2ThroughTheDaemonAsDirectly() async throws {
        let file = try Self.manifestFile("machines:\n  web1:\n    colour: blue\n")
        defer { unlink(file) }
        for verb in ["plan", "apply"] {
            do {
                _ = try await Self.run([verb, "-f", file], router: Self.router(FakeProvisioner()))
                Issue.record("\(verb) took a bad manifest")
            } catch let error as NspawnError {
                #expect(ExitStatus(error.category) == .invalidInput, "\(error)")
                #expect(error.description.contains("\(file):3:"), "\(error)")
            }
        }
    }
}
