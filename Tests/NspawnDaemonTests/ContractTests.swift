import ArgumentParser
import Foundation
import NspawnAPI
@testable import NspawnCLI
@testable import NspawnDaemon
import NspawnKit
import Testing

/// Every verb run twice from the same command line: once against a recorder standing in for
/// the library (the direct path), once through the API client, the router and a recorder
/// behind it. The two recorders must hear the same typed calls, defaults included.
@Suite("Contract", .serialized)
struct ContractTests {
    static let root = Peer(pid: 1, uid: 0, gid: 0)
    /// Primary group root; with `Authorizer(group: "root")` that makes an operator.
    static let member = Peer(pid: 2, uid: 4242, gid: 0)
    static let authorizer = Authorizer(group: "root")

    /// Each verb with the calls it makes. The left side is what the CLI decides, the right
    /// side what must arrive at the far end of the daemon.
    static let verbs: [([String], [Call])] = [
        (["ls"], [.list(ListRequest())]),
        (["ls", "--all"], [.list(ListRequest(all: true))]),
        (["status", "web"], [.status("web")]),
        (["start", "web"], [.start("web")]),
        (["start", "--json", "web"], [.start("web"), .status("web")]),
        (["stop", "web"], [.stop("web", StopRequest())]),
        (["stop", "--timeout", "2.5", "web"], [.stop("web", StopRequest(timeout: 2.5))]),
        (["stop", "--timeout", "0.0004", "web"], [.stop("web", StopRequest(timeout: 0.0004))]),
        (["reboot", "web"], [.reboot("web", RebootRequest())]),
        (["reboot", "--hard", "web"], [.reboot("web", RebootRequest(hard: true))]),
        (["terminate", "web"], [.terminate("web")]),
        (["kill", "web"], [.kill("web", KillRequest())]),
        (["kill", "-s", "HUP", "--kill-whom", "leader", "web"], [.kill("web", KillRequest(signal: "HUP", whom: .leader))]),
        (["enable", "web"], [.enable("web")]),
        (["disable", "web"], [.disable("web")]),
        (["remove", "web"], [.remove("web", RemoveRequest())]),
        (["remove", "--force", "--timeout", "5", "web"], [.remove("web", RemoveRequest(force: true, timeout: 5))]),
        (["rename", "web", "web2"], [.rename("web", RenameRequest(name: "web2"))]),
        (["clone", "web", "web2"], [.clone("web", CloneRequest(name: "web2"))]),
        (["clone", "--read-only", "web", "web2"], [.clone("web", CloneRequest(name: "web2", readOnly: true))]),
        (["read-only", "web"], [.setReadOnly("web", ReadOnlyRequest(readOnly: true))]),
        (["read-only", "web", "no"], [.setReadOnly("web", ReadOnlyRequest(readOnly: false))]),
        (["config", "web"], [.config("web")]),
        (["config", "web", "--set", "Boot=no", "--unset", "Hostname", "--bind", "/srv:/srv", "--bind-ro", "/etc/hosts",
          "--port", "8080", "--network", "veth", "--env", "A=b", "--flavor", "small"],
         [.configure("web", SettingsChange(set: ["Boot=no"], unset: ["Hostname"], bind: ["/srv:/srv"], bindRo: ["/etc/hosts"], port: ["8080"],
                                           network: "veth", env: ["A=b"], flavor: "small"))]),
        (["config", "web", "--boot"], [.configure("web", SettingsChange(boot: true))]),
        (["config", "web", "--restart", "on-failure", "--restart-delay", "5s", "--restart-max", "3/1min"],
         [.configure("web", SettingsChange(restart: "on-failure", restartDelay: "5s", restartMax: "3/1min"))]),
        (["config", "web", "--exec", "/bin/sleep", "1"], [.configure("web", SettingsChange(exec: ["/bin/sleep", "1"]))]),
        (["create", "web", "--image", "base"], [.create(CreateRequest(name: "web", image: "base"))]),
        (["create", "web", "--image", "base", "--flavor", "small", "--port", "80", "--start"],
         [.create(CreateRequest(name: "web", image: "base", start: true, settings: SettingsChange(port: ["80"], flavor: "small")))]),
        (["create", "web", "--image", "base", "--listen", "8080", "--exec", "/bin/cat"],
         [.create(CreateRequest(name: "web", image: "base", expose: ListenSpec(listen: ["8080"], exec: ["/bin/cat"])))]),
        (["expose", "web", "--listen", "127.0.0.1:8080", "--unit", "proxy.service"],
         [.expose("web", ExposeRequest(listen: ["127.0.0.1:8080"], unit: "proxy.service"))]),
        (["expose", "web", "--restart", "--timeout", "3", "--listen", "8080", "--exec", "/bin/cat", "-u"],
         [.expose("web", ExposeRequest(listen: ["8080"], exec: ["/bin/cat", "-u"], restart: true, timeout: 3))]),
        (["unexpose", "web"], [.unexpose("web", UnexposeRequest())]),
        (["unexpose", "--restart", "--timeout", "7", "web"], [.unexpose("web", UnexposeRequest(restart: true, timeout: 7))]),
        (["resize", "web", "--flavor", "tiny"], [.resize("web", ResizeRequest(flavor: "tiny"))]),
        (["resize", "web", "--flavor", "tiny", "--confirm-after", "90m"], [.resize("web", ResizeRequest(flavor: "tiny", confirmAfter: 5400))]),
        (["resize", "web", "--flavor", "tiny", "--confirm-after", "0"], [.resize("web", ResizeRequest(flavor: "tiny", confirmAfter: 0))]),
        (["resize", "--confirm", "web"], [.confirmResize("web")]),
        (["resize", "--revert", "web"], [.revertResize("web")]),
        (["rebuild", "web"], [.rebuild("web", RebuildRequest())]),
        (["rebuild", "web", "--image", "debian", "--timeout", "5"], [.rebuild("web", RebuildRequest(image: "debian", timeout: 5))]),
        (["events"], [.events]),
        (["logs", "web"], [.logs("web", LogRequest())]),
        (["logs", "web", "-n", "5", "--since", "2026-12-06 10:00", "--until", "now", "-p", "err", "--boot", "--json"],
         [.logs("web", LogRequest(lines: 5, since: "2026-12-06 10:00", until: "now", priority: "err", boot: true))]),
        (["logs", "-f", "web"], [.logs("web", LogRequest(follow: true))]),
        (["stats"], [.stats(StatsRequest())]),
        (["stats", "web", "adhoc", "--json"], [.stats(StatsRequest(names: ["web", "adhoc"]))]),
        (["events", "--json"], [.events]),
        (["snapshot", "web"], [.snapshot("web", SnapshotRequest())]),
        (["snapshot", "--json", "web", "before-upgrade"], [.snapshot("web", SnapshotRequest(name: "before-upgrade"))]),
        (["snapshots", "web"], [.snapshots("web")]),
        (["restore", "web", "s1"], [.restore("web", RestoreRequest(snapshot: "s1"))]),
        (["snapshot-remove", "web", "s1"], [.removeSnapshot("web", SnapshotRemoveRequest(snapshot: "s1"))]),
    ]

