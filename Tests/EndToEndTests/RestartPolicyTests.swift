import Foundation
import Testing

/// Restart policies as drop-ins for systemd-nspawn@NAME.service: systemd itself brings a
/// killed payload back, and its start limit stops a crash loop. Held against `systemctl show`.
@Suite("Restart policies", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct RestartPolicyEndToEndTests {
    struct Status: Decodable {
        struct Policy: Decodable { var mode: String; var delaySeconds: Double? }
        var state: String
        var restart: Policy?
        var restarts: Int?
        var unitResult: String?
        var startLimitHit: Bool?
    }

    static func status(_ name: String) throws -> Status {
        try decodeJSON(Status.self, from: try Testbed.mustSh("nspawnctl status --json \(name)").stdout)
    }

    static func leader(_ name: String) throws -> String {
        try Testbed.sh("machinectl show \(name) -p Leader --value").trimmed
    }

    /// Kills the payload with SIGKILL and waits until machined has seen the end of it.
    static func killPayload(_ name: String) throws {
        let leader = try leader(name)
        try #require(!leader.isEmpty, "\(name) is not running")
        try Testbed.mustSh("kill -9 \(leader); for i in $(seq 1 100); do [ \"$(machinectl show \(name) -p Leader --value 2>/dev/null)\" != \(leader) ] && exit 0; sleep 0.05; done; exit 1")
    }

    /// Seconds until the machine runs again with a new leader; nil when it did not within `limit`.
    static func secondsUntilBack(_ name: String, limit: Int) throws -> Double? {
        let result = try Testbed.sh("""
            start=$(date +%s%N)
            for i in $(seq 1 \(limit * 20)); do
                if [ "$(machinectl show \(name) -p State --value 2>/dev/null)" = running ]; then echo $(( ($(date +%s%N) - start) / 1000000 )); exit 0; fi
                sleep 0.05
            done
            exit 1
            """)
        return result.status == 0 ? Double(result.trimmed).map { $0 / 1000 } : nil
    }

    @Test func onFailureBringsAKilledPayloadBackAfterTheDelay() throws {
        let name = "restartonfail"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            let config = try Testbed.mustSh("nspawnctl config \(name) --restart on-failure --restart-delay 2s --json").stdout
            #expect(config.contains("\"on-failure\""), "\(config)")
            let shown = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p Restart -p RestartUSec").stdout
            #expect(shown.contains("Restart=on-failure") && shown.contains("RestartUSec=2s"), "\(shown)")
            try Testbed.mustSh("nspawnctl start \(name)")
            let first = try Self.leader(name)
            try Self.killPayload(name)
            let back = try #require(try Self.secondsUntilBack(name, limit: 15), "systemd did not restart \(name)")
            #expect(back >= 1.5, "restarted after \(back) s, before the 2 s delay")
            #expect(try Self.leader(name) != first)
            let status = try Self.status(name)
            let restarts = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p NRestarts --value").trimmed
            #expect(status.restarts == 1 && restarts == "1", "nspawnctl \(String(describing: status.restarts)), systemd \(restarts)")
            #expect(status.restart?.mode == "on-failure" && status.restart?.delaySeconds == 2)
            // A stop by hand is not a failure: the machine stays down.
            try Testbed.mustSh("nspawnctl stop \(name)")
            #expect(try Self.secondsUntilBack(name, limit: 4) == nil)
        }
    }

    @Test func noLeavesAKilledPayloadDown() throws {
        let name = "restartno"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("nspawnctl config \(name) --restart on-failure --restart-delay 1s")
            // Back to no: the drop-in goes, and systemd's template restarts nothing.
            try Testbed.mustSh("nspawnctl config \(name) --restart no")
            #expect(try Testbed.sh("test -e /etc/systemd/system/systemd-nspawn@\(name).service.d/60-restart.conf").status != 0)
            #expect(try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p Restart --value").trimmed == "no")
            try Testbed.mustSh("nspawnctl start \(name)")
            try Self.killPayload(name)
            #expect(try Self.secondsUntilBack(name, limit: 4) == nil, "a machine with no restart policy came back")
            #expect(try Self.status(name).state == "stopped")
        }
    }

    /// A payload that fails at once, restarted quickly: the start limit ends the loop within a
    /// second or two. (systemd forgets the count on a daemon-reload, which other suites do; a
    /// loop this fast still hits the limit again right after one.)
    @Test func theStartLimitStopsACrashLoopAndStatusSaysSo() throws {
        let name = "restartloop"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                printf '[Exec]\\nBoot=no\\nParameters=/bin/sh -c "exit 3"\\n' > /etc/systemd/nspawn/\(name).nspawn
                nspawnctl config \(name) --restart always --restart-delay 100ms --restart-max 3/1min
                """)
            let shown = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p StartLimitBurst -p StartLimitIntervalUSec").stdout
            #expect(shown.contains("StartLimitBurst=3") && shown.contains("StartLimitIntervalUSec=1min"), "\(shown)")
            // The first start itself may already fail (the payload is gone at once); systemd loops on.
            _ = try Testbed.sh("nspawnctl start \(name)")
            let ended = try Testbed.sh("for i in $(seq 1 300); do [ \"$(systemctl show systemd-nspawn@\(name).service -p ActiveState --value)\" = failed ] && exit 0; sleep 0.1; done; exit 1")
            #expect(ended.status == 0, "the start limit did not stop the loop within 30 s")
            let restarts = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p NRestarts --value").trimmed
            let status = try Self.status(name)
            #expect(status.startLimitHit == true && status.unitResult == "exit-code", "\(status)")
            #expect(status.restarts.map(String.init) == restarts && (status.restarts ?? 0) >= 2, "nspawnctl \(String(describing: status.restarts)), systemd \(restarts)")
            let text = try Testbed.mustSh("nspawnctl status \(name)").stdout
            #expect(text.contains("start limit hit"), "\(text)")
            // A start by hand is a fresh try: systemd starts the unit again (a start the limit refused
            // would log no 'Starting' line), and the payload fails again.
            let starting = "journalctl -u systemd-nspawn@\(name).service --no-pager | grep -c 'Starting systemd-nspawn@\(name).service'"
            let before = try Testbed.sh(starting).trimmed
            _ = try Testbed.sh("nspawnctl start \(name); sleep 1")
            let after = try Testbed.sh(starting).trimmed
            #expect((Int(after) ?? 0) > (Int(before) ?? 0), "starts logged: \(before) before, \(after) after")
        }
    }

    @Test func badPoliciesChangeNothing() throws {
        let name = "restartbad"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            for (arguments, words) in [
                ("--restart sometimes", "invalid restart policy 'sometimes'"),
                ("--restart on-failure --restart-delay 2d", "invalid restart delay '2d'"),
                ("--restart on-failure --restart-max 0/10s", "invalid restart limit '0/10s'"),
                ("--restart-delay 5s", "has no restart policy to change"),
                ("--restart always --restart-max 3", "invalid restart limit '3'"),
            ] {
                for route in ["", "--api "] {
                    let result = try Testbed.sh("nspawnctl \(route)config \(name) \(arguments)")
                    #expect(result.status == 2, "\(route)\(arguments): \(result)")
                    #expect(result.stderr.contains(words), "\(route)\(arguments): \(result.stderr)")
                }
            }
            #expect(try Testbed.sh("test -e /etc/systemd/system/systemd-nspawn@\(name).service.d").status != 0, "a refused policy left a drop-in")
            // The machine's removal takes its drop-in along.
            try Testbed.mustSh("nspawnctl config \(name) --restart always")
            try Testbed.mustSh("nspawnctl remove \(name)")
            #expect(try Testbed.sh("test -e /etc/systemd/system/systemd-nspawn@\(name).service.d").status != 0, "the drop-in outlived its machine")
        }
    }

    /// `restart:` in a manifest converges like any other value: applied whole, then nothing to do.
    @Test func aManifestsRestartPolicyConverges() throws {
        let names = ["restartmf", "restartmfbase"]
        try Fixture.with(names) {
            try Fixture.busybox("restartmfbase")
            func apply(_ restart: String) throws -> (plan: String, apply: String) {
                try Testbed.mustSh("""
                    mkdir -p /tmp/e2e-restart && cat > /tmp/e2e-restart/site.yaml <<'MANIFEST'
                    name: e2e-restart
                    machines:
                      restartmf:
                        image: { clone: restartmfbase }
                        state: stopped
                        restart: \(restart)
                    MANIFEST
                    """)
                let plan = try Testbed.mustSh("nspawnctl plan -f /tmp/e2e-restart/site.yaml").stdout
                let applied = try Testbed.mustSh("nspawnctl apply -f /tmp/e2e-restart/site.yaml --json").stdout
                return (plan, applied)
            }
            func shown() throws -> String {
                try Testbed.mustSh("systemctl show systemd-nspawn@restartmf.service -p Restart -p RestartUSec -p StartLimitBurst").stdout
            }
            _ = try apply("{ policy: on-failure, delay: 2s, max: 5/1min }")
            #expect(try shown() == "Restart=on-failure\nRestartUSec=2s\nStartLimitBurst=5\n")
            let again = try decodeJSON(PlanJSON.self, from: try Testbed.mustSh("nspawnctl plan -f /tmp/e2e-restart/site.yaml --json").stdout)
            #expect(again.changes == 0, "\(again.machines.map(\.changes))")
            // The whole policy replaces the one before: no delay or limit left over.
            let edited = try apply("always")
            #expect(edited.plan.contains("~ restartmf restart: on-failure, delay 2s, at most 5 starts in 60s → always"), "\(edited.plan)")
            #expect(try shown() == "Restart=always\nRestartUSec=100ms\nStartLimitBurst=5\n", "systemd's default burst is 5 too")
            #expect(try Testbed.mustSh("cat /etc/systemd/system/systemd-nspawn@restartmf.service.d/60-restart.conf").stdout.contains("StartLimit") == false)
            _ = try apply("\"no\"")
            #expect(try Testbed.sh("test -e /etc/systemd/system/systemd-nspawn@restartmf.service.d/60-restart.conf").status != 0)
            #expect(try shown().hasPrefix("Restart=no\n"))
        }
    }
}
