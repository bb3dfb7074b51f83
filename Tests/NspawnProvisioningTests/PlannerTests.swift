import FoundationEssentials
import NspawnKit
@testable import NspawnProvisioning
import Testing

/// The plan as a pure difference between a desired machine and an observed one.
@Suite("Planner")
struct PlannerTests {
    static func desired(_ yaml: String) throws -> DesiredMachine {
        try ManifestTests.parse(yaml).resolved()[0]
    }

    static let web = """
        machines:
          web1:
            image: { clone: base }
            flavor: small
            settings: { Port: ["tcp:8080:80"] }
            enabled: true
            state: running
            files: [ { path: /etc/motd, content: "hi\\n" } ]
            run:
              - { command: [/bin/true] }
              - { command: [/bin/touch, /ready], creates: /ready }
        """

    /// What the same machine looks like once an apply made it.
    static func converged(_ desired: DesiredMachine) -> (ObservedMachine, GuestChecks) {
        var observed = ObservedMachine()
        observed.exists = true
        observed.running = true
        observed.enabled = true
        observed.flavor = "small"
        observed.origin = try? MachineName("base")
        observed.settings = NspawnSettings(parsing: "[Network]\nPort=tcp:8080:80\n")
        observed.files["/etc/motd"] = GuestFileState(content: Array("hi\n".utf8), mode: 0o644, uid: 0, gid: 0)
        observed.existingPaths = ["/ready"]
        observed.record = ProvisioningRecord(manifest: "site", created: true, settings: ["Network.Port"])
        var checks = GuestChecks()
        checks.fileOwners["/etc/motd"] = GuestIDs(uid: 0, gid: 0)
        return (observed, checks)
    }

    @Test func aNewMachineGetsEveryField() throws {
        let plan = Planner.plan(try Self.desired(Self.web), observed: ObservedMachine(), checks: GuestChecks())
        #expect(plan.action == .create)
        #expect(plan.changes.map(\.field) == [.machine, .setting("Network.Port"), .flavor, .enabled, .file("/etc/motd"), .state, .run(0), .run(1)])
        #expect(plan.changes.map(\.field.description) == ["machine", "settings.Network.Port", "flavor", "enabled", "file:/etc/motd", "state", "run[0]", "run[1]"])
        #expect(plan.changes[0] == PlannedChange(.add, .machine, new: .text("clone of base")))
    }

    @Test func aConvergedMachineHasNothingToDo() throws {
        let desired = try Self.desired(Self.web)
        let (observed, checks) = Self.converged(desired)
        let plan = Planner.plan(desired, observed: observed, checks: checks)
        #expect(plan.changes == [] && plan.action == .none)
    }

    @Test func oneEditedValueIsExactlyOneChange() throws {
        let desired = try Self.desired(Self.web.replacingOccurrences(of: "tcp:8080:80", with: "tcp:9090:80"))
        let (observed, checks) = Self.converged(desired)
        let plan = Planner.plan(desired, observed: observed, checks: checks)
        #expect(plan.changes == [PlannedChange(.change, .setting("Network.Port"), old: .list(["tcp:8080:80"]), new: .list(["tcp:9090:80"]))])
        #expect(plan.changes[0].line(machine: "web1") == "~ web1 settings.Network.Port: [tcp:8080:80] → [tcp:9090:80]")
    }

