import Foundation
import Testing

/// Health checks against the testbed's systemd: the timer runs `nspawnctl health-check` with no
/// nspawnd, verdicts show in ls, status, stats and metrics and as events on /v1/events, and an
/// unhealthy machine is restarted when its check says so.
@Suite("Health", .serialized, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct HealthEndToEndTests {
    struct Health: Decodable {
        var status: String
        var failingStreak: Int
        var lastExitCode: Int32?
        var lastOutput: String?
        var lastCheck: String?
    }

    struct Row: Decodable {
        var name: String
        var health: Health?
    }

    static func health(_ name: String) throws -> Health? {
        let rows = try decodeJSON([Row].self, from: try Testbed.mustSh("nspawnctl ls --json").stdout)
        return rows.first { $0.name == name }?.health
    }

    /// Polls `ls` until the machine's health is `status`; the last health seen otherwise.
    @discardableResult
    static func waitFor(_ status: String, _ name: String, seconds: Double = 30) throws -> Health? {
        let deadline = Date().addingTimeInterval(seconds)
        var last: Health?
        while Date() < deadline {
            last = try health(name)
            if last?.status == status { return last }
            usleep(200_000)
        }
        Issue.record("machine \(name) did not turn \(status) within \(seconds) s; last: \(String(describing: last))")
        return last
    }

    static func leader(_ name: String) throws -> String {
        try Testbed.mustSh("machinectl show -p Leader --value \(name)").trimmed
    }

    @Test(.killsDaemon) func anUnhealthyMachineIsSeenAnnouncedAndRestarted() throws {
        let name = "healthdeb"
        try Fixture.with([name]) {
            try ExecEndToEndTests.systemdGuest(name)
            defer { _ = try? Testbed.sh("systemctl stop e2e-health-events; systemctl reset-failed e2e-health-events 2>/dev/null; rm -f /tmp/health-events; true") }
            // The check runs inside as exec does; /run is the guest's own tmpfs, empty after a restart.
            try Testbed.mustSh("nspawnctl config \(name) --health-cmd 'test ! -e /run/sick || { echo sick now; exit 3; }' --health-interval 1s --health-retries 2 --health-timeout 5s")
            let timer = try Testbed.mustSh("systemctl show -p ActiveState,BindsTo nspawnctl-health-\(name).timer").stdout
            #expect(timer.contains("ActiveState=active") && timer.contains("BindsTo=systemd-nspawn@\(name).service"), "\(timer)")
            #expect(try Testbed.mustSh("systemctl show -p Wants --value systemd-nspawn@\(name).service").stdout.contains("nspawnctl-health-\(name).timer"))
            try Self.waitFor("healthy", name)

            // With no nspawnd at all, the timer keeps checking.
            try Testbed.mustSh("systemctl stop nspawnd.service; for i in $(seq 1 50); do pgrep -x nspawnd >/dev/null || exit 0; sleep 0.1; done; exit 1")
            let before = try #require(try Self.health(name)?.lastCheck)
            sleep(3)
            #expect(try Testbed.sh("pgrep -x nspawnd").status != 0, "nothing started nspawnd")
            let after = try #require(try Self.health(name)?.lastCheck)
            #expect(after > before, "checked again without nspawnd: \(before) then \(after)")

            // Events through nspawnd's API, read by curl as a unit of its own (nothing waits on its pipe).
            try Testbed.mustSh("""
                rm -f /tmp/health-events
                systemd-run --unit=e2e-health-events -p StandardOutput=file:/tmp/health-events \
                    curl -sN --unix-socket \(API.socket) http://nspawnd/v1/events
                for i in $(seq 1 100); do grep -q '^event: subscribed' /tmp/health-events 2>/dev/null && exit 0; sleep 0.1; done
                exit 1
                """)

            // Failing: unhealthy after two failures in a row, the machine left running.
            let firstLeader = try Self.leader(name)
            try Testbed.mustSh("nspawnctl exec \(name) -- touch /run/sick")
            let sick = try Self.waitFor("unhealthy", name)
            #expect((sick?.failingStreak ?? 0) >= 2 && sick?.lastExitCode == 3 && sick?.lastOutput == "sick now", "\(String(describing: sick))")
            let status = try Testbed.mustSh("nspawnctl status \(name)").stdout
            #expect(status.contains("Health: unhealthy (") && status.contains("exit 3: sick now"), "\(status)")
            let stats = try Testbed.mustSh("nspawnctl stats \(name) --json").stdout
            #expect(stats.contains("\"health\" : \"unhealthy\""), "\(stats)")
            #expect(try Testbed.mustSh("nspawnctl ls").stdout.contains("running (unhealthy)"))
            #expect(try Self.leader(name) == firstLeader, "no restart without --restart-on-unhealthy")
            let metrics = try Testbed.mustSh("curl -s --unix-socket \(API.socket) http://nspawnd/v1/metrics").stdout
            #expect(metrics.contains("nspawn_machine_healthy{machine=\"\(name)\"} 0"), "\(metrics.split(separator: "\n").filter { $0.contains("health") })")

            // Healthy again by itself, then restarted when it turns unhealthy with the option on.
            try Testbed.mustSh("nspawnctl exec \(name) -- rm /run/sick")
            try Self.waitFor("healthy", name)
            try Testbed.mustSh("nspawnctl config \(name) --restart-on-unhealthy")
            try Testbed.mustSh("nspawnctl exec \(name) -- touch /run/sick")
            try Testbed.mustSh("""
                for i in $(seq 1 300); do
                    l=$(machinectl show -p Leader --value \(name) 2>/dev/null)
                    [ -n "$l" ] && [ "$l" != "\(firstLeader)" ] && exit 0
                    sleep 0.1
                done
                exit 1
                """)
            let healed = try Self.waitFor("healthy", name, seconds: 60)
            #expect(healed?.failingStreak == 0)
            let journal = try Testbed.mustSh("journalctl -u nspawnctl-health-\(name).service --no-pager -o cat").stdout
            #expect(journal.contains("machine '\(name)' is unhealthy") && journal.contains("restarted it"), "\(journal)")

            // The events, in order: each change once. nspawnd looks at the verdicts every 250 ms, so
            // the last may come a moment after ls read it.
            let events = try Testbed.mustSh("""
                for i in $(seq 1 50); do
                    grep '^data:' /tmp/health-events | grep machine_health | tail -n 1 | grep -q '"status":"healthy"' && break
                    sleep 0.1
                done
                grep '^data:' /tmp/health-events | grep machine_health | sed 's/^data: //'
                """).stdout
            let statuses = try events.split(separator: "\n").map { line -> String in
                struct Event: Decodable { var name: String; var health: Health }
                let event = try decodeJSON(Event.self, from: String(line))
                #expect(event.name == name)
                return event.health.status
            }
            #expect(statuses.starts(with: ["unhealthy", "healthy", "unhealthy"]) && statuses.last == "healthy", "\(statuses)")

            // --no-health takes it all away, the timer first.
            try Testbed.mustSh("nspawnctl config \(name) --no-health")
            let left = try Testbed.mustSh("ls /etc/systemd/system/nspawnctl-health-\(name).* /etc/systemd/system/systemd-nspawn@\(name).service.d/61-health.conf /run/nspawnctl/health/\(name).json 2>/dev/null; systemctl is-active nspawnctl-health-\(name).timer || true").stdout
            #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "inactive", "\(left)")
            #expect(try Self.health(name) == nil)
        }
    }

    @Test func badHealthOptionsAreRefusedAndWriteNothing() throws {
        let name = "healthbad"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            for (options, message) in [
                ("--health-cmd ''", "the health check command is empty"),
                ("--health-cmd true --health-interval 0s", "invalid health check interval 0s"),
                ("--health-cmd true --health-retries 0", "invalid health check retries 0"),
                ("--health-cmd true --health-timeout soon", "invalid health check timeout 'soon'"),
                ("--health-interval 5s", "machine '\(name)' has no health check to change"),
                ("--health-cmd true --no-health", "--no-health excludes the other --health options"),
            ] {
                let result = try Testbed.sh("nspawnctl config \(name) \(options)")
                #expect(result.status == 2, "\(options): \(result)")
                #expect(result.stderr.contains(message), "\(options): \(result.stderr)")
            }
            let left = try Testbed.sh("ls /etc/systemd/system/ | grep -c 'nspawnctl-health-\(name)'; ls /etc/systemd/system/systemd-nspawn@\(name).service.d 2>&1").stdout
            #expect(left.hasPrefix("0\n"), "\(left)")

            // A check on a stopped machine is written, shown in config and status, and checks nothing yet.
            try Testbed.mustSh("nspawnctl config \(name) --health-cmd 'exit 0' --health-start-period 1min")
            let config = try Testbed.mustSh("nspawnctl config \(name)").stdout
            #expect(config.contains("health: 'exit 0' every 30s, timeout 10s, unhealthy after 3 failures, start period 60s"), "\(config)")
            #expect(try Testbed.mustSh("nspawnctl status \(name)").stdout.contains("Health: not checked while stopped"))
            let verify = try Testbed.sh("systemd-analyze verify /etc/systemd/system/nspawnctl-health-\(name).timer /etc/systemd/system/nspawnctl-health-\(name).service 2>&1")
            #expect(!verify.stdout.contains("nspawnctl-health"), "systemd-analyze: \(verify.stdout)")
            // A manifest's health: planned against what the service records, converged once, removed by none.
            func manifest(_ health: String) throws {
                try Testbed.mustSh("mkdir -p /tmp/e2e-health && cat > /tmp/e2e-health/site.yaml <<'MANIFEST'\nmachines:\n  \(name):\n    health: \(health)\nMANIFEST")
            }
            try manifest("{ cmd: [/bin/true], interval: 5s, retries: 1 }")
            struct Plan: Decodable {
                struct Machine: Decodable { struct Change: Decodable { var op: String; var field: String }; var changes: [Change] }
                var machines: [Machine]
            }
            func planned() throws -> [String] {
                try decodeJSON(Plan.self, from: try Testbed.mustSh("nspawnctl plan -f /tmp/e2e-health/site.yaml --json").stdout)
                    .machines.flatMap(\.changes).map { "\($0.op) \($0.field)" }
            }
            #expect(try planned() == ["~ health"])
            try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-health/site.yaml")
            #expect(try Testbed.mustSh("nspawnctl config \(name)").stdout.contains("health: '/bin/true' every 5s, timeout 10s, unhealthy after 1 failure"))
            #expect(try planned() == [], "nothing left to change")
            try manifest("none")
            try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-health/site.yaml")
            #expect(try Testbed.sh("ls /etc/systemd/system/nspawnctl-health-\(name).service").status != 0)
            try manifest("{ cmd: 'exit 0' }")
            try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-health/site.yaml")

            // remove takes the units with the machine.
            try Testbed.mustSh("nspawnctl remove \(name)")
            #expect(try Testbed.sh("ls /etc/systemd/system/nspawnctl-health-\(name).timer").status != 0)
        }
    }
}
