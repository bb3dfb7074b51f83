import Foundation
import Testing

/// `copy-machine` and `move-machine` between two real systemd hosts: the testbed and its btrfs
/// sibling (scripts/test boots both), joined by a veth pair and reached with the testbed's own
/// ssh (Tests/Fixtures/link-testbeds). What lands is held against what left with find,
/// getfattr, sha256sum and systemctl on each side, and the link's bytes are the kernel's count.
@Suite("CopyMachine", .serialized, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct CopyMachineTests {
    static let target = "ssh://root@10.251.0.2"

    struct Copied: Decodable {
        var bytesSent: UInt64
        var moved: Bool
        var fromSnapshot: Bool
        var snapshots: [String]
        var verifiedOnTarget: [String]
        var startedOnTarget: Bool
        var replacedOnTarget: Bool
        var method: String
        var refresh: Refresh?
        var seconds: Double
    }

    struct Refresh: Decodable {
        var files: Int
        var sent: Int
        var sentBytes: Int64
        var kept: Int
    }

    /// Runs `body` in the second host.
    @discardableResult
    static func onTarget<T>(_ body: () throws -> T) throws -> T {
        var value: T?
        try Testbed.withMachinesOn("btrfs") { value = try body() }
        guard let value else { throw TestbedError.notConfigured }
        return value
    }

    static func link() throws {
        guard let testbed = Testbed.configuredName else { throw TestbedError.notConfigured }
        let script = Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/link-testbeds").path
        let linked = try Testbed.runLocal([script, testbed, "\(testbed)-btrfs"])
        guard linked.status == 0 else {
            Issue.record("Tests/Fixtures/link-testbeds: \(linked)")
            throw TestbedError.setupFailed("link-testbeds")
        }
    }

    /// The machines removed on both hosts before and after `body`.
    static func with(_ names: [String], _ body: () throws -> Void) throws {
        try onTarget { CopyFixtures.removeSnapshots(names); Fixture.remove(names) }
        defer { _ = try? onTarget { CopyFixtures.removeSnapshots(names); Fixture.remove(names) } }
        try CopyFixtures.with(names, body)
    }

    /// Bytes the second host's end of the link has received, as its kernel counts them.
    static func receivedOnTarget() throws -> UInt64 {
        let text = try onTarget { try Testbed.mustSh("cat /sys/class/net/e2e-travel-b/statistics/rx_bytes").trimmed }
        return UInt64(text) ?? 0
    }

    /// The fingerprint of ExportTests, read back; on btrfs directories count no links.
    static func fingerprint(_ name: String) throws -> String {
        try EndToEndTests.writeFingerprint(name, to: "/var/tmp/e2e-travel-fingerprint.txt", directoryLinks: false)
        return try Testbed.mustSh("cat /var/tmp/e2e-travel-fingerprint.txt; rm -f /var/tmp/e2e-travel-fingerprint.txt").stdout
    }

    /// The lines only one of `a` and `b` has, for a failure's message.
    static func difference(_ a: String, _ b: String) -> String {
        let left = Set(a.split(separator: "\n")), right = Set(b.split(separator: "\n"))
        return (left.subtracting(right).map { "- \($0)" } + right.subtracting(left).map { "+ \($0)" }).sorted().joined(separator: "\n")
    }

    /// What a refused copy must not leave on the target: no such machine, no import's leftovers.
    static func targetHoldsNothingOf(_ name: String) throws -> String {
        try onTarget {
            try Testbed.sh("ls -d /var/lib/machines/\(name) /etc/systemd/nspawn/\(name).nspawn 2>/dev/null; ls -A /var/lib/machines | grep '^\\.#import\\.'; true").trimmed
        }
    }

    @Test(.testbedAccounts) func aMachineCopiesToASecondHostWholeAndBadTargetsAreRefused() throws {
        let name = "e2e-travel"
        let renamed = "e2e-travel-copy"
        try Self.with([name, renamed]) {
            try Self.link()
            try Fixture.busybox(name)
            try CopyFixtures.makeTree("/var/lib/machines/\(name)/srv/tree")
            try Testbed.mustSh("""
                set -e
                printf 'travels\\n' > /var/lib/machines/\(name)/srv/payload
                nspawnctl config \(name) --set Hostname=traveller --env GREETING=hi --flavor small >/dev/null
                nspawnctl enable \(name) >/dev/null
                nspawnctl snapshot \(name) one >/dev/null
                """)
            let before = try Self.fingerprint(name)

            let received = try Self.receivedOnTarget()
            let copied = try Testbed.nspawnctl("copy-machine", "--json", "--snapshots", name, Self.target)
            #expect(copied.status == Exit.ok, "\(copied)")
            guard copied.status == Exit.ok else { return }
            let result = try decodeJSON(Copied.self, from: copied.stdout)
            let onLink = try Self.receivedOnTarget() - received
            #expect(result.verifiedOnTarget.contains("parts") && result.snapshots == ["one"] && !result.moved && !result.fromSnapshot, "\(copied.stdout)")
            #expect(onLink >= result.bytesSent, "the link carried the archive: \(onLink) bytes for \(result.bytesSent) sent")
            let there = try Self.onTarget { try Self.fingerprint(name) }
            #expect(there == before, "the machine arrived as it left: \(Self.difference(before, there))")
            #expect(try Self.fingerprint(name) == before, "the source is as it was")
            print("copy-machine: \(before.split(separator: "\n").count) lines of fingerprint equal on the second host; \(result.bytesSent) bytes sent, \(onLink) on the link, \(result.seconds) s")

            // The name is taken there: refused (5), naming the host; --force replaces it.
            let again = try Testbed.nspawnctl("copy-machine", name, Self.target)
            #expect(again.status == Exit.conflict && again.stderr.contains("on \(Self.target)") && again.stderr.contains("'\(name)'"), "\(again)")
            let forced = try Testbed.nspawnctl("copy-machine", "--json", "--force", name, Self.target)
            let replaced = (try? decodeJSON(Copied.self, from: forced.stdout))?.replacedOnTarget
            #expect(forced.status == Exit.ok && replaced == true, "\(forced)")
            // Under another name there: the settings go with it.
            let other = try Testbed.nspawnctl("copy-machine", name, "\(Self.target)/\(renamed)")
            #expect(other.status == Exit.ok && other.stdout.contains("as '\(renamed)'"), "\(other)")
            #expect(try Self.onTarget { try Testbed.sh("grep -x Hostname=traveller /etc/systemd/nspawn/\(renamed).nspawn").status } == 0)

            // Bad targets and sources: a clear error with its exit code, nothing on the target.
            let refusals: [(arguments: [String], exit: Int32, says: String)] = [
                (["copy-machine", name, "\(Self.target)/../etc"], Exit.invalidInput, "invalid machine name '../etc'"),
                (["copy-machine", name, "ssh://-oProxyCommand=touch${IFS}/tmp/e2e-travel-pwned"], Exit.invalidInput, "invalid"),
                (["copy-machine", name, "root@10.251.0.2"], Exit.invalidInput, "expected ssh://"),
                (["copy-machine", name, "ssh://root@10.251.0.2:2222/e2e-travel-none"], 7, "Connection refused"),
                (["copy-machine", name, "ssh://nobody@10.251.0.2/e2e-travel-none"], Exit.permissionDenied, "authentication refused"),
                (["copy-machine", "e2e-travel-none", Self.target], Exit.notFound, "'e2e-travel-none'"),
                (["--api", "copy-machine", name, "\(Self.target)/e2e-travel-none"], Exit.invalidInput, "run it as root without --api"),
            ]
            for refusal in refusals {
                let refused = try Testbed.run(["nspawnctl"] + refusal.arguments)
                #expect(refused.status == refusal.exit && refused.stderr.contains(refusal.says), "\(refusal.arguments): \(refused)")
            }
            #expect(try Self.targetHoldsNothingOf("e2e-travel-none").isEmpty)
            #expect(try Testbed.sh("ls /tmp/e2e-travel-pwned").status != 0, "ssh read no option from the host name")
        }
    }

    @Test(.testbedAccounts) func aMoveStartsTheMachineThereAndAMoveKilledHalfwayLeavesItHere() throws {
        let name = "e2e-travel-move"
        try Self.with([name]) {
            try Self.link()
            try Fixture.busybox(name)
            // Incompressible, so the link is busy long enough to be cut.
            try Testbed.mustSh("""
                set -e
                mkdir -p /var/lib/machines/\(name)/srv
                head -c 48M /dev/urandom > /var/lib/machines/\(name)/srv/noise
                nspawnctl snapshot \(name) one >/dev/null
                nspawnctl start \(name)
                """)
            #expect(try Fixture.machinedState(name) == "running")
            let before = try Self.fingerprint(name)

            // Killed halfway through, at 8 MB/s: the machine stays here, whole, and starts.
            try Testbed.mustSh("tc qdisc replace dev e2e-travel-a root tbf rate 64mbit burst 64kb latency 500ms")
            defer { _ = try? Testbed.sh("tc qdisc del dev e2e-travel-a root") }
            let received = try Self.receivedOnTarget()
            try Testbed.mustSh("systemctl reset-failed e2e-travel-killed 2>/dev/null; systemd-run --quiet --unit=e2e-travel-killed nspawnctl move-machine \(name) \(Self.target)")
            var halfway = false
            for _ in 0..<300 where !halfway {
                halfway = try Self.receivedOnTarget() - received > 12 << 20
                if !halfway { usleep(100_000) }
            }
            try Testbed.mustSh("systemctl kill -s KILL e2e-travel-killed; systemctl reset-failed e2e-travel-killed 2>/dev/null; true")
            #expect(halfway, "the move got 12 MB across")
            _ = try? Testbed.sh("tc qdisc del dev e2e-travel-a root")
            var leftover = "?"
            for _ in 0..<100 where !leftover.isEmpty {
                leftover = try Self.targetHoldsNothingOf(name)
                if !leftover.isEmpty { usleep(100_000) }
            }
            #expect(leftover.isEmpty, "the target removed its half: \(leftover)")
            let afterKill = try Self.fingerprint(name)
            #expect(afterKill == before, "the source is whole after the killed move: \(Self.difference(before, afterKill))")
            let restarted = try Testbed.nspawnctl("start", name)
            let restartedState = try Fixture.machinedState(name)
            #expect(restarted.status == Exit.ok && restartedState == "running", "\(restarted)")

            // A move to its end: running there with its snapshot, gone from here.
            let moved = try Testbed.nspawnctl("move-machine", "--json", name, Self.target)
            #expect(moved.status == Exit.ok, "\(moved)")
            guard moved.status == Exit.ok else { return }
            let result = try decodeJSON(Copied.self, from: moved.stdout)
            #expect(result.moved && result.startedOnTarget && result.snapshots == ["one"] && !result.fromSnapshot, "\(moved.stdout)")
            #expect(try Self.onTarget { try Fixture.machinedState(name) } == "running")
            // Each start of a root without a machine-id makes a new journal directory there.
            let withoutJournals = { (text: String) in text.split(separator: "\n").filter { !$0.hasPrefix("./var/log/journal") }.joined(separator: "\n") }
            let arrived = withoutJournals(try Self.onTarget { try Self.fingerprint(name) })
            #expect(arrived == withoutJournals(before), "the machine arrived as it left: \(Self.difference(before, arrived))")
            #expect(try Testbed.sh("ls -d /var/lib/machines/\(name) /etc/systemd/nspawn/\(name).nspawn '\(CopyFixtures.snapshots)/\(name)' 2>/dev/null").trimmed.isEmpty,
                    "nothing of it is left here")
            #expect(try Fixture.machinedState(name) == nil)
            print("move-machine: \(result.bytesSent) bytes in \(result.seconds) s, running on the second host")
        }
    }

    @Test(.testbedAccounts) func aRefreshSendsOnlyWhatChangedAndLeavesTheSameMachine() throws {
        let name = "e2e-travel-refresh"
        let local = "e2e-travel-refresh-here"
        try Self.with([name, local]) {
            // ssh to this host itself (RemoteFixtures) first: it rewrites known_hosts, which link() extends.
            try RemoteFixtures.prepare()
            try Self.link()
            try Fixture.busybox(name)
            try CopyFixtures.makeTree("/var/lib/machines/\(name)/srv/tree")
            try Testbed.mustSh("""
                set -e
                head -c 40M /dev/urandom > /var/lib/machines/\(name)/srv/base
                # A list of over 4 MB: more than ssh holds while nobody reads it.
                mkdir /var/lib/machines/\(name)/srv/many
                cd /var/lib/machines/\(name)/srv/many && seq -f 'an-entry-with-a-long-name-to-make-the-list-long-%05g' 1 60000 | xargs touch
                printf 'first\\n' > /var/lib/machines/\(name)/srv/payload
                printf 'doomed\\n' > /var/lib/machines/\(name)/srv/doomed
                nspawnctl config \(name) --set Hostname=first >/dev/null
                """)
            // No copy there yet: it goes whole, and says so (the target says so before a list
            // ssh could not hold goes).
            let first = try Testbed.nspawnctl("copy-machine", "--refresh", name, Self.target)
            #expect(first.status == Exit.ok && first.stdout.contains("no copy there yet"), "\(first)")
            // The measure: a whole copy of the machine without the many empty files.
            try Testbed.mustSh("rm -r /var/lib/machines/\(name)/srv/many")
            var received = try Self.receivedOnTarget()
            let whole = try Testbed.nspawnctl("copy-machine", "--force", name, Self.target)
            let fullBytes = try Self.receivedOnTarget() - received
            #expect(whole.status == Exit.ok, "\(whole)")

            // A megabyte of new data and small changes of every kind.
            try Testbed.mustSh("""
                set -e
                cd /var/lib/machines/\(name)
                head -c 1M /dev/urandom > srv/new-megabyte
                printf 'second\\n' > srv/payload
                rm srv/doomed
                chmod 0600 srv/tree/file
                ln -s ../srv/payload etc/payload-link
                mkdir -p srv/empty && mkfifo srv/empty/fifo
                setfattr -n user.refreshed -v yes srv
                ln srv/payload srv/payload-again
                nspawnctl config \(name) --set Hostname=second >/dev/null
                """)
            let before = try Self.fingerprint(name)
            received = try Self.receivedOnTarget()
            let refreshed = try Testbed.nspawnctl("copy-machine", "--json", "--refresh", name, Self.target)
            let refreshBytes = try Self.receivedOnTarget() - received
            #expect(refreshed.status == Exit.ok, "\(refreshed)")
            guard refreshed.status == Exit.ok else { return }
            let result = try decodeJSON(Copied.self, from: refreshed.stdout)
            // The new megabyte, the changed payload, and the file whose mode changed (sent whole, as rsync does).
            #expect(result.method == "file-delta" && result.refresh?.sent == 3, "\(refreshed.stdout)")
            #expect(refreshBytes * 20 <= fullBytes, "a refresh moved \(refreshBytes) bytes on the link, a whole copy \(fullBytes)")
            let there = try Self.onTarget { try Self.fingerprint(name) }
            #expect(there == before, "the refreshed copy is the machine: \(Self.difference(before, there))")
            print("copy-machine --refresh: \(refreshBytes) bytes on the link after a 1 MiB change, a whole copy \(fullBytes) (\(Double(refreshBytes) * 100 / Double(fullBytes)) %); \(result.seconds) s")

            // Nothing changed: nothing but the list goes.
            let idle = try Testbed.nspawnctl("copy-machine", "--json", "--refresh", name, Self.target)
            #expect(idle.status == Exit.ok && (try? decodeJSON(Copied.self, from: idle.stdout))?.refresh?.sent == 0, "\(idle)")

            // A hostile sender: a path that climbs out, a link to nothing, a record cut short.
            let header = #"{"refresh":1,"name":"x","host_state":{"enabled":false},"records":2}"#
            let root = "d\t755\t0\t0\t0\t0\t0\t\t\t\t\t"
            for (record, says) in [("f\t644\t0\t0\t5\t0\t0\t\t1\t\t../../etc/e2e-travel-x\t", "unsafe"),
                                   ("f\t644\t0\t0\t5\t0\t0\t\t2\t1\tsrv-x\t", "links"),
                                   ("f\t644\t0", "malformed")] {
                let refused = try Self.onTarget { try Testbed.run(["nspawnctl", "receive-machine", name], stdin: "\(header)\n\(root)\n\(record)\n") }
                #expect(refused.status == Exit.invalidInput && refused.stdout.contains(says), "\(record): \(refused)")
            }
            let after = try Self.onTarget { try Self.fingerprint(name) }
            #expect(after == before, "the hostile refreshes changed nothing: \(Self.difference(before, after))")
            #expect(try Self.onTarget { try Testbed.sh("ls -A /var/lib/machines | grep '^\\.#import\\.'; ls /etc/e2e-travel-x 2>/dev/null; true").trimmed }.isEmpty)

            // On a file system without snapshots the new tree is built beside the old one from
            // hard links: refreshed through ssh to this host itself, onto its ext4.
            #expect(try Testbed.nspawnctl("copy-machine", "--refresh", name, "ssh://root@127.0.0.1/\(local)").status == Exit.ok)
            try Testbed.mustSh("head -c 1M /dev/urandom > /var/lib/machines/\(name)/srv/new-megabyte; rm /var/lib/machines/\(name)/srv/payload-again")
            let here = try Testbed.nspawnctl("copy-machine", "--json", "--refresh", name, "ssh://root@127.0.0.1/\(local)")
            #expect(here.status == Exit.ok && (try? decodeJSON(Copied.self, from: here.stdout))?.refresh?.sent == 2, "\(here)")
            let rootOnly = { (text: String) in text.split(separator: "\n").filter { $0.contains("./") }.joined(separator: "\n") }
            let source = rootOnly(try Self.fingerprint(name)), copy = rootOnly(try Self.fingerprint(local))
            #expect(!source.isEmpty && copy == source, "the copy beside it: \(Self.difference(source, copy))")

            // A copy that runs there is not changed under it.
            try Self.onTarget { try Testbed.mustSh("nspawnctl start \(name)") }
            let busy = try Testbed.nspawnctl("copy-machine", "--refresh", name, Self.target)
            #expect(busy.status == Exit.conflict && busy.stderr.contains("running"), "\(busy)")
            try Self.onTarget { try Testbed.mustSh("nspawnctl stop \(name)") }
            #expect(try Testbed.nspawnctl("copy-machine", "--refresh", "--snapshots", name, Self.target).status == Exit.invalidInput)
            // ssh's refusals read as with a whole copy.
            let closed = try Testbed.nspawnctl("copy-machine", "--refresh", name, "ssh://root@10.251.0.2:2222")
            #expect(closed.status == 7 && closed.stderr.contains("Connection refused"), "\(closed)")
            let stranger = try Testbed.nspawnctl("copy-machine", "--refresh", name, "ssh://nobody@10.251.0.2")
            #expect(stranger.status == Exit.permissionDenied && stranger.stderr.contains("authentication refused"), "\(stranger)")
        }
    }
}