    @Test func aFileDiffersByContentModeOrOwner() throws {
        let desired = try Self.desired(Self.web)
        var (observed, checks) = Self.converged(desired)
        observed.files["/etc/motd"]?.mode = 0o600
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes.map(\.field) == [.file("/etc/motd")])
        (observed, checks) = Self.converged(desired)
        observed.files["/etc/motd"]?.uid = 1000
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes.map(\.field) == [.file("/etc/motd")])
        (observed, checks) = Self.converged(desired)
        observed.files["/etc/motd"] = nil
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes.map(\.op) == [.add])
    }

    @Test func aGuardedCommandRunsWhileItsGuardSaysSoAndAnUnguardedOneOnlyAtCreation() throws {
        let desired = try Self.desired(Self.web)
        var (observed, checks) = Self.converged(desired)
        observed.existingPaths = []
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes.map(\.field) == [.run(1)])
    }

    @Test func aSettingDroppedFromTheManifestIsRemovedOnlyWhenTheManifestSetIt() throws {
        let desired = try Self.desired(Self.web.replacingOccurrences(of: "    settings: { Port: [\"tcp:8080:80\"] }\n", with: ""))
        var (observed, checks) = Self.converged(desired)
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes == [PlannedChange(.remove, .setting("Network.Port"), old: .list(["tcp:8080:80"]))])
        observed.record?.settings = []
        #expect(Planner.plan(desired, observed: observed, checks: checks).changes == [])
    }

    @Test func pruneTakesOnlyMachinesThisManifestCreated() {
        var observed = ObservedMachine()
        observed.exists = true
        #expect(Planner.pruneCandidate("hand", observed: observed, manifest: "site") == nil)
        observed.record = ProvisioningRecord(manifest: "other", created: true, settings: [])
        #expect(Planner.pruneCandidate("theirs", observed: observed, manifest: "site") == nil)
        observed.record = ProvisioningRecord(manifest: "site", created: false, settings: [])
        #expect(Planner.pruneCandidate("adopted", observed: observed, manifest: "site") == nil)
        observed.record = ProvisioningRecord(manifest: "site", created: true, settings: [])
        #expect(Planner.pruneCandidate("ours", observed: observed, manifest: "site")?.action == .remove)
    }

    @Test func absentRemovesAnExistingMachineAndIgnoresAMissingOne() throws {
        let desired = try Self.desired("machines:\n  old:\n    state: absent\n")
        var observed = ObservedMachine()
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes == [])
        observed.exists = true
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).action == .remove)
    }
}

@Suite struct ChangeFieldTests {
    /// Each field's word reads back as the same field; words no plan makes are refused.
    @Test func wordsRoundTripAndStrangersAreRefused() throws {
        let fields: [ChangeField] = [.machine, .image, .setting("Exec.Environment"), .flavor, .enabled, .file("/etc/motd"),
                                     .expose, .state, .package("nginx"), .run(12)]
        for field in fields {
            #expect(ChangeField(field.description) == field)
            let encoded = try JSONEncoder().encode([field])
            #expect(try JSONDecoder().decode([ChangeField].self, from: encoded) == [field])
        }
        for word in ["", "wait", "settings.", "file:relative", "package:", "run[-1]", "run[x]", "Machine"] {
            #expect(ChangeField(word) == nil, "\(word)")
        }
    }
}

@Suite struct ApplyEventTests {
    /// The wire form names its type, and reads back as the same event.
    @Test func eventsCarryTheirTypeOnTheWire() throws {
        let events: [ApplyEvent] = [
            .change(machine: "web1", PlannedChange(.change, .flavor, old: .text("small"), new: .text("medium"))),
            .failed(machine: "web2", error: "machine 'web2': run[0] exited with 3", rolledBack: false, rollbackError: "removing it failed"),
        ]
        let encoded = try WireJSON.encoder(pretty: false).encode(events)
        let text = String(decoding: encoded, as: UTF8.self)
        #expect(text.contains(#""type":"change""#) && text.contains(#""field":"flavor""#))
        #expect(text.contains(#""type":"failed""#) && text.contains(#""rolled_back":false"#) && text.contains(#""rollback_error":"removing it failed""#))
        #expect(try WireJSON.decoder().decode([ApplyEvent].self, from: encoded) == events)
        #expect(events.map(\.text) == ["~ web1 flavor: small → medium",
                                       "web2: machine 'web2': run[0] exited with 3; not rolled back: removing it failed"])
        #expect(events.map(\.isFailure) == [false, true])
        #expect(throws: DecodingError.self) { try WireJSON.decoder().decode(ApplyEvent.self, from: Data(#"{"type":"done","machine":"a"}"#.utf8)) }
    }
}

/// `restart:` in manifests: a word or the whole policy, layered whole, planned against the drop-in.
@Suite("Manifest restart policies")
struct ManifestRestartTests {
    static let manifest = """
        defaults:
          restart: on-failure
        machines:
          web1:
            image: { clone: base }
            restart: { policy: always, delay: 5s, max: 3/1min }
          web2:
            image: { clone: base }
        """

