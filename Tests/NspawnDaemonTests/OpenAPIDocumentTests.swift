import Foundation
import NspawnAPI
import NspawnKit
import Testing
import Yams

/// units/openapi.yaml against the Swift contract: a route or a field on one side only fails.
@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    static var document: [String: Any] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("units/openapi.yaml")
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return ((try? Yams.load(yaml: text)) as? [String: Any]) ?? [:]
    }

    static var paths: [String: [String: Any]] { document["paths"] as? [String: [String: Any]] ?? [:] }
    static var schemas: [String: [String: Any]] {
        ((document["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]]) ?? [:]
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteExists() {
        #expect(!Self.paths.isEmpty, "units/openapi.yaml did not load")
        let swift = Set(Endpoint.allCases.map { "\($0.method) \($0.template)" })
        var documented = Set<String>()
        for (path, item) in Self.paths {
            for method in ["get", "post", "put", "patch", "delete"] where item[method] != nil {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        #expect(swift.subtracting(documented).isEmpty, "routes missing from the document: \(swift.subtracting(documented).sorted())")
        #expect(documented.subtracting(swift).isEmpty, "documented routes nspawnd does not serve: \(documented.subtracting(swift).sorted())")
    }

    @Test func everyRouteDocumentsTheRoleItNeeds() {
        for endpoint in Endpoint.allCases {
            let operation = Self.paths[endpoint.template]?[endpoint.method.lowercased()] as? [String: Any]
            #expect(operation?["x-role"] as? String == endpoint.role.description, "\(endpoint.method) \(endpoint.template)")
        }
    }

    /// Each request type, with every field filled, and the schema that documents it.
    static var requests: [(Endpoint?, String, any Encodable)] { [
        (.stop, "StopRequest", StopRequest(timeout: 1)),
        (.reboot, "RebootRequest", RebootRequest(hard: true)),
        (.kill, "KillRequest", KillRequest(signal: "HUP", whom: .leader)),
        (.removeImage, "RemoveRequest", RemoveRequest(force: true, timeout: 1)),
        (.cloneImage, "CloneRequest", CloneRequest(name: "b", readOnly: true)),
        (.renameImage, "RenameRequest", RenameRequest(name: "b")),
        (.setReadOnly, "ReadOnlyRequest", ReadOnlyRequest(readOnly: true)),
        (.resize, "ResizeRequest", ResizeRequest(flavor: "small", confirmAfter: 60)),
        (.rebuild, "RebuildRequest", RebuildRequest(image: "debian", timeout: 1, pull: true)),
        (nil, "RebuildResult", { () -> RebuildResult in
            var result = RebuildResult(name: "a", image: "b", method: .copy, restarted: true)
            result.pulled = true
            result.manifestDigest = "sha256:c"
            return result
        }()),
        (.configure, "SettingsChange", filledSettings),
        (.expose, "ExposeRequest", ExposeRequest(listen: ["80"], unit: "u", exec: ["x"], restart: true, timeout: 1)),
        (.unexpose, "UnexposeRequest", UnexposeRequest(restart: true, timeout: 1)),
        (.createMachine, "CreateRequest", CreateRequest(name: "a", image: "b", start: true, settings: filledSettings,
                                                        expose: ListenSpec(listen: ["80"], unit: "u", exec: ["x"]))),
        (nil, "ListenSpec", ListenSpec(listen: ["80"], unit: "u", exec: ["x"])),
        (.importImage, "ImportRequest", ImportRequest(name: "a", url: "http://h/a", recipe: "r", checksum: "c", signature: "s",
                                                       keyring: "k", mirror: "m", verify: true, force: true, oci: "docker://o", stream: "s/r", remote: "http://r")),
        (.exec, "ExecRequest", ExecRequest(ExecSpec(command: ["sh"], user: "u", environment: ["A=1"], workingDirectory: "/w", interactive: true,
                                                    tty: true, terminal: "xterm", size: TerminalSize(rows: 1, columns: 2)))),
        (nil, "TerminalSize", TerminalSize(rows: 1, columns: 2)),
        (nil, "ActionResult", ActionResult(name: "a", result: "r")),
        (nil, "Version", VersionInfo(version: "1")),
        (nil, "ResizeResult", ResizeResult(name: "a", action: .resized, flavor: Flavor(name: "f", memoryMax: 1 << 30, diskMax: 1 << 30), limits: nil,
                                           pending: PendingResize(from: "s", to: "f", since: Date(), confirmsAt: Date()))),
        (nil, "MachineStats", { () -> MachineStats in
            var stats = MachineStats(name: "a", sampledUsec: 1)
            stats.cpuSeconds = 1; stats.cpuPercent = 2; stats.memoryBytes = 3; stats.memoryPeakBytes = 4; stats.memoryLimitBytes = 5
            stats.ioReadBytes = 6; stats.ioWriteBytes = 7; stats.tasks = 8; stats.networkReceiveBytes = 9; stats.networkTransmitBytes = 10
            stats.uptimeSeconds = 11; stats.health = .healthy
            return stats
        }()),
        (nil, "MachineHealth", MachineHealth(status: .unhealthy, failingStreak: 3, since: Date(), lastCheck: Date(), lastExitCode: 1, lastOutput: "o")),
        (nil, "HealthCheck", HealthCheck(command: ["true"], startPeriodSeconds: 1, restartOnUnhealthy: true)),
        (nil, "MachineEvent", MachineEvent(event: .machineHealth, name: "a", state: .running, flavor: "f",
                                           pendingResize: PendingResize(from: "s", to: "f", since: Date(), confirmsAt: Date()),
                                           health: MachineHealth(since: nil))),
        (nil, "LogEntry", LogEntry(realtimeUsec: 1, source: .host, priority: 3, unit: "u", identifier: "i", pid: 1, message: "m")),
        (nil, "RestartPolicy", RestartPolicy(mode: .always, delaySeconds: 1, startLimit: try! .init(parsing: "3/60"))),
        (nil, "PendingResize", PendingResize(from: "s", to: "f", since: Date(), confirmsAt: Date())),
        (.createSnapshot, "SnapshotRequest", SnapshotRequest(name: "s", expire: "1d")),
        (.restore, "RestoreRequest", RestoreRequest(snapshot: "s")),
        (.removeSnapshot, "SnapshotRemoveRequest", SnapshotRemoveRequest(snapshot: "s")),
        (nil, "Snapshot", SnapshotInfo(name: "s", created: Date(), method: .reflink, size: 1, path: "/p", expires: Date(), scheduled: true)),
        (nil, "SnapshotSchedule", SnapshotSchedule(everySeconds: 60, keep: 1, keepDaily: 1, keepWeekly: 1)),
        (.planManifest, "PlanRequest", PlanRequest(manifest: "m", file: "f", prune: true)),
        (.applyManifest, "ApplyRequest", ApplyRequest(manifest: "m", file: "f", prune: true, keepGoing: true)),
        (nil, "ProvisionPlan", ProvisionPlan(manifest: "m", file: "f", machines: [])),
        (nil, "MachinePlan", MachinePlan(name: "a", action: .create, changes: [])),
        (nil, "PlannedChange", PlannedChange(.change, .flavor, old: .text("a"), new: .text("b"))),
        (nil, "MachineApplyResult", MachineApplyResult(name: "a", result: .failed, changes: [], error: "e", rolledBack: false, rollbackError: "r")),
        (nil, "ApplyReport", ApplyReport(manifest: "m", file: "f", machines: [])),
        (nil, "SnapshotResult", SnapshotResult(name: "a", snapshot: SnapshotInfo(name: "s", created: nil, method: .btrfs, size: nil, path: "/p"),
                                               method: .btrfs, seconds: 1)),
    ] }

    static let filledSettings = SettingsChange(set: ["a"], unset: ["b"], bind: ["c"], bindRo: ["d"], port: ["e"], network: "f",
                                               env: ["g"], flavor: "h", boot: true, exec: ["i"], restart: "always", restartDelay: "5s", restartMax: "3/1min",
                                               healthCmd: "true", healthInterval: "1s", healthTimeout: "1s", healthStartPeriod: "0s",
                                               healthRetries: 1, restartOnUnhealthy: true, noHealth: true,
                                               snapshotEvery: "1h", snapshotKeep: 1, snapshotKeepDaily: 1, snapshotKeepWeekly: 1, noSnapshotSchedule: true)

    @Test func everyFieldIsDocumentedAndEveryDocumentedFieldExists() throws {
        for (endpoint, schemaName, example) in Self.requests {
            let schema = try #require(Self.schemas[schemaName], "no schema \(schemaName)")
            let documented = Set((schema["properties"] as? [String: Any] ?? [:]).keys)
            let encoded = try JSONSerialization.jsonObject(with: try WireJSON.encoder(pretty: false).encode(AnyEncodable(example))) as? [String: Any]
            let fields = Set((encoded ?? [:]).keys)
            // ResizeResult's limits are optional and left out when nil; compare what is there.
            let expected = schemaName == "ResizeResult" ? documented.subtracting(["limits"]) : documented
            #expect(fields == expected, "\(schemaName): Swift \(fields.sorted()) vs document \(documented.sorted())")
            for required in schema["required"] as? [String] ?? [] {
                #expect(fields.contains(required), "\(schemaName) requires \(required)")
            }
            guard let endpoint else { continue }
            let operation = Self.paths[endpoint.template]?[endpoint.method.lowercased()] as? [String: Any]
            let body = ((operation?["requestBody"] as? [String: Any])?["content"] as? [String: Any])?["application/json"] as? [String: Any]
            let reference = (body?["schema"] as? [String: Any])?["$ref"] as? String
            #expect(reference == "#/components/schemas/\(schemaName)", "\(endpoint) takes \(schemaName)")
        }
    }

    /// The Swift side's own limits are the document's.
    @Test func limitsAgree() throws {
        let timeout = try #require(Self.schemas["Timeout"])
        #expect((timeout["maximum"] as? Int).map(Double.init) == StopTimeout.maximumSeconds)
        #expect(timeout["minimum"] as? Int == 0)
        #expect(throws: NspawnError.self) { try StopTimeout.check(StopTimeout.maximumSeconds + 1) }
        #expect(try StopTimeout.check(StopTimeout.maximumSeconds) == StopTimeout.maximumSeconds)
        let exec = Self.paths[Endpoint.exec.template]?["post"] as? [String: Any]
        let description = exec?["description"] as? String ?? ""
        #expect(description.contains("Upgrade: \(ExecStream.upgradeToken)"))
        #expect(description.contains("at most \(ExecStream.maximumPayload) bytes"))
        for type in ExecFrameType.allCases {
            #expect(description.contains("| \(type.rawValue) \(type) | \(type.sentByClient ? "client" : "nspawnd") |"), "frame \(type)")
        }
        let text = Self.schemas["ManifestText"]
        #expect(text?["maxLength"] as? Int == ManifestRequestLimits.maximumTextSize)
        #expect(Self.schemas["ManifestFile"]?["maxLength"] as? Int == ManifestRequestLimits.maximumFileSize)
        let operation = Self.schemas["Operation"]?["properties"] as? [String: Any]
        #expect((operation?["events"] as? [String: Any])?["maxItems"] as? Int == Operation.eventsKept)
        #expect(((operation?["kind"] as? [String: Any])?["enum"] as? [String]).map(Set.init) == [Operation.importKind, Operation.applyKind])
        let whom = ((Self.schemas["KillRequest"]?["properties"] as? [String: Any])?["whom"] as? [String: Any])?["enum"] as? [String]
        #expect(Set(whom ?? []) == Set(KillWhom.allCases.map(\.rawValue)))
    }
}

extension OpenAPIDocumentTests {
    /// An apply's operation, every field it can have filled, is what the document describes.
    @Test func anApplysOperationIsDocumented() throws {
        var operation = Operation(id: "1", name: "demo", source: "/srv/demo.yaml", state: .failed, created: Date())
        operation.kind = Operation.applyKind
        operation.events = [.change(machine: "web1", PlannedChange(.add, .machine, new: .text("clone of base"))),
                            .failed(machine: "web2", error: "e", rolledBack: false, rollbackError: "r")]
        operation.eventCount = 2
        operation.report = ApplyReport(manifest: "demo", file: "/srv/demo.yaml", machines: [])
        operation.error = .init(code: "failure", message: "1 of 1 machines failed: web1")
        let encoded = try JSONSerialization.jsonObject(with: try WireJSON.encoder(pretty: false).encode(operation)) as? [String: Any]
        let documented = Set((Self.schemas["Operation"]?["properties"] as? [String: Any] ?? [:]).keys)
        let fields = Set((encoded ?? [:]).keys)
        #expect(fields.isSubset(of: documented), "undocumented: \(fields.subtracting(documented).sorted())")
        #expect(fields.isSuperset(of: ["events", "event_count", "report"]))
        // Each event's fields are the document's ApplyEvent's.
        let events = (encoded?["events"] as? [[String: Any]]) ?? []
        let eventFields = Set((Self.schemas["ApplyEvent"]?["properties"] as? [String: Any] ?? [:]).keys)
        #expect(events.count == 2 && events.allSatisfy { Set($0.keys).isSubset(of: eventFields) }, "\(events)")
        #expect(events.map { $0["type"] as? String } == ["change", "failed"])
    }
}

/// Encodes any value through its own conformance.
@Suite("OpenAPI patterns")
struct OpenAPIPatternTests {
    /// The document's `oci` pattern accepts exactly what the daemon accepts, so a client (or a
    /// fuzzer) that keeps to the document is never refused, and never accepted outside it.
    @Test func theOCIReferencePatternAgreesWithTheParser() throws {
        let properties = try #require(OpenAPIDocumentTests.schemas["ImportRequest"]?["properties"] as? [String: Any])
        let pattern = try #require((properties["oci"] as? [String: Any])?["pattern"] as? String)
        let regex = try Regex(pattern)
        let digest = String(repeating: "0", count: 64)
        let candidates = [
            "debian", "debian:12", "library/debian:12", "quay.io/podman/stable", "localhost/app", "localhost:5000/a",
            "127.0.0.1:5000/a/b/c:v1.2_3-x", "Ab.c/x", "a:1/b", "a.b", "my__repo/a-b--c.d", "app:v1@sha256:\(digest)",
            "a@sha256:\(digest)", "Vy0YjN", "Ab.c", "a//b", "a:99999/b", "a:0/b", "a:65535/b", "debian:", "a@sha256:abc",
            "a..b", "/a", "a/", "LOCALHOST/a", "a:b/c", "a/b:c/d", "a___b", "a-", "-a", "a:-x", "a:.x", "a:x.y-z_",
            "h.io/A", "h.io/a/B", ".../a", "a.b:80:90/x", "a b", "a_b.c/d", "a_b/c", "a.b/c", "a.b/c.d_e",
            "9__k67xd_0jvi3q.jjoa5i_n82/seh4p09:cdj", "localhost", "localhost:80", "a.b:5000", "x_y.z",
        ]
        for candidate in candidates {
            let text = "docker://\(candidate)"
            let documented = text.wholeMatch(of: regex) != nil
            let parsed = (try? RegistryReference(parsing: candidate)) != nil
            #expect(documented == parsed, "\(text): the document says \(documented), the parser \(parsed)")
        }
    }
}

extension OpenAPIPatternTests {
    /// Every time the document's pattern admits, the daemon reads (the pattern is a part of the
    /// grammar: `5 min ago` is read but not documented).
    @Test func theLogTimePatternIsReadByTheParser() throws {
        let pattern = try #require(OpenAPIDocumentTests.schemas["LogTime"]?["pattern"] as? String)
        let regex = try Regex(pattern)
        let candidates = [
            "now", "today", "yesterday", "tomorrow", "@0", "@9999999999", "@1765000000.123456", "-0", "+0", "-1h", "-999999w",
            "+999999w 999999w 999999w", "-1 1", "-5 min", "-1h 30min", "+10 usec", "1970-01-01", "9999-12-31T23:59:59.999999Z",
            "2026-02-31", "2026-12-06 00:00", "2026-12-06 10:00:59 UTC", "2026-12-06Z", "1970-01-01T00:00Z",
            "2026-13-01", "2026-12-06 24:00", "x", "", "-", "@", "1h", "-1parsec", "2026-12-06 10:00:60",
        ]
        var admitted = 0
        for candidate in candidates where candidate.wholeMatch(of: regex) != nil {
            admitted += 1
            #expect(throws: Never.self, "\(candidate) is documented but refused") { try LogTime.parse(candidate, now: 1_765_000_000_000_000) }
        }
        #expect(admitted == 23, "the pattern admitted \(admitted) of the 23 good candidates")
    }
}

struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
}

extension OpenAPIDocumentTests {
    /// One version: the document's, the daemon's answer and the CLI's `--version` all come from NspawnctlVersion.
    @Test func theVersionComesFromOnePlace() async throws {
        #expect((Self.document["info"] as? [String: Any])?["version"] as? String == NspawnctlVersion.current)
        #expect(VersionInfo().version == NspawnctlVersion.current && VersionInfo().name == "nspawnd")
        #expect(try await LocalService().version() == VersionInfo(name: "nspawnctl"))
    }
}