    /// Parses `argv` as `nspawnctl` does and runs it along `route`. A one-name fan-out's
    /// failure is that name's error.
    static func run(_ argv: [String], along route: OutputOptions.Route) async throws {
        let command = try Nspawnctl.parseAsRoot(Invocation.resolve(["nspawnctl"] + argv).arguments)
        var runnable = try #require(command as? AsyncParsableCommand)
        do {
            try await OutputOptions.Route.$override.withValue(route) { try await runnable.run() }
        } catch let partial as PartialFailure where partial.failures.count == 1 {
            throw partial.failures[0].error
        }
    }

    static func daemon(_ service: RecordingService, peer: Peer = root) -> OutputOptions.Route {
        .daemon(APIClient(transport: InProcessTransport(router: Router(service: service, authorizer: authorizer), peer: peer)))
    }

    @Test(arguments: verbs)
    func theDaemonMakesTheCallTheDirectPathMakes(_ argv: [String], _ expected: [Call]) async throws {
        let direct = RecordingService()
        try await Self.run(argv, along: .direct(direct))
        let served = RecordingService()
        try await Self.run(argv, along: Self.daemon(served))
        #expect(await direct.calls == expected, "direct: \(argv)")
        #expect(await served.calls == expected, "through nspawnd: \(argv)")
    }