    @Test func aLayerReplacesThePolicyWhole() throws {
        let machines = try ManifestTests.parse(Self.manifest).resolved()
        #expect(machines[0].restart == RestartPolicy(mode: .always, delaySeconds: 5, startLimit: try .init(parsing: "3/1min")))
        #expect(machines[1].restart == RestartPolicy(mode: .onFailure))
        #expect(machines[0].origins["restart"] == "machine" && machines[1].origins["restart"] == "defaults")
    }

    @Test func thePlanComparesWithTheDropIn() throws {
        let desired = try ManifestTests.parse(Self.manifest).resolved()[0]
        var observed = ObservedMachine()
        observed.exists = true
        observed.origin = try MachineName("base")
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes
            == [PlannedChange(.add, .restart, new: .text("always, delay 5s, at most 3 starts in 60s"))])
        observed.restart = desired.restart
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes.isEmpty)
        observed.restart = RestartPolicy(mode: .always)
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes.map(\.op) == [.change])
        // `no` on a machine without a drop-in is already so.
        var none = desired
        none.restart = RestartPolicy(mode: .no)
        observed.restart = nil
        #expect(Planner.plan(none, observed: observed, checks: GuestChecks()).changes.isEmpty)
    }

    @Test(arguments: [
        ("restart: sometimes", "invalid restart policy 'sometimes'"),
        ("restart: { delay: 5s }", "'policy' is missing"),
        ("restart: { policy: always, delay: forever }", "invalid restart delay 'forever'"),
        ("restart: { policy: always, max: 0/1min }", "invalid restart limit '0/1min'"),
        ("restart: { policy: always, every: 5s }", "every"),
    ])
    func badPoliciesAreRefusedWhereTheyAreWritten(_ line: String, _ words: String) {
        expectRefusedOnItsLine(line, words)
    }
}

/// `health:` in manifests: none or the whole check, layered whole, planned against the health service.
@Suite("Manifest health checks")
struct ManifestHealthTests {
    static let manifest = """
        defaults:
          health: { cmd: "curl -fs http://localhost/ || exit 1", interval: 10s, retries: 2 }
        machines:
          web1:
            image: { clone: base }
            health: { cmd: [/usr/bin/check, --quick], timeout: 3s, start_period: 1min, restart_on_unhealthy: true }
          web2:
            image: { clone: base }
          web3:
            image: { clone: base }
            health: none
        """

    @Test func aLayerReplacesTheCheckWhole() throws {
        let machines = try ManifestTests.parse(Self.manifest).resolved()
        #expect(machines[0].health == .check(HealthCheck(command: ["/usr/bin/check", "--quick"], timeoutSeconds: 3, startPeriodSeconds: 60,
                                                         restartOnUnhealthy: true)))
        #expect(machines[1].health == .check(HealthCheck(command: HealthCheck.shellCommand("curl -fs http://localhost/ || exit 1"),
                                                         intervalSeconds: 10, retries: 2)))
        #expect(machines[2].health == HealthSetting.none)
        #expect(machines[0].origins["health"] == "machine" && machines[1].origins["health"] == "defaults")
    }

    @Test func thePlanComparesWithTheHealthService() throws {
        let machines = try ManifestTests.parse(Self.manifest).resolved()
        var observed = ObservedMachine()
        observed.exists = true
        observed.origin = try MachineName("base")
        let desired = machines[1]
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes
            == [PlannedChange(.add, .health, new: .text("'curl -fs http://localhost/ || exit 1' every 10s, timeout 10s, unhealthy after 2 failures"))])
        observed.health = desired.health?.check
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes.isEmpty)
        observed.health?.retries = 5
        #expect(Planner.plan(desired, observed: observed, checks: GuestChecks()).changes.map(\.op) == [.change])
        // none removes a check, and is already so without one.
        #expect(Planner.plan(machines[2], observed: observed, checks: GuestChecks()).changes.map(\.op) == [.remove])
        observed.health = nil
        #expect(Planner.plan(machines[2], observed: observed, checks: GuestChecks()).changes.isEmpty)
    }

    @Test(arguments: [
        ("health: sometimes", "expected none, or a mapping with cmd"),
        ("health: { interval: 5s }", "'cmd' is missing"),
        ("health: { cmd: 'true', interval: forever }", "invalid health check interval 'forever'"),
        ("health: { cmd: 'true', retries: 0 }", "invalid health check retries 0"),
        ("health: { cmd: 'true', retries: many }", "expected a whole number from 1 to 100"),
        ("health: { cmd: '  ' }", "the health check command is empty"),
        ("health: { cmd: [] }", "expected a command as a list of words"),
        ("health: { cmd: 'true', every: 5s }", "every"),
    ])
    func badChecksAreRefusedWhereTheyAreWritten(_ line: String, _ words: String) {
        expectRefusedOnItsLine(line, words)
    }
}

