import Foundation
import Testing

/// `nspawnctl logs` against the testbed's journald: a Debian guest that logs with logger(1)
/// and a busybox payload that writes to stdout and stderr. What it shows is held against
/// `journalctl -M NAME` and `journalctl -u systemd-nspawn@NAME` for the same window.
@Suite("Logs", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct LogsEndToEndTests {
    struct Entry: Decodable, Equatable {
        var time: String
        var realtimeUsec: UInt64
        var source: String
        var priority: Int?
        var unit: String?
        var identifier: String?
        var pid: Int?
        var message: String
    }

    static func entries(_ text: String) throws -> [Entry] {
        try text.split(separator: "\n").map { try decodeJSON(Entry.self, from: String($0)) }
    }

    /// journalctl's view of the same window as (realtime µs, message, unit), oldest first.
    static func journalctl(_ arguments: String) throws -> [(UInt64, String, String?)] {
        let result = try Testbed.mustSh("journalctl --no-pager -o json \(arguments)")
        return try result.stdout.split(separator: "\n").map { line in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let usec = try #require(UInt64(object["__REALTIME_TIMESTAMP"] as? String ?? ""))
            // journalctl gives a message that is not valid UTF-8 as an array of bytes.
            let message = object["MESSAGE"] as? String ?? (object["MESSAGE"] as? [UInt8]).map { String(decoding: $0, as: UTF8.self) } ?? ""
            return (usec, message, object["_SYSTEMD_UNIT"] as? String ?? object["UNIT"] as? String)
        }
    }

    /// Entry for entry; a mismatch names the first index where the two part, with its neighbours.
    static func expectSame(_ ours: [Entry], _ theirs: [(UInt64, String, String?)], _ tool: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let mine = ours.map { "\($0.realtimeUsec) \($0.message)" }
        let other = theirs.map { "\($0.0) \($0.1)" }
        guard mine != other else { return }
        let first = zip(mine, other).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(mine.count, other.count)
        let around = max(0, first - 2)..<(first + 3)
        Issue.record("""
            differs from \(tool) at entry \(first) of \(mine.count) (theirs \(other.count)):
            ours:   \(mine[around.clamped(to: 0..<mine.count)].joined(separator: "\n        "))
            theirs: \(other[around.clamped(to: 0..<other.count)].joined(separator: "\n        "))
            """, sourceLocation: sourceLocation)
    }

    /// Seconds since the epoch in the testbed, whole: a window edge both tools read alike.
    static func testbedSeconds() throws -> UInt64 {
        try #require(UInt64(try Testbed.mustSh("date +%s").trimmed))
    }

    @Test func aBootedGuestsJournalMatchesJournalctl() throws {
        let name = "logsdeb"
        try Fixture.with([name]) {
            try ExecEndToEndTests.systemdGuest(name)
            let since = try Self.testbedSeconds()
            try Testbed.mustSh("""
                systemd-run -M \(name) --wait -q logger -p user.info -t e2elog 'info-line one'
                systemd-run -M \(name) --wait -q logger -p user.err -t e2elog 'err-line two'
                systemd-run -M \(name) --wait -q logger -p user.warning -t e2elog 'warning-line three'
                """)
            // A window that has closed: nothing the guest logs later can make the tools differ.
            sleep(2)
            let until = try Self.testbedSeconds() - 1
            let window = "--since @\(since) --until @\(until)"

            let ours = try Self.entries(try Testbed.mustSh("nspawnctl logs \(name) \(window) --json").stdout)
            // Each source entry for entry; how two journals interleave within one microsecond
            // is not something the two journalctl runs can say, so the merge is held to time order.
            let machine = try Self.journalctl("-M \(name) \(window)")
            let host = try Self.journalctl("-u systemd-nspawn@\(name).service \(window)")
            Self.expectSame(ours.filter { $0.source == "machine" }, machine, "journalctl -M")
            Self.expectSame(ours.filter { $0.source == "host" }, host, "journalctl -u")
            #expect(ours.count == machine.count + host.count)
            #expect(ours.map(\.realtimeUsec) == ours.map(\.realtimeUsec).sorted(), "merged in time order")
            let err = try #require(ours.first { $0.message == "err-line two" })
            #expect(err.source == "machine" && err.priority == 3 && err.identifier == "e2elog" && err.pid != nil)
            // journald names the unit only when it read the sender's cgroup before logger exited.
            #expect(err.unit == machine.first { $0.1 == "err-line two" }?.2)
            #expect(err.unit.map { $0.hasPrefix("run-") } ?? true)
            #expect(err.time.hasSuffix("Z") && err.time.count == "2026-12-06T21:34:39.514220Z".count)

            // -n: the window's last entries; -p err: the err line and nothing less urgent.
            let lastTwo = try Self.entries(try Testbed.mustSh("nspawnctl logs \(name) \(window) -n 2 --json").stdout)
            #expect(lastTwo == Array(ours.suffix(2)))
            let errors = try Self.entries(try Testbed.mustSh("nspawnctl logs \(name) \(window) -p err --json").stdout)
            #expect(errors.contains { $0.message == "err-line two" })
            #expect(errors.allSatisfy { ($0.priority ?? 7) <= 3 }, "\(errors)")
            let theirErrors = try Self.journalctl("-M \(name) -p err \(window)") + (try Self.journalctl("-u systemd-nspawn@\(name).service -p err \(window)"))
            #expect(errors.map(\.realtimeUsec) == theirErrors.map(\.0).sorted())

            // The text form says who logged what, as journalctl's short output does.
            let text = try Testbed.mustSh("nspawnctl logs \(name) \(window) -p warning").stdout
            #expect(text.contains(" \(name) e2elog[") && text.contains(": warning-line three") && !text.contains("info-line one"), "\(text)")

            // Through nspawnd, the same entries.
            let served = try Self.entries(try Testbed.mustSh("nspawnctl --api logs \(name) \(window) --json").stdout)
            #expect(served == ours)

            // A stopped machine's journal is read from its image.
            try Testbed.mustSh("machinectl poweroff \(name); for i in $(seq 1 300); do machinectl show \(name) >/dev/null 2>&1 || exit 0; sleep 0.1; done; exit 1")
            let stopped = try Self.entries(try Testbed.mustSh("nspawnctl logs \(name) \(window) --json").stdout)
            #expect(stopped.filter { $0.source == "machine" } == ours.filter { $0.source == "machine" })
        }
    }

    @Test func followSeesANewLineWithinASecond() throws {
        let name = "logsfollow"
        try Fixture.with([name]) {
            try ExecEndToEndTests.systemdGuest(name)
            let result = try Testbed.mustSh("""
                out=$(mktemp)
                nspawnctl logs \(name) -f -n 1 --json > "$out" 2>&1 &
                follower=$!
                # Its backlog (one line) is out, so it follows from here.
                for i in $(seq 1 100); do [ -s "$out" ] && break; sleep 0.05; done
                start=$(date +%s%N)
                systemd-run -M \(name) --wait -q logger -t e2elog followed-marker
                found=
                for i in $(seq 1 100); do
                    if grep -q followed-marker "$out"; then found=$(( ($(date +%s%N) - start) / 1000000 )); break; fi
                    sleep 0.02
                done
                kill $follower; wait $follower 2>/dev/null
                echo "ms=${found:-never}"
                grep -c . "$out" >&2 || true
                rm -f "$out"
                """)
            let ms = result.stdout.split(separator: "=").last.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
            let elapsed = try #require(ms.flatMap { Int($0) }, "the follower never saw the line: \(result)")
            #expect(elapsed < 1000, "seen after \(elapsed) ms")
        }
    }

    @Test(.testbedAccounts) func aPayloadsOutputComesFromTheHostJournal() throws {
        let name = "logsbb"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                set -e
                printf '[Exec]\\nBoot=no\\nParameters=/bin/sh -c "echo out-line; echo err-line >&2; exec sleep 1000000"\\n' > /etc/systemd/nspawn/\(name).nspawn
                """)
            let since = try Self.testbedSeconds()
            try Testbed.mustSh("machinectl start \(name)")
            try Testbed.mustSh("for i in $(seq 1 100); do journalctl -u systemd-nspawn@\(name).service --no-pager | grep -q err-line && exit 0; sleep 0.1; done; exit 1")
            sleep(2)
            let until = try Self.testbedSeconds() - 1
            let window = "--since @\(since) --until @\(until)"
            let ours = try Self.entries(try Testbed.mustSh("nspawnctl logs \(name) \(window) --json").stdout)
            let theirs = try Self.journalctl("-u systemd-nspawn@\(name).service \(window)")
            #expect(ours.map(\.realtimeUsec) == theirs.map(\.0))
            #expect(ours.map(\.message) == theirs.map(\.1))
            #expect(ours.allSatisfy { $0.source == "host" })
            #expect(ours.contains { $0.message == "out-line" && $0.unit == "systemd-nspawn@\(name).service" })
            #expect(ours.contains { $0.message == "err-line" })
            #expect(ours.contains { $0.identifier == "systemd" && $0.message.contains("Started") }, "systemd's own word on the start: \(ours.map(\.message))")

            // Over ssh, through the far host's nspawnd: the same entries for root and for a
            // member of group nspawn, and a refusal for anyone else.
            try RemoteFixtures.prepare()
            for user in ["root", "nsop"] {
                let remote = try Self.entries(try Testbed.mustSh("nspawnctl logs --host \(RemoteFixtures.host(user)) \(name) \(window) --json").stdout)
                #expect(remote == ours, "over ssh as \(user)")
            }
            let outsider = try Testbed.sh("nspawnctl logs --host \(RemoteFixtures.host("nsout")) \(name) \(window) --json")
            #expect(outsider.status == 4 && outsider.stdout.isEmpty, "\(outsider)")
        }
    }

    /// A guest whose journal directories lead out of its root, or whose machine ID is the host's,
    /// sees nothing of the host's journal.
    @Test func aGuestsLinksOutOfItsRootShowNothingFromTheHost() throws {
        let name = "logsevil"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            let marker = "host-secret-\(UUID().uuidString)"
            try Testbed.mustSh("""
                set -e
                logger -t e2ehost \(marker)
                journalctl --flush
                root=/var/lib/machines/\(name)
                mkdir -p "$root"/var/log "$root"/run/log
                ln -s /var/log/journal "$root"/var/log/journal
                ln -s ../../../../../../var/log/journal "$root"/run/log/journal
                cp /etc/machine-id "$root"/etc/machine-id
                """)
            for state in ["stopped", "running"] {
                if state == "running" { try Testbed.mustSh("machinectl start \(name)") }
                let result = try Testbed.mustSh("nspawnctl logs \(name) --json")
                let shown = try Self.entries(result.stdout)
                #expect(!result.stdout.contains(marker), "\(state): the host's journal leaked")
                #expect(shown.allSatisfy { $0.source == "host" }, "\(state): \(shown.map(\.message))")
            }
        }
    }

    @Test func badRequestsAreRefusedWithTheirCause() throws {
        for (arguments, code, words) in [
            ("logs nosuchmachine", 3, "no machine or image 'nosuchmachine'"),
            ("logs ../etc", 2, "invalid machine name"),
            ("logs nosuchmachine --since yesterdayish", 2, "cannot read 'yesterdayish' as a time"),
            ("logs nosuchmachine -p loud", 2, "unknown priority 'loud'"),
            ("logs nosuchmachine -f --until now", 2, "cannot be followed"),
            ("logs nosuchmachine --since now --until=-1h", 2, "is after --until"),
            ("logs nosuchmachine --lines=-1", 2, "lines must be between 0"),
            ("--api logs nosuchmachine", 3, "no machine or image 'nosuchmachine'"),
            ("--api logs nosuchmachine --since 2026-13-01", 2, "cannot read '2026-13-01' as a time"),
        ] as [(String, Int32, String)] {
            let result = try Testbed.sh("nspawnctl \(arguments)")
            #expect(result.status == code, "\(arguments): \(result)")
            #expect(result.stderr.contains(words), "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(arguments): \(result.stdout)")
        }
    }
}
