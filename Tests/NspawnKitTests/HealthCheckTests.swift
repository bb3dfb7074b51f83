import FoundationEssentials
import Testing
@testable import NspawnKit

@Suite struct HealthCheckTests {
    static let start = Date(timeIntervalSince1970: 1_000_000)
    static func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    /// Folds outcomes (seconds after the start, exit code or nil for a timeout) into the health.
    static func run(_ check: HealthCheck, _ outcomes: [(Double, Int32?)]) -> [MachineHealth] {
        var health = MachineHealth(since: start)
        return outcomes.map { time, code in
            health = health.recording(code.map { .exited($0) } ?? .timedOut, output: "o", check: check, at: at(time))
            return health
        }
    }

    @Test func failuresInARowMakeItUnhealthyAndOneSuccessHealthy() {
        let check = HealthCheck(command: ["true"], retries: 3)
        let states = Self.run(check, [(1, 0), (2, 1), (3, nil), (4, 1), (5, 1), (6, 0)])
        #expect(states.map(\.status) == [.healthy, .healthy, .healthy, .unhealthy, .unhealthy, .healthy])
        #expect(states.map(\.failingStreak) == [0, 1, 2, 3, 4, 0])
        #expect(states[2].lastExitCode == nil && states[3].lastExitCode == 1 && states[3].lastCheck == Self.at(4))
    }

    @Test func theStartPeriodForgivesFailuresOnlyBeforeAVerdict() {
        let check = HealthCheck(command: ["true"], retries: 1, startPeriodSeconds: 10)
        // Failures within the period do not count; once past it one failure is enough.
        #expect(Self.run(check, [(2, 1), (5, 1), (11, 1)]).map(\.status) == [.starting, .starting, .unhealthy])
        #expect(Self.run(check, [(2, 1), (5, 1)]).map(\.failingStreak) == [0, 0])
        // A success within the period is a verdict: later failures count at once.
        #expect(Self.run(check, [(2, 0), (3, 1)]).map(\.status) == [.healthy, .unhealthy])
    }

    @Test func aHealthWithoutAStartTakesTheFirstCheckAsItsStart() {
        let check = HealthCheck(command: ["true"], retries: 1, startPeriodSeconds: 30)
        let first = MachineHealth(since: nil).recording(.exited(1), output: "", check: check, at: Self.at(0))
        #expect(first.since == Self.at(0) && first.status == .starting && first.failingStreak == 0)
    }

    @Test func theServiceFileRecordsTheCheckAndReadsBackWhole() throws {
        let check = HealthCheck(command: HealthCheck.shellCommand("curl -f http://localhost/ || exit 1; echo \"100%\" $HOME"),
                                intervalSeconds: 1.5, timeoutSeconds: 5, retries: 2, startPeriodSeconds: 60, restartOnUnhealthy: true)
        let name = try MachineName("web")
        let text = try check.serviceText(machine: name, nspawnctl: "/usr/local/bin/nspawnctl")
        #expect(HealthCheck(serviceText: text) == check)
        #expect(text.contains("ExecStart=/usr/local/bin/nspawnctl health-check web\n"))
        #expect(text.contains("StartLimitIntervalSec=0\n") && text.contains("Type=oneshot\n"))
        #expect(!text.split(separator: "\n").contains { $0.hasPrefix("X-NspawnctlHealth=") && $0.hasSuffix("\\") }, "no continuation line")
        let timer = check.timerText(machine: name)
        #expect(timer.contains("BindsTo=systemd-nspawn@web.service\n") && timer.contains("OnUnitActiveSec=1500ms\n") && timer.contains("AccuracySec=100ms\n"))
        let dropIn = try HealthCheck.dropIn(machine: name, nspawnctl: "/usr/local/bin/nspawnctl")
        #expect(dropIn.contains("Wants=nspawnctl-health-web.timer\n") && dropIn.contains("ExecStartPre=-/usr/local/bin/nspawnctl health-check --reset web\n"))
        #expect(HealthCheck(serviceText: "[Unit]\nDescription=x\n") == nil, "not ours")
        #expect(HealthCheck(serviceText: "[Unit]\nX-NspawnctlHealth={broken\n") == nil)
    }

    @Test func changesKeepWhatTheyDoNotName() throws {
        let current = HealthCheck(command: ["a"], intervalSeconds: 5, retries: 2, restartOnUnhealthy: true)
        let changed = try HealthChange(timeoutSeconds: 3).applied(to: current, machine: "m")
        #expect(changed == HealthCheck(command: ["a"], intervalSeconds: 5, timeoutSeconds: 3, retries: 2, restartOnUnhealthy: true))
        #expect(try HealthChange(remove: true).applied(to: current, machine: "m") == nil)
        #expect(try HealthChange(command: ["b"]).applied(to: nil, machine: "m") == HealthCheck(command: ["b"]))
        #expect(throws: NspawnError.invalidArgument("machine 'm' has no health check to change; give --health-cmd too")) {
            try HealthChange(retries: 1).applied(to: nil, machine: "m")
        }
        #expect(throws: NspawnError.self) { try HealthChange(retries: 1, remove: true).applied(to: current, machine: "m") }
    }

    @Test func badValuesAreRefused() throws {
        let bad: [HealthCheck] = [
            HealthCheck(command: []), HealthCheck(command: [""]), HealthCheck(command: HealthCheck.shellCommand("  ")),
            HealthCheck(command: ["a\u{0}b"]), HealthCheck(command: [String(repeating: "x", count: 5000)]),
            HealthCheck(command: ["true"], intervalSeconds: 0.5), HealthCheck(command: ["true"], intervalSeconds: 90_000),
            HealthCheck(command: ["true"], timeoutSeconds: 0), HealthCheck(command: ["true"], retries: 0),
            HealthCheck(command: ["true"], retries: 101), HealthCheck(command: ["true"], startPeriodSeconds: -1),
        ]
        for check in bad {
            #expect(throws: NspawnError.self, "\(check)") { try check.validate() }
        }
        for span in ["", "-1s", "soon", "+5s"] {
            #expect(throws: NspawnError.self) { try HealthCheck.span(parsing: span, what: "interval") }
        }
        #expect(try HealthCheck.span(parsing: "1min 30s", what: "interval") == 90)
    }

    @Test func theTextSaysWhatRunsAndWhy() {
        let check = HealthCheck(command: HealthCheck.shellCommand("exit 0"), retries: 1, startPeriodSeconds: 5, restartOnUnhealthy: true)
        #expect(check.text == "'exit 0' every 30s, timeout 10s, unhealthy after 1 failure, start period 5s, restarts the machine when unhealthy")
        let sick = MachineHealth(status: .unhealthy, failingStreak: 3, since: nil, lastExitCode: 7, lastOutput: "first\nrefused")
        #expect(sick.text == "unhealthy (3 failures in a row; exit 7: refused)")
        #expect(MachineHealth(status: .healthy, since: nil).text == "healthy")
    }
}
