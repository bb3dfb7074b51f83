import Foundation
import Testing

/// What a failed undo, a second apply at the same time and a `kill -9` leave behind.
@Suite("ApplyFaults", .serialized, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct ApplyFaultTests {
    static let base = "e2e-af-base"
    static let directory = "/tmp/e2e-apply-faults"

    static func makeBase() throws { try Fixture.busyboxWithAccounts(base) }

    static func write(_ text: String, as file: String) throws {
        try Testbed.mustSh("mkdir -p \(directory) && cat > \(directory)/\(file) <<'MANIFEST'\n\(text)\nMANIFEST")
    }

    static func planChanges(_ file: String) throws -> Int {
        let plan = try Testbed.nspawnctl("plan", "-f", "\(directory)/\(file)", "--json")
        return try decodeJSON(PlanJSON.self, from: plan.stdout).changes
    }

    /// Temporary files of an interrupted write, clone or import of this suite's machines (each
    /// names its machine), anywhere nspawnctl writes: other suites' imports run meanwhile.
    /// `.#NAME.lck` is systemd-nspawn's lock on a running machine's image, not a leftover.
    static func leftovers() throws -> String {
        try Testbed.sh("ls -A /var/lib/machines /etc/systemd/nspawn /etc/systemd/system /etc/systemd/system/*.service.d 2>/dev/null | grep '^\\.#.*e2e-af-' | grep -v '\\.lck$' || true").trimmed
    }

    // MARK: An undo that fails

    /// The machine's settings change, then its command fails; while it runs, its settings file is
    /// made immutable (only this machine's: other suites write /etc/systemd/nspawn meanwhile), so
    /// putting the old settings back fails: the report says so.
    @Test func anUndoThatFailsIsReportedAsNotRolledBack() throws {
        let name = "e2e-af-undo"
        defer { _ = try? Testbed.sh("chattr -i /etc/systemd/nspawn/\(name).nspawn 2>/dev/null; true") }
        try Fixture.with([name, Self.base]) {
            try Self.makeBase()
            try Testbed.mustSh("machinectl clone \(Self.base) \(name) && rm -rf /run/e2e-af-hs && mkdir -m 0777 -p /run/e2e-af-hs")
            try Self.write("""
                name: e2e-af-undo
                machines:
                  \(name):
                    settings: { Environment: ["STAGE=new"], Bind: ["/run/e2e-af-hs:/hs"] }
                    state: running
                    run:
                      - { command: [/bin/sh, -c, "touch /hs/ready; while [ ! -e /hs/go ]; do sleep 0.1; done; echo failing on purpose >&2; exit 3"], creates: /never }
                """, as: "undo.yaml")
            // The apply waits in its command until the settings file is immutable.
            let failed = try Testbed.sh("""
                nspawnctl apply -f \(Self.directory)/undo.yaml --json > /tmp/e2e-af-undo.json 2>/tmp/e2e-af-undo.err &
                apply=$!
                for i in $(seq 1 300); do [ -e /run/e2e-af-hs/ready ] && break; sleep 0.1; done
                chattr +i /etc/systemd/nspawn/\(name).nspawn
                touch /run/e2e-af-hs/go
                wait $apply; status=$?
                chattr -i /etc/systemd/nspawn/\(name).nspawn
                echo "status=$status"; cat /tmp/e2e-af-undo.json
                """)
            #expect(failed.stdout.hasPrefix("status=1\n"), "\(failed)")
            let report = try decodeJSON(ApplyJSON.self, from: String(failed.stdout.drop { $0 != "{" }))
            let machine = report.machines.first
            #expect(machine?.result == "failed" && machine?.rolledBack == false, "\(failed)")
            #expect(machine?.error?.contains("exited with 3: failing on purpose") == true, "\(failed)")
            #expect(machine?.rollbackError?.contains("host-side files of machine '\(name)'") == true
                    && machine?.rollbackError?.contains("Operation not permitted") == true, "\(failed)")
            // The text form says it too; and with the directory writable again, apply's undo works.
            let settingsNow = try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
            #expect(settingsNow.contains("STAGE=new"), "the undo could not put the settings back: \(settingsNow)")
            try Testbed.mustSh("rm -f /run/e2e-af-hs/ready /run/e2e-af-hs/go")
            let text = try Testbed.sh("""
                (for i in $(seq 1 300); do [ -e /run/e2e-af-hs/ready ] && break; sleep 0.1; done; touch /run/e2e-af-hs/go) &
                nspawnctl apply -f \(Self.directory)/undo.yaml
                """)
            #expect(text.status == 1 && text.stderr.contains("\(name): ") && !text.stderr.contains("not rolled back"), "\(text)")
            #expect(try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn 2>/dev/null; true").stdout == settingsNow,
                    "the second apply's undo put back what it found")
        }
    }

    // MARK: Two applies at once

    static func contender(_ environment: String, name: String) -> String {
        """
        name: e2e-af-\(environment.lowercased())
        machines:
          \(name):
            image: { clone: \(base) }
            settings: { Environment: ["SIDE=\(environment)"] }
            state: running
        """
    }

    /// Two manifests that both declare the same new machine, started together (direct beside
    /// direct, and direct beside nspawnd): never a mix, never one's undo removing the other's
    /// machine; the loser exits 5 naming the holder.
    @Test(arguments: [false, true])
    func twoAppliesOfTheSameNewMachineNeverInterleave(secondThroughDaemon: Bool) throws {
        let name = "e2e-af-race"
        try Fixture.with([name, Self.base]) {
            try Self.makeBase()
            try Self.write(Self.contender("LEFT", name: name), as: "left.yaml")
            try Self.write(Self.contender("RIGHT", name: name), as: "right.yaml")
            for attempt in 1...3 {
                Fixture.remove([name])
                let race = try Testbed.sh("""
                    nspawnctl apply -f \(Self.directory)/left.yaml > /tmp/e2e-af-left.out 2>&1 & left=$!
                    nspawnctl apply \(secondThroughDaemon ? "--api " : "")-f \(Self.directory)/right.yaml > /tmp/e2e-af-right.out 2>&1 & right=$!
                    wait $left; l=$?; wait $right; r=$?
                    echo "left=$l right=$r"; cat /tmp/e2e-af-left.out /tmp/e2e-af-right.out
                    """)
                let statuses = race.stdout.split(separator: "\n").first.map(String.init) ?? ""
                #expect(["left=0 right=5", "left=5 right=0", "left=0 right=0"].contains(statuses), "attempt \(attempt): \(race)")
                if statuses.contains("=5") {
                    #expect(race.stdout.contains("machine '\(name)' is busy: another apply is converging it (pid ")
                            || race.stdout.contains("one apply at a time"), "attempt \(attempt): \(race)")
                }
                // The host is one manifest applied alone: its plan is empty, and the machine exists.
                let settings = try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
                let winner = settings.contains("SIDE=LEFT") ? "left.yaml" : "right.yaml"
                #expect(try Self.planChanges(winner) == 0, "attempt \(attempt): \(settings)")
                #expect(!(settings.contains("SIDE=LEFT") && settings.contains("SIDE=RIGHT")), "attempt \(attempt): \(settings)")
                #expect(try Fixture.machinedState(name) == "running", "attempt \(attempt): \(race)")
                let left = try Self.leftovers()
                #expect(left.isEmpty, "attempt \(attempt): \(left)")
            }
        }
    }

    // MARK: kill -9

    static let fleet = ["e2e-af-k1", "e2e-af-k2", "e2e-af-k3"]

    static var fleetManifest: String {
        "name: e2e-af-fleet\nmachines:\n" + fleet.map { name in
            """
              \(name):
                image: { clone: \(base) }
                flavor: small
                settings: { Environment: ["NAME=\(name)"] }
                files:
                  - { path: /etc/motd, content: "hello from \(name)\\n", owner: nobody }
                state: running
                run:
                  - { command: [/bin/touch, /var/ready], creates: /var/ready }
            """
        }.joined(separator: "\n")
    }

    /// After a kill at any point and one more apply: the manifest's state, nothing left over,
    /// and every machine carries the manifest's record.
    static func expectConverged(_ context: String) throws {
        let again = try Testbed.nspawnctl("apply", "-f", "\(directory)/fleet.yaml")
        #expect(again.status == Exit.ok, "\(context): \(again)")
        #expect(try planChanges("fleet.yaml") == 0, "\(context)")
        let left = try leftovers()
        #expect(left.isEmpty, "\(context): \(left)")
        for name in fleet {
            #expect(try Fixture.machinedState(name) == "running", "\(context): \(name)")
            let record = try Testbed.sh("getfattr --only-values -n user.nspawnctl.manifest /var/lib/machines/\(name)").stdout
            #expect(record.contains("\"manifest\":\"e2e-af-fleet\""), "\(context): \(name) record \(record)")
            #expect(try Testbed.mustSh("cat /var/lib/machines/\(name)/etc/motd").stdout == "hello from \(name)\n", "\(context): \(name)")
        }
        let images = try Fixture.imageNames().filter { $0.hasPrefix("e2e-af-") }
        #expect(images == ([base] + fleet).sorted(), "\(context): no machine the manifest does not own: \(images)")
    }

    /// Measures one apply of three machines, then kills `apply` (or nspawnd running it) at five
    /// points spread over that time; after each, one more apply converges.
    /// Killing nspawnd waits for the suites that use it (see `DaemonLock`).
    @Test(.killsDaemon, arguments: [false, true])
    func killNineAtAnyPointThenApplyAgainConverges(throughDaemon: Bool) throws {
        try Fixture.with(Self.fleet + [Self.base]) {
            try Self.makeBase()
            try Self.write(Self.fleetManifest, as: "fleet.yaml")
            let timed = try Testbed.sh("start=$(date +%s%N); nspawnctl apply -f \(Self.directory)/fleet.yaml >/dev/null; echo $? $(( ($(date +%s%N) - start) / 1000000 ))")
            let parts = timed.trimmed.split(separator: " ")
            #expect(parts.first == "0", "\(timed)")
            let milliseconds = Int(parts.last ?? "") ?? 3000
            for fraction in [0.1, 0.3, 0.5, 0.7, 0.9] {
                Fixture.remove(Self.fleet)
                let delay = Double(milliseconds) * fraction / 1000
                let victim = throughDaemon ? "kill -9 $(systemctl show -p MainPID --value nspawnd.service)" : "kill -9 $apply"
                let killed = try Testbed.sh("""
                    nspawnctl apply \(throughDaemon ? "--api " : "")-f \(Self.directory)/fleet.yaml >/dev/null 2>&1 & apply=$!
                    sleep \(String(format: "%.2f", delay)); \(victim); wait $apply; echo "apply=$?"
                    """)
                let context = "\(throughDaemon ? "nspawnd" : "apply") killed at \(Int(fraction * 100)) % of \(milliseconds) ms"
                #expect(killed.status == 0, "\(context): \(killed)")
                try Self.expectConverged(context)
            }
        }
    }
}
