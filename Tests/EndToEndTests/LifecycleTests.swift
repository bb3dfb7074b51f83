import Foundation
import Testing

/// Codable mirrors of nspawnctl's JSON, decoded independently of NspawnKit's types.
struct ListedMachine: Decodable {
    var name: String
    var state: String
    var os: String?
    var addresses: [String]
    var readOnly: Bool?
    var enabled: Bool
}

struct StatusJSON: Decodable {
    struct Machine: Decodable {
        var leader: UInt32?
        var unit: String?
        var rootDirectory: String?
    }
    struct Image: Decodable {
        var path: String?
        var readOnly: Bool?
    }
    var name: String
    var state: String
    var os: String?
    var enabled: Bool
    var machine: Machine?
    var image: Image?
}

struct ErrorJSON: Decodable {
    struct Detail: Decodable {
        var code: String
        var message: String
        var busError: String?
    }
    var error: Detail
}

/// Exit codes as the README documents them.
enum Exit {
    static let ok: Int32 = 0
    static let invalidInput: Int32 = 2
    static let notFound: Int32 = 3
    static let permissionDenied: Int32 = 4
    static let conflict: Int32 = 5
}

@Suite("EndToEnd", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct EndToEndTests {
    init() throws {
        try Testbed.mustSh("command -v nspawnctl && command -v nspawn-ls")
    }

    @Test func startRunsTheServiceAndMachinedSeesIt() throws {
        try Fixture.with(["e2e-start"]) {
            try Fixture.busybox("e2e-start")
            let start = try Testbed.nspawnctl("start", "e2e-start")
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Fixture.machinedState("e2e-start") == "running")
            #expect(try Testbed.run(["systemctl", "is-active", "systemd-nspawn@e2e-start.service"]).trimmed == "active")

            let again = try Testbed.nspawnctl("start", "e2e-start")
            #expect(again.status == Exit.ok, "starting a running machine is not an error: \(again)")

            let status = try decodeJSON(StatusJSON.self, from: try Testbed.nspawnctl("status", "e2e-start", "--json").stdout)
            let leader = try Testbed.run(["machinectl", "show", "e2e-start", "-p", "Leader", "--value"]).trimmed
            #expect(status.state == "running")
            #expect(status.machine?.leader.map(String.init) == leader)
            #expect(status.machine?.unit == "systemd-nspawn@e2e-start.service")
            #expect(status.image?.path == "/var/lib/machines/e2e-start")
            #expect(status.os == "BusyBox sleeper")
        }
    }

    @Test func listMatchesMachinedsOwnView() throws {
        try Fixture.with(["e2e-ls-a", "e2e-ls-b"]) {
            try Fixture.busybox("e2e-ls-a")
            try Fixture.busybox("e2e-ls-b")
            try Testbed.mustSh("machinectl start e2e-ls-a")
            let listed = try decodeJSON([ListedMachine].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
            let byName = Dictionary(uniqueKeysWithValues: listed.map { ($0.name, $0) })

            let running = try Testbed.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout
                .split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            let images = try Fixture.imageNames()
            #expect(Set(listed.map(\.name)) == Set(running).union(images))
            #expect(byName["e2e-ls-a"]?.state == "running")
            #expect(byName["e2e-ls-b"]?.state == "stopped")
            #expect(byName["e2e-ls-a"]?.os == "BusyBox sleeper")
            #expect(byName["e2e-ls-b"]?.readOnly == false)

            let table = try Testbed.nspawnctl("ls")
            #expect(table.stdout.hasPrefix("NAME"))
            #expect(table.stdout.contains("e2e-ls-b"))
            let alias = try Testbed.run(["nspawn-ls"])
            #expect(alias.status == Exit.ok && alias.stdout == table.stdout)
        }
    }

    @Test func listKeepsEveryFieldWithManyRunningMachines() throws {
        // dbus-daemon allows 128 outstanding replies per connection; 40 machines need 160 queries.
        let names = (1...40).map { "e2e-many-\($0)" }
        try Fixture.with(names) {
            for name in names { try Fixture.busybox(name) }
            try Testbed.mustSh("machinectl start \(names.joined(separator: " "))")
            let listed = try decodeJSON([ListedMachine].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
            let many = listed.filter { $0.name.hasPrefix("e2e-many-") }
            #expect(many.count == 40)
            #expect(many.allSatisfy { $0.state == "running" && $0.os == "BusyBox sleeper" },
                    "\(many.filter { $0.os == nil }.map(\.name))")
        }
    }

    @Test func stopEscalatesForAPayloadThatIgnoresSIGTERM() throws {
        try Fixture.with(["e2e-stop"]) {
            try Fixture.busybox("e2e-stop")
            try Testbed.mustSh("machinectl start e2e-stop")
            let stop = try Testbed.nspawnctl("stop", "e2e-stop", "--timeout", "1")
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Fixture.machinedState("e2e-stop") == nil, "stop must return only once the machine is gone")
            #expect(try Testbed.run(["systemctl", "is-active", "systemd-nspawn@e2e-stop.service"]).trimmed != "active")

            let stopped = try Testbed.nspawnctl("stop", "e2e-stop")
            #expect(stopped.status == Exit.conflict, "\(stopped)")
            #expect(stopped.stderr.contains("'e2e-stop' is not running"))
            #expect(try Fixture.imageNames().contains("e2e-stop"), "a failed stop changes nothing")
        }
    }

    @Test func stopDoesNotWaitForASignalTheLeaderCannotCatch() throws {
        try Fixture.with(["e2e-stop-fast"]) {
            try Fixture.busybox("e2e-stop-fast")
            try Testbed.mustSh("machinectl start e2e-stop-fast")
            let leader = try Testbed.run(["machinectl", "show", "e2e-stop-fast", "-p", "Leader", "--value"]).trimmed
            let masks = try Testbed.run(["sh", "-c", "grep -E '^Sig(Cgt|Blk)' /proc/\(leader)/status"]).stdout
            #expect(masks.split(separator: "\n").count == 2 && masks.split(separator: "\n").allSatisfy { $0.hasSuffix("0000000000000000") },
                    "the fixture's sleep must neither catch nor block a signal: \(masks)")
            // The default timeout is 90 s; the leader cannot act on TERM, so stop escalates at once.
            let started = ContinuousClock.now
            let stop = try Testbed.nspawnctl("stop", "e2e-stop-fast")
            let elapsed = ContinuousClock.now - started
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(elapsed < .seconds(3), "stop took \(elapsed)")
            #expect(try Fixture.machinedState("e2e-stop-fast") == nil)
        }
    }

    @Test func hardRebootTerminatesAndStartsAgain() throws {
        try Fixture.with(["e2e-reset"]) {
            try Fixture.busybox("e2e-reset")
            let stopped = try Testbed.nspawnctl("reboot", "--hard", "e2e-reset")
            #expect(stopped.status == Exit.conflict, "a stopped machine has nothing to reset: \(stopped)")
            try Testbed.mustSh("machinectl start e2e-reset")
            let before = try Testbed.run(["machinectl", "show", "e2e-reset", "-p", "Leader", "--value"]).trimmed
            let reset = try Testbed.nspawnctl("reboot", "--hard", "e2e-reset")
            #expect(reset.status == Exit.ok, "\(reset)")
            let after = try Testbed.run(["machinectl", "show", "e2e-reset", "-p", "Leader", "--value"]).trimmed
            #expect(try Fixture.machinedState("e2e-reset") == "running")
            #expect(!after.isEmpty && after != before, "a new leader after the reset: \(before) -> \(after)")
            #expect(try Testbed.run(["systemctl", "is-active", "systemd-nspawn@e2e-reset.service"]).trimmed == "active")
        }
    }

    @Test func stopPowersOffASystemdPayload() throws {
        try Fixture.with(["e2e-deb"]) {
            try Fixture.systemdRoot("e2e-deb")
            let start = try Testbed.nspawnctl("start", "e2e-deb")
            #expect(start.status == Exit.ok, "\(start)")
            // Wait for the guest to finish booting, so the power-off request is honoured by a running systemd.
            try Testbed.mustSh("for i in $(seq 1 100); do s=$(systemctl -M e2e-deb is-system-running 2>/dev/null); case $s in running|degraded) exit 0;; esac; sleep 0.2; done; exit 1")
            let leaderOS = try decodeJSON(StatusJSON.self, from: try Testbed.nspawnctl("status", "e2e-deb", "--json").stdout).os
            #expect(leaderOS?.contains("Debian") == true)
            let stop = try Testbed.nspawnctl("stop", "e2e-deb", "--timeout", "60")
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Fixture.machinedState("e2e-deb") == nil)
            // A clean power-off ends the guest's journal with systemd's own shutdown, not a kill.
            let journal = try Testbed.run(["journalctl", "-u", "systemd-nspawn@e2e-deb.service", "--no-pager", "-o", "cat"]).stdout
            #expect(journal.contains("Power-Off") || journal.contains("powering off") || journal.contains("Powering off"), "\(journal.suffix(2000))")
        }
    }

    @Test func repeatedStopStartCyclesDoNotHitTheStartLimit() throws {
        try Fixture.with(["e2e-cycle"]) {
            try Fixture.busybox("e2e-cycle")
            // systemd refuses a sixth start within 10 s of a unit that keeps failing;
            // a machine stopped on request must not count as failing.
            for cycle in 1...7 {
                let start = try Testbed.nspawnctl("start", "e2e-cycle")
                #expect(start.status == Exit.ok, "cycle \(cycle): \(start)")
                let stop = try Testbed.nspawnctl("stop", "--timeout", "0", "e2e-cycle")
                #expect(stop.status == Exit.ok, "cycle \(cycle): \(stop)")
                if start.status != Exit.ok || stop.status != Exit.ok { break }
            }
            let state = try Testbed.run(["systemctl", "show", "systemd-nspawn@e2e-cycle.service", "-p", "ActiveState", "--value"]).trimmed
            #expect(state == "inactive")
        }
    }

    @Test func aFailedStartSaysWhyAndWhereToLook() throws {
        try Fixture.with(["e2e-broken"]) {
            // No /usr: systemd-nspawn refuses the directory, so the start job fails.
            try Testbed.mustSh("mkdir -p /var/lib/machines/e2e-broken/etc && printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1\\n' > /etc/systemd/nspawn/e2e-broken.nspawn")
            let start = try Testbed.nspawnctl("start", "e2e-broken")
            #expect(start.status == 1, "\(start)")
            #expect(start.stderr.contains("systemd-nspawn@e2e-broken.service") && start.stderr.contains("journalctl -u"), "\(start)")
            #expect(start.stderr.contains("unit result '"), "\(start)")
            #expect(try Fixture.machinedState("e2e-broken") == nil)
        }
    }

    @Test func bulkStartRunsEveryMachineAndReportsEveryFailure() throws {
        let good = (1...12).map { "e2e-bulk-\($0)" }
        try Fixture.with(good + ["e2e-bulk-broken", "e2e-bulk-missing"]) {
            for name in good { try Fixture.busybox(name) }
            try Testbed.mustSh("mkdir -p /var/lib/machines/e2e-bulk-broken/etc && printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1\\n' > /etc/systemd/nspawn/e2e-bulk-broken.nspawn")
            // One already running: starting it again is not an error.
            try Testbed.mustSh("machinectl start e2e-bulk-1")
            let start = try Testbed.run(["nspawnctl", "start"] + good.prefix(6) + ["e2e-bulk-missing", "e2e-bulk-broken"] + good.dropFirst(6))
            #expect(start.status == 1, "two different failures give the general status: \(start)")
            let errors = start.stderr.split(separator: "\n").map(String.init)
            #expect(errors.count == 2, "\(start)")
            #expect(errors.first?.contains("e2e-bulk-missing") == true, "failures come in the order given: \(start)")
            #expect(errors.last?.contains("systemd-nspawn@e2e-bulk-broken.service") == true, "\(start)")
            let running = try Testbed.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout
                .split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            #expect(Set(good).isSubset(of: Set(running)), "\(running)")
            #expect(!running.contains("e2e-bulk-broken"))
            for name in good {
                #expect(try Testbed.run(["systemctl", "is-active", "systemd-nspawn@\(name).service"]).trimmed == "active", "\(name)")
            }

            let stop = try Testbed.run(["nspawnctl", "stop", "--timeout", "5"] + good)
            #expect(stop.status == Exit.ok, "\(stop)")
            let left = try Testbed.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout
            #expect(!left.contains("e2e-bulk-"), "\(left)")

            let missingOnly = try Testbed.nspawnctl("start", "e2e-bulk-missing", "e2e-bulk-gone")
            #expect(missingOnly.status == Exit.notFound, "\(missingOnly)")
        }
    }

    @Test func rebootGivesTheMachineANewLeader() throws {
        try Fixture.with(["e2e-reboot"]) {
            try Fixture.busybox("e2e-reboot")
            try Testbed.mustSh("machinectl start e2e-reboot")
            let before = try Testbed.run(["machinectl", "show", "e2e-reboot", "-p", "Leader", "--value"]).trimmed
            let reboot = try Testbed.nspawnctl("reboot", "e2e-reboot")
            #expect(reboot.status == Exit.ok, "\(reboot)")
            let after = try Testbed.run(["machinectl", "show", "e2e-reboot", "-p", "Leader", "--value"]).trimmed
            #expect(!after.isEmpty && after != before)
            #expect(try Fixture.machinedState("e2e-reboot") == "running")
        }
    }

    @Test func terminateAndKillEndTheMachine() throws {
        try Fixture.with(["e2e-term", "e2e-kill"]) {
            try Fixture.busybox("e2e-term")
            try Fixture.busybox("e2e-kill")
            try Testbed.mustSh("machinectl start e2e-term e2e-kill")
            let terminate = try Testbed.nspawnctl("terminate", "e2e-term")
            #expect(terminate.status == Exit.ok, "\(terminate)")
            #expect(try Fixture.machinedState("e2e-term") == nil)

            let kill = try Testbed.nspawnctl("kill", "--signal", "KILL", "--kill-whom", "leader", "e2e-kill")
            #expect(kill.status == Exit.ok, "\(kill)")
            try Testbed.mustSh("for i in $(seq 1 100); do machinectl show e2e-kill >/dev/null 2>&1 || exit 0; sleep 0.1; done; exit 1")

            let unknown = try Testbed.nspawnctl("kill", "--signal", "HUP", "e2e-no-such-machine")
            #expect(unknown.status == Exit.notFound, "\(unknown)")
        }
    }

    @Test func enableAndDisableTouchTheUnitAndMachinesTarget() throws {
        try Fixture.with(["e2e-enable"]) {
            try Fixture.busybox("e2e-enable")
            let enable = try Testbed.nspawnctl("enable", "e2e-enable", "--json")
            #expect(enable.status == Exit.ok, "\(enable)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-enable.service"]).trimmed == "enabled")
            #expect(try Testbed.run(["systemctl", "is-enabled", "machines.target"]).trimmed == "enabled")
            let listed = try decodeJSON([ListedMachine].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
            #expect(listed.first { $0.name == "e2e-enable" }?.enabled == true)

            let disable = try Testbed.nspawnctl("disable", "e2e-enable")
            #expect(disable.status == Exit.ok, "\(disable)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-enable.service"]).trimmed != "enabled")

            let missing = try Testbed.nspawnctl("enable", "e2e-no-such-image")
            #expect(missing.status == Exit.notFound, "\(missing)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-no-such-image.service"]).trimmed != "enabled")
        }
    }

    @Test func removeRefusesARunningMachineUnlessForced() throws {
        try Fixture.with(["e2e-rm"]) {
            try Fixture.busybox("e2e-rm")
            try Testbed.mustSh("machinectl start e2e-rm && systemctl enable systemd-nspawn@e2e-rm.service")
            let refused = try Testbed.nspawnctl("remove", "e2e-rm")
            #expect(refused.status == Exit.conflict, "\(refused)")
            #expect(try Fixture.machinedState("e2e-rm") == "running")
            #expect(try Fixture.imageNames().contains("e2e-rm"))

            let forced = try Testbed.nspawnctl("remove", "--force", "--timeout", "1", "e2e-rm")
            #expect(forced.status == Exit.ok, "\(forced)")
            #expect(try Fixture.machinedState("e2e-rm") == nil)
            #expect(try !Fixture.imageNames().contains("e2e-rm"))
            #expect(try Testbed.sh("test -e /var/lib/machines/e2e-rm || test -e /etc/systemd/nspawn/e2e-rm.nspawn").status != 0,
                    "the image and its settings are gone")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-rm.service"]).trimmed != "enabled")

            let again = try Testbed.nspawnctl("remove", "e2e-rm")
            #expect(again.status == Exit.notFound, "\(again)")
        }
    }

    @Test func renameCloneAndReadOnlyAreSeenByMachined() throws {
        try Fixture.with(["e2e-img", "e2e-img2", "e2e-copy", "e2e-other"]) {
            try Fixture.busybox("e2e-img")
            try Fixture.busybox("e2e-other")
            let rename = try Testbed.nspawnctl("rename", "e2e-img", "e2e-img2")
            #expect(rename.status == Exit.ok, "\(rename)")
            var images = try Fixture.imageNames()
            #expect(images.contains("e2e-img2") && !images.contains("e2e-img"))

            let taken = try Testbed.nspawnctl("rename", "e2e-img2", "e2e-other")
            #expect(taken.status == Exit.conflict, "\(taken)")

            let clone = try Testbed.nspawnctl("clone", "--read-only", "e2e-img2", "e2e-copy")
            #expect(clone.status == Exit.ok, "\(clone)")
            #expect(try Testbed.run(["machinectl", "show-image", "e2e-copy", "-p", "ReadOnly", "--value"]).trimmed == "yes")
            let cloneOver = try Testbed.nspawnctl("clone", "e2e-img2", "e2e-other")
            #expect(cloneOver.status == Exit.conflict, "\(cloneOver)")

            #expect(try Testbed.nspawnctl("read-only", "e2e-img2").status == Exit.ok)
            #expect(try Testbed.run(["machinectl", "show-image", "e2e-img2", "-p", "ReadOnly", "--value"]).trimmed == "yes")
            #expect(try Testbed.nspawnctl("read-only", "e2e-img2", "no").status == Exit.ok)
            #expect(try Testbed.run(["machinectl", "show-image", "e2e-img2", "-p", "ReadOnly", "--value"]).trimmed == "no")

            try Testbed.mustSh("machinectl start e2e-other")
            let renameRunning = try Testbed.nspawnctl("rename", "e2e-other", "e2e-img")
            #expect(renameRunning.status == Exit.conflict, "\(renameRunning)")
            images = try Fixture.imageNames()
            #expect(images.contains("e2e-other") && !images.contains("e2e-img"))
        }
    }

    @Test func badInputGetsTheRightExitCodeAndChangesNothing() throws {
        try Fixture.with(["e2e-bad"]) {
            try Fixture.busybox("e2e-bad")
            let before = try Fixture.imageNames()
            for name in ["../etc", ".hidden", "a..b", "with space", String(repeating: "x", count: 65), ""] {
                let result = try Testbed.run(["nspawnctl", "start", name])
                #expect(result.status == Exit.invalidInput, "\(name.debugDescription): \(result)")
                #expect(result.stderr.contains("invalid machine name"), "\(result)")
            }
            let badRemove = try Testbed.nspawnctl("remove", "../e2e-bad")
            #expect(badRemove.status == Exit.invalidInput)
            let unknown = try Testbed.nspawnctl("start", "e2e-no-such-image", "--json")
            #expect(unknown.status == Exit.notFound, "\(unknown)")
            let error = try decodeJSON(ErrorJSON.self, from: unknown.stderr)
            #expect(error.error.code == "not_found" && error.error.message.contains("'e2e-no-such-image'"))
            let stopUnknown = try Testbed.nspawnctl("stop", "e2e-no-such-image")
            #expect(stopUnknown.status == Exit.notFound, "\(stopUnknown)")
            let badTimeout = try Testbed.nspawnctl("stop", "e2e-bad", "--timeout", "-5")
            #expect(badTimeout.status == Exit.invalidInput, "\(badTimeout)")
            #expect(try Fixture.imageNames() == before)
            #expect(try Testbed.sh("ls /etc/systemd/system | grep -c e2e").trimmed == "0")
        }
    }

    @Test func unprivilegedUsersArePermissionDenied() throws {
        try Fixture.with(["e2e-perm"]) {
            try Fixture.busybox("e2e-perm")
            let start = try Testbed.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "nspawnctl", "start", "e2e-perm"])
            #expect(start.status == Exit.permissionDenied, "\(start)")
            #expect(start.stderr.contains("permission denied"))
            #expect(try Fixture.machinedState("e2e-perm") == nil)
        }
    }

    @Test func classicNamesRunTheirCommands() throws {
        try Fixture.with(["e2e-classic"]) {
            try Fixture.busybox("e2e-classic")
            let start = try Testbed.run(["nspawn-start", "e2e-classic"])
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Fixture.machinedState("e2e-classic") == "running")
            let stop = try Testbed.run(["nspawn-stop", "--timeout", "1", "e2e-classic"])
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Fixture.machinedState("e2e-classic") == nil)
            let del = try Testbed.run(["nspawn-del", "e2e-classic"])
            #expect(del.status == Exit.ok, "\(del)")
            #expect(try !Fixture.imageNames().contains("e2e-classic"))
        }
    }
}
