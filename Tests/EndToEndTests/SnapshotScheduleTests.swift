import Foundation
import Testing

/// Snapshot schedules and expiry as systemd runs them: the timer and its service seen with
/// systemctl and journalctl, the snapshots with ls on the store, with nspawnd stopped. A suite
/// of its own: stopping nspawnd needs every other daemon user to wait (`.killsDaemon`).
@Suite("SnapshotSchedule", .serialized, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct SnapshotScheduleEndToEndTests {
    /// The names in the machine's snapshot store, sorted.
    static func storedSnapshots(_ name: String) throws -> [String] {
        try Testbed.mustSh("ls -1 '\(CopyFixtures.snapshots)/\(name)' 2>/dev/null || true").stdout
            .split(separator: "\n").map(String.init).sorted()
    }

    @Test(.killsDaemon) func aScheduleKeepsItsNewestSnapshotsWithNoNspawnctlRunningAndExpiredOnesVanish() throws {
        let name = "e2e-sched"
        let timer = "nspawnctl-snapshots-\(name).timer"
        let service = "nspawnctl-snapshots-\(name).service"
        try CopyFixtures.with([name]) {
            try Fixture.busybox(name)

            // Hostile input: refused with exit 2 before anything is written.
            for bad in [["--every", "0s", "--keep", "3"], ["--every", "1h"], ["--every", "soon", "--keep", "1"],
                        ["--every", "1h", "--keep", "0"], ["--every", "1h", "--keep", "2", "--none"], ["--keep", "3"]] {
                let refused = try Testbed.run(["nspawnctl", "snapshot-schedule", name] + bad)
                #expect(refused.status == Exit.invalidInput, "\(bad): \(refused)")
            }
            #expect(try Testbed.nspawnctl("snapshot", name, "x", "--expire", "soon").status == Exit.invalidInput)
            #expect(try Testbed.nspawnctl("snapshot-schedule", "e2e-sched-missing", "--every", "1h", "--keep", "1").status == Exit.notFound)
            #expect(try Testbed.sh("ls /etc/systemd/system/nspawnctl-snapshots-e2e-sched*").status != 0, "nothing written for refused input")
            #expect(try Self.storedSnapshots(name).isEmpty)

            // A stopped machine's root does not change: its runs take nothing.
            try Testbed.mustSh("systemctl start systemd-nspawn@\(name).service")
            let set = try Testbed.nspawnctl("snapshot-schedule", "--json", name, "--every", "2s", "--keep", "3")
            #expect(set.status == Exit.ok, "\(set)")
            #expect(set.stdout.contains("\"every_seconds\" : 2") || set.stdout.contains("\"every_seconds\":2"), "\(set)")
            #expect(try Testbed.sh("systemctl is-enabled \(timer)").trimmed == "enabled")
            #expect(try Testbed.sh("systemctl is-active \(timer)").trimmed == "active")
            let verify = try Testbed.sh("systemd-analyze verify /etc/systemd/system/\(timer) /etc/systemd/system/\(service) 2>&1")
            #expect(!verify.stdout.contains("nspawnctl-snapshots"), "systemd-analyze finds nothing wrong with our units: \(verify)")
            #expect(try Testbed.nspawnctl("config", name).stdout.contains("snapshots: every 2s, keep 3"))
            #expect(try Testbed.nspawnctl("status", name).stdout.contains("Schedule: snapshots every 2s, keep 3"))

            // No nspawnd (nor any nspawnctl but the timer's own) while the schedule runs.
            try Testbed.mustSh("systemctl stop nspawnd.service; for i in $(seq 1 50); do pgrep -x nspawnd >/dev/null || exit 0; sleep 0.1; done; exit 1")
            let started = Date()
            Thread.sleep(forTimeInterval: 10.5)
            #expect(try Testbed.sh("pgrep -x nspawnd").status != 0, "nothing started nspawnd")
            // Let the run in progress (if any) end, then count.
            try Testbed.mustSh("systemctl stop \(timer); for i in $(seq 1 100); do systemctl -q is-active \(service) || exit 0; sleep 0.1; done; exit 1")
            let kept = try Self.storedSnapshots(name).filter { !$0.hasPrefix(".") }
            #expect(kept.count == 3 && kept.allSatisfy { $0.hasPrefix("auto-") }, "\(kept)")
            let journal = try Testbed.mustSh("journalctl -q -o cat -u \(service) --since @\(Int(started.timeIntervalSince1970) - 1)").stdout
            let taken = journal.split(separator: "\n").filter { $0.hasPrefix("took snapshot 'auto-") }.count
            let pruned = journal.split(separator: "\n").filter { $0.hasPrefix("removed snapshots of '\(name)'") }.count
            #expect(taken >= 4 && pruned >= 1, "the timer took more than it keeps and removed the oldest: \(journal)")
            print("snapshot schedule: \(taken) taken in 10.5 s with --every 2s, \(kept.count) kept")

            // The schedule goes; its snapshots stay, and the timer is gone with its enablement.
            try Testbed.mustSh("systemctl start \(timer)")
            #expect(try Testbed.nspawnctl("snapshot-schedule", name, "--none").status == Exit.ok)
            #expect(try Testbed.sh("test -e /etc/systemd/system/\(timer) || test -e /etc/systemd/system/timers.target.wants/\(timer)").status != 0)
            #expect(try Testbed.sh("systemctl is-active \(timer)").trimmed != "active")
            #expect(try Self.storedSnapshots(name).filter { !$0.hasPrefix(".") } == kept)

            // A snapshot with an expiry is removed by the timer at that time; one without stays.
            #expect(try Testbed.nspawnctl("snapshot", name, "keep-me").status == Exit.ok)
            let expiring = try Testbed.nspawnctl("snapshot", "--json", name, "short-lived", "--expire", "3s")
            #expect(expiring.status == Exit.ok && expiring.stdout.contains("expires"), "\(expiring)")
            #expect(try Testbed.sh("systemctl show -p TimersCalendar --value \(timer)").stdout.contains("OnCalendar="), "an expiry-only timer")
            let listed = try Testbed.nspawnctl("snapshots", name)
            let row = listed.stdout.split(separator: "\n").first { $0.hasPrefix("short-lived ") }
            #expect(listed.stdout.contains("EXPIRES") && row != nil && row?.hasSuffix(" -") == false, "\(listed)")
            #expect(listed.stdout.split(separator: "\n").first { $0.hasPrefix("auto-") }?.hasSuffix("by schedule") == true, "\(listed)")
            var gone = false
            for _ in 0..<80 where !gone {
                Thread.sleep(forTimeInterval: 0.1)
                gone = try !Self.storedSnapshots(name).contains("short-lived")
            }
            Thread.sleep(forTimeInterval: 0.5)
            #expect(gone, "the expired snapshot vanished")
            #expect(try Self.storedSnapshots(name).contains("keep-me"))
            #expect(try Testbed.sh("test -e /etc/systemd/system/\(timer)").status != 0, "no timer once nothing is left to expire")
            #expect(try Testbed.sh("systemctl is-failed \(service)").trimmed != "failed")
        }
    }

}

/// In the serialized suite: it needs nspawnd no more than other verbs do.
extension EndToEndTests {
    @Test func aManifestConvergesTheScheduleAndRenameAndRemoveCarryIt() throws {
        let name = "e2e-sched-m"
        let renamed = "e2e-sched-n"
        try CopyFixtures.with([name, renamed]) {
            try Fixture.busybox(name)
            func manifest(_ snapshots: String) throws {
                try Testbed.mustSh("mkdir -p /tmp/e2e-sched && cat > /tmp/e2e-sched/site.yaml <<'MANIFEST'\nmachines:\n  \(name):\n    snapshots: \(snapshots)\nMANIFEST")
            }
            struct Plan: Decodable {
                struct Machine: Decodable { struct Change: Decodable { var op: String; var field: String }; var changes: [Change] }
                var machines: [Machine]
            }
            func planned() throws -> [String] {
                try decodeJSON(Plan.self, from: try Testbed.mustSh("nspawnctl plan -f /tmp/e2e-sched/site.yaml --json").stdout)
                    .machines.flatMap(\.changes).map { "\($0.op) \($0.field)" }
            }
            try manifest("{ every: 1h, keep: 24, keep_daily: 7 }")
            #expect(try planned() == ["+ snapshots"])
            try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-sched/site.yaml")
            #expect(try Testbed.mustSh("nspawnctl snapshot-schedule \(name)").stdout.contains("snapshots every 1h, keep 24, 7 daily"))
            #expect(try Testbed.sh("systemctl is-enabled nspawnctl-snapshots-\(name).timer").trimmed == "enabled")
            #expect(try planned() == [], "nothing left to change")
            try manifest("{ every: 30min, keep: 2 }")
            #expect(try planned() == ["~ snapshots"])
            try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-sched/site.yaml")
            let every = try Testbed.mustSh("systemctl show -p TimersMonotonic --value nspawnctl-snapshots-\(name).timer").stdout
            #expect(every.contains("30min"), "systemd reads the new interval: \(every)")

            // rename writes the units again for the new name; remove takes them.
            try Testbed.mustSh("nspawnctl rename \(name) \(renamed)")
            #expect(try Testbed.sh("test -e /etc/systemd/system/nspawnctl-snapshots-\(name).timer || test -e /etc/systemd/system/timers.target.wants/nspawnctl-snapshots-\(name).timer").status != 0)
            #expect(try Testbed.sh("systemctl is-enabled nspawnctl-snapshots-\(renamed).timer").trimmed == "enabled")
            #expect(try Testbed.mustSh("cat /etc/systemd/system/nspawnctl-snapshots-\(renamed).service").stdout.contains("--run \(renamed)"))
            try Testbed.mustSh("nspawnctl remove \(renamed)")
            #expect(try Testbed.sh("ls /etc/systemd/system/nspawnctl-snapshots-\(renamed).* /etc/systemd/system/timers.target.wants/nspawnctl-snapshots-\(renamed).timer").status != 0)
        }
    }
}