    /// Imports and manifests are service calls too: the CLI builds the job or request and
    /// nothing else (which process runs them is the service's business).
    @Test func importsAndManifestsAreOneServiceCallEach() async throws {
        let file = "/tmp/nspawnctl-contract-\(getpid()).yaml"
        try "name: fleet\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let digest = "sha256:" + String(repeating: "a", count: 64)
        let cases: [([String], Call)] = [
            (["import", "web", "/srv/a.tar"], .importImage("web", .file("/srv/a.tar", checksum: nil, signature: nil, keyring: nil, force: false))),
            (["import", "--force", "web", "-"], .importImage("web", .file("-", checksum: nil, signature: nil, keyring: nil, force: true))),
            (["import", "--checksum", digest, "web", "http://127.0.0.1/a.tar"],
             .importImage("web", .url("http://127.0.0.1/a.tar", checksum: digest, signature: nil, keyring: nil, force: false))),
            (["bootstrap", "--tarball", "/srv/a.tar", "--no-verify", "archlinux"],
             .importImage(nil, .recipe("archlinux", mirror: nil, tarball: "/srv/a.tar", checksum: nil, signature: nil, keyring: nil, verify: false, force: false))),
            (["plan", "-f", file, "--prune"], .plan(PlanRequest(manifest: "name: fleet\n", file: file, prune: true))),
            (["plan", "-f", file, "--explain", "web"], .explain(PlanRequest(manifest: "name: fleet\n", file: file), "web")),
            (["apply", "-f", file, "--keep-going"], .apply(ApplyRequest(manifest: "name: fleet\n", file: file, keepGoing: true))),
        ]
        for (argv, expected) in cases {
            let direct = RecordingService()
            try await Self.run(argv, along: .direct(direct))
            #expect(await direct.calls == [expected], "\(argv)")
        }
    }

    /// Every category crosses the wire as a status and comes back as the same exit code, with
    /// its message and D-Bus error name.
    @Test(arguments: NspawnError.Category.allCases)
    func errorsMapTheSameBothWays(_ category: NspawnError.Category) async throws {
        let failure = NspawnError.remote(category, message: "machine 'web': it failed this way", busError: "org.freedesktop.machine1.NoSuchMachine")
        for argv in [["start", "web"], ["config", "web", "--boot"], ["ls"]] {
            var direct: NspawnError?
            do { try await Self.run(argv, along: .direct(RecordingService(failure: failure))) } catch let error as NspawnError { direct = error }
            var served: NspawnError?
            do { try await Self.run(argv, along: Self.daemon(RecordingService(failure: failure))) } catch let error as NspawnError { served = error }
            let (a, b) = (try #require(direct), try #require(served))
            #expect(ExitStatus(a.category) == ExitStatus(b.category), "\(argv)")
            #expect(ExitStatus(b.category) == ExitStatus(category))
            #expect(b.description == a.description)
            #expect(b.busErrorName == "org.freedesktop.machine1.NoSuchMachine")
        }
        // The status in between is the category's.
        let router = Router(service: RecordingService(failure: failure), authorizer: Self.authorizer)
        let response = await router.handle(APIRequest(method: "POST", target: "/v1/machines/web/start", peer: Self.root))
        #expect(response.status == ErrorMapping.httpStatus(category))
        #expect(ErrorMapping.error(status: response.status, body: response.body, from: "test").category == category)
    }

    /// Group nspawn reads and runs machines; everything else needs root, and the refusal says so.
    @Test(arguments: verbs)
    func membersOfNspawnMayReadAndRunMachinesOnly(_ argv: [String], _ expected: [Call]) async throws {
        let served = RecordingService()
        let readingOrLifecycle = expected.allSatisfy {
            switch $0 {
            case .list, .status, .start, .stop, .reboot, .terminate, .kill, .config, .events, .snapshots, .logs, .stats: true
            default: false
            }
        }
        do {
            try await Self.run(argv, along: Self.daemon(served, peer: Self.member))
            #expect(readingOrLifecycle, "\(argv) went through for a member of group nspawn")
            #expect(await served.calls == expected)
        } catch let error as NspawnError {
            #expect(!readingOrLifecycle, "\(argv): \(error)")
            #expect(ExitStatus(error.category) == .permissionDenied)
            #expect(error.description.contains("needs root"), "\(error)")
            #expect(await served.calls.isEmpty)
        }
    }

    /// `--api` is never ignored: with nothing listening, every verb fails as unreachable (7),
    /// and one that cannot go through the daemon at all says so (2).
    @Test func withNothingListeningEveryVerbFailsAndNoneTakesTheDirectPath() async throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-none-\(UUID().uuidString).sock").path
        let nowhere = OutputOptions.Route.daemon(APIClient(transport: StreamTransport(connector: UnixSocketConnector(path: socket))))
        for (argv, _) in Self.verbs + [(["import", "x", "http://127.0.0.1:1/root.tar"], []), (["bootstrap", "archlinux", "x"], [])] {
            do {
                try await Self.run(argv, along: nowhere)
                Issue.record("\(argv) succeeded with no daemon")
            } catch let error as NspawnError {
                #expect(ExitStatus(error.category) == .unreachable, "\(argv): \(error)")
                #expect(error.description.contains(socket), "\(error)")
            }
        }
        for argv in [["import", "x", "/srv/root.tar"], ["import", "x", "-"], ["bootstrap", "--tarball", "/srv/a.tar.zst", "archlinux", "x"],
                     ["copy-to", "x", "/srv/a"], ["copy-from", "--replace", "x", "/etc/hosts", "/tmp/hosts"], ["export", "x", "/srv/x.tar.zst"],
                     ["copy-machine", "x", "ssh://h"], ["move-machine", "x", "ssh://root@h:2222/y"]] {
            do {
                try await Self.run(argv, along: nowhere)
                Issue.record("\(argv) succeeded through a daemon")
            } catch let error as NspawnError {
                #expect(ExitStatus(error.category) == .invalidInput, "\(argv): \(error)")
                #expect(error.description.contains("as root without --api or --host"), "\(error)")
            }
        }
    }