/// A one-line key of machine web1 in a manifest is refused with `words`, at line 4 of the file.
func expectRefusedOnItsLine(_ line: String, _ words: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let text = "machines:\n  web1:\n    image: { clone: base }\n    \(line)\n"
    #expect(sourceLocation: sourceLocation) {
        try ManifestTests.parse(text)
    } throws: { error in
        let message = "\(error)"
        return message.contains(words) && message.contains("/srv/site.yaml:4:")
    }
}

@Suite struct ManifestSnapshotScheduleTests {
    static let manifest = """
        defaults:
          snapshots: { every: 1h, keep: 24 }
        machines:
          db1:
            image: { clone: base }
            snapshots: { every: 15min, keep_daily: 7, keep_weekly: 4 }
          db2:
            image: { clone: base }
          db3:
            image: { clone: base }
            snapshots: none
        """

    @Test func aLayerReplacesTheScheduleWholeAndThePlanComparesWithTheService() throws {
        let machines = try ManifestTests.parse(Self.manifest).resolved()
        #expect(machines[0].snapshots == .schedule(SnapshotSchedule(everySeconds: 900, keepDaily: 7, keepWeekly: 4)))
        #expect(machines[1].snapshots == .schedule(SnapshotSchedule(everySeconds: 3600, keep: 24)))
        #expect(machines[2].snapshots == SnapshotsSetting.none)
        #expect(machines[0].origins["snapshots"] == "machine" && machines[1].origins["snapshots"] == "defaults")

        var observed = ObservedMachine()
        observed.exists = true
        observed.origin = try MachineName("base")
        #expect(Planner.plan(machines[1], observed: observed, checks: GuestChecks()).changes
            == [PlannedChange(.add, .snapshots, new: .text("every 1h, keep 24"))])
        observed.snapshotSchedule = machines[1].snapshots?.schedule
        #expect(Planner.plan(machines[1], observed: observed, checks: GuestChecks()).changes.isEmpty)
        #expect(Planner.plan(machines[0], observed: observed, checks: GuestChecks()).changes.map(\.op) == [.change])
        #expect(Planner.plan(machines[2], observed: observed, checks: GuestChecks()).changes.map(\.op) == [.remove])
        observed.snapshotSchedule = nil
        #expect(Planner.plan(machines[2], observed: observed, checks: GuestChecks()).changes.isEmpty)
    }

    @Test(arguments: [
        ("snapshots: hourly", "expected none, or a mapping with every"),
        ("snapshots: { keep: 3 }", "'every' is missing"),
        ("snapshots: { every: 1h }", "would keep every snapshot"),
        ("snapshots: { every: soon, keep: 3 }", "invalid snapshot interval 'soon'"),
        ("snapshots: { every: 1h, keep: 0 }", "invalid snapshot keep 0"),
        ("snapshots: { every: 1h, keep: lots }", "expected a whole number from 1 to 10000"),
        ("snapshots: { every: 1h, keep: 3, monthly: 2 }", "monthly"),
    ])
    func badSchedulesAreRefusedWhereTheyAreWritten(_ line: String, _ words: String) {
        expectRefusedOnItsLine(line, words)
    }
}