    @Test func globalOptionsMayComeBeforeTheVerb() throws {
        #expect(Invocation.resolve(["nspawnctl", "--host", "ssh://a@b", "ls", "-a"]).arguments == ["ls", "--host", "ssh://a@b", "-a"])
        #expect(Invocation.resolve(["nspawnctl", "--api", "-H", "ssh://b", "config", "x", "--exec", "--host"]).arguments
                == ["config", "--api", "-H", "ssh://b", "x", "--exec", "--host"])
        #expect(Invocation.resolve(["nspawnctl", "ls", "--host=ssh://b"]).arguments == ["ls", "--host=ssh://b"])
        let list = try #require(try Nspawnctl.parseAsRoot(Invocation.resolve(["nspawnctl", "--host", "ssh://op@h:2222", "ls"]).arguments) as? List)
        #expect(list.output.host == "ssh://op@h:2222")
    }

    @Test func sshDestinationsParseOrAreRefused() throws {
        let full = try SSHDestination(parsing: "ssh://op@host.example:2222")
        #expect(full.user == "op" && full.host == "host.example" && full.port == 2222)
        #expect(SSHConnector(destination: full, interactive: false).argv
                == ["ssh", "-T", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-l", "op", "-p", "2222", "--", "host.example", "nspawnctl", "dial-stdio"])
        let v6 = try SSHDestination(parsing: "ssh://[::1]:22")
        #expect(v6.host == "::1" && v6.port == 22 && v6.user == nil)
        #expect(try SSHDestination(parsing: "ssh://h").description == "ssh://h")
        for bad in ["h", "ssh://", "ssh://-oProxyCommand=x", "ssh://h:0", "ssh://h:99999", "ssh://a b", "ssh://u;x@h", "http://h", "ssh://-l@h"] {
            #expect(throws: NspawnError.self, "\(bad)") { try SSHDestination(parsing: bad) }
        }
    }

    @Test func copyTargetsNameAHostAndMaybeAMachine() throws {
        let renamed = try CopyTarget(parsing: "ssh://root@[fd00::2]:2222/web-2")
        #expect(renamed.destination.host == "fd00::2" && renamed.destination.port == 2222 && renamed.destination.user == "root")
        #expect(renamed.name?.rawValue == "web-2" && renamed.description == "ssh://root@[fd00::2]:2222/web-2")
        for same in ["ssh://h", "ssh://h/"] {
            let target = try CopyTarget(parsing: same)
            #expect(target.name == nil && target.destination.host == "h", "\(same)")
        }
        let remote = SSHConnector(destination: renamed.destination, interactive: false).command(["nspawnctl", "import", "--json", "--", "web-2", "-"])
        #expect(remote == ["ssh", "-T", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-l", "root", "-p", "2222", "--", "fd00::2",
                           "nspawnctl", "import", "--json", "--", "web-2", "-"])
        for bad in ["h/web", "ssh:///web", "ssh://h/../etc", "ssh://h/a/b", "ssh://h/.hidden", "ssh://-oProxyCommand=x/web", "ssh://h/a;b", "ssh://h:0/web"] {
            #expect(throws: NspawnError.self, "\(bad)") { try CopyTarget(parsing: bad) }
        }
        // A move carries the snapshots, or removing the source would lose them.
        #expect(CopyMachineRequest(target: renamed, move: true).snapshots)
    }

    @Test func exitCodesAndCategoriesAreOneToOne() {
        for category in NspawnError.Category.allCases {
            #expect(ExitStatus(category).category == category)
        }
        #expect(ExitStatus.unreachable.rawValue == 7 && ExitStatus.unsupportedAPI.rawValue == 8)
    }
}
