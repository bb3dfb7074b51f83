import Foundation
import Testing

/// `plan` and `apply` through nspawnd (`--api`) and over ssh: the manifest travels in the
/// request, the apply runs as an operation whose progress /v1/events carries, and the CLI
/// prints what the direct path prints. Cross-checked with machinectl, cat and stat.
@Suite("ManifestDaemon", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct ManifestDaemonTests {
    static let base = "e2e-mfd-base"
    static let web = "e2e-mfd-web"
    static let bad = "e2e-mfd-bad"
    static let file = "/tmp/e2e-mfd.yaml"

    static func manifest(motd: String) -> String {
        """
        name: e2e-mfd
        machines:
          \(web):
            image: { clone: \(base) }
            settings:
              Exec.Environment: GREETING=hello
            files:
              - path: /etc/motd
                content: "\(motd)\\n"
                mode: "0640"
            state: running
            run:
              - command: ["/bin/sh", "-c", "echo provisioned > /etc/provisioned"]
                creates: /etc/provisioned
        """
    }

    static func write(_ text: String, to path: String = file) throws {
        try Testbed.mustSh("cat > \(path) <<'EOF'\n\(text)\nEOF")
    }

    struct Change: Decodable, Equatable {
        var op: String
        var field: String
    }

    struct MachineResult: Decodable {
        var name: String
        var result: String
        var changes: [Change]
        var error: String?
        var rolledBack: Bool?
    }

    struct Report: Decodable {
        var manifest: String
        var file: String
        var changes: Int
        var failed: Int
        var machines: [MachineResult]
    }

    struct Plan: Decodable {
        var manifest: String
        var changes: Int
    }

    /// Follows /v1/events with curl, as a unit of its own, into `path`.
    static func followEvents(_ unit: String, into path: String) throws {
        try Testbed.mustSh("""
            rm -f \(path)
            systemd-run --unit=\(unit) -p StandardOutput=file:\(path) \
                curl -sN --unix-socket \(API.socket) http://nspawnd/v1/events >/dev/null 2>&1
            for i in $(seq 1 100); do grep -q '^event: subscribed' \(path) 2>/dev/null && exit 0; sleep 0.1; done
            exit 1
            """)
    }

    @Test(.testbedAccounts) func applyThroughTheDaemonConvergesOnceAndShowsItsProgressOnEvents() throws {
        try Fixture.with([Self.web, Self.bad, Self.base]) {
            try Fixture.busybox(Self.base)
            try Self.write(Self.manifest(motd: "hello from a manifest"))
            try Self.followEvents("e2e-mfd-events", into: "/tmp/e2e-mfd-events.txt")
            defer { _ = try? Testbed.sh("systemctl stop e2e-mfd-events; systemctl reset-failed e2e-mfd-events 2>/dev/null; rm -f \(Self.file); true") }

            // The plan through the daemon: everything to do.
            let plan = try nspawnctlClient(["--api", "plan", "--json", "-f", Self.file])
            #expect(plan.status == Exit.ok, "\(plan)")
            let planned = try decodeJSON(Plan.self, from: plan.stdout)
            #expect(planned.manifest == "e2e-mfd" && planned.changes >= 5, "\(plan.stdout)")

            let started = Date()
            let apply = try nspawnctlClient(["--api", "apply", "--json", "-f", Self.file], limit: 120)
            let seconds = Date().timeIntervalSince(started)
            #expect(apply.status == Exit.ok, "\(apply)")
            let report = try decodeJSON(Report.self, from: apply.stdout)
            #expect(report.manifest == "e2e-mfd" && report.file == Self.file && report.failed == 0)
            #expect(report.changes == planned.changes, "apply did what plan said: \(apply.stdout)")
            let fields = report.machines.first?.changes.map(\.field) ?? []
            #expect(fields.first == "machine" && fields.contains("settings.Exec.Environment") && fields.contains("file:/etc/motd")
                    && fields.contains("state") && fields.contains("run[0]"), "\(fields)")
            print("manifest apply through nspawnd: \(report.changes) changes in \(String(format: "%.1f", seconds)) s")

            // Cross-checks with tools we did not write.
            #expect(try Fixture.machinedState(Self.web) == "running")
            let root = "/var/lib/machines/\(Self.web)"
            #expect(try Testbed.run(["cat", "\(root)/etc/motd"]).stdout == "hello from a manifest\n")
            #expect(try Testbed.run(["stat", "-c", "%a %u", "\(root)/etc/motd"]).trimmed == "640 0")
            #expect(try Testbed.run(["cat", "\(root)/etc/provisioned"]).trimmed == "provisioned")
            #expect(try Testbed.run(["grep", "-x", "Environment=GREETING=hello", "/etc/systemd/nspawn/\(Self.web).nspawn"]).status == 0)

            // /v1/events carried the operation: started, each line, ended with the report.
            let stream = try Testbed.mustSh("""
                for i in $(seq 1 50); do grep -q '"kind":"apply".*"state":"succeeded"' /tmp/e2e-mfd-events.txt && break; sleep 0.1; done
                cat /tmp/e2e-mfd-events.txt
                """).stdout
            let operations = stream.split(separator: "\n").filter { $0.hasPrefix("data: ") && $0.contains("\"kind\":\"apply\"") }
            #expect(operations.first?.contains("\"state\":\"running\"") == true && operations.first?.contains("\"event_count\":0") == true,
                    "\(operations.first ?? "no apply event")")
            for count in 1...report.changes {
                #expect(operations.contains { $0.contains("\"event_count\":\(count),") || $0.contains("\"event_count\":\(count)}") }, "line \(count) in \(stream)")
            }
            #expect(operations.contains { $0.contains(#""field":"machine","new":"clone of \#(Self.base)""#) && $0.contains(#""machine":"\#(Self.web)","type":"change""#) },
                    "the typed event of the machine's creation: \(stream)")
            #expect(operations.last?.contains("\"state\":\"succeeded\"") == true && operations.last?.contains("\"report\":") == true,
                    "\(operations.last ?? "")")

            // A second apply changes nothing, through the daemon and over ssh alike.
            let again = try nspawnctlClient(["--api", "apply", "--json", "-f", Self.file], limit: 120)
            #expect(again.status == Exit.ok, "\(again)")
            let second = try decodeJSON(Report.self, from: again.stdout)
            #expect(second.changes == 0 && second.machines.map(\.result) == ["unchanged"], "\(again.stdout)")
            let text = try nspawnctlClient(["--api", "apply", "-f", Self.file], limit: 120)
            #expect(text.status == Exit.ok && text.stdout == "apply: 0 changes, 0 failed\n", "\(text)")

            try RemoteFixtures.prepare()
            let host = RemoteFixtures.host("root")
            let remotePlan = try nspawnctlClient(["--host", host, "plan", "-f", Self.file])
            #expect(remotePlan.status == Exit.ok && remotePlan.stdout == "plan: 0 changes in 0 of 1 machines\n", "\(remotePlan)")

            // Over ssh, a change: the new file content, and only that, in the direct path's words.
            try Self.write(Self.manifest(motd: "changed over ssh"))
            let remote = try nspawnctlClient(["--host", host, "apply", "-f", Self.file], limit: 120)
            #expect(remote.status == Exit.ok, "\(remote)")
            let lines = remote.stdout.split(separator: "\n")
            #expect(lines.count == 2 && lines.first?.hasPrefix("~ \(Self.web) file:/etc/motd") == true && lines.last == "apply: 1 change, 0 failed",
                    "\(remote.stdout)")
            #expect(try Testbed.run(["cat", "\(root)/etc/motd"]).stdout == "changed over ssh\n")

            // A refused manifest: exit 2 naming the file, line and key, and no operation started.
            try Self.write("machines:\n  \(Self.web):\n    colour: blue", to: "/tmp/e2e-mfd-refused.yaml")
            let refused = try nspawnctlClient(["--api", "apply", "-f", "/tmp/e2e-mfd-refused.yaml"])
            #expect(refused.status == Exit.invalidInput && refused.stderr.contains("/tmp/e2e-mfd-refused.yaml:3:") && refused.stderr.contains("colour"),
                    "\(refused)")

            // A machine that fails: exit 1, the report says why, and the machine this apply made is gone.
            try Self.write("""
                machines:
                  \(Self.bad):
                    image: { clone: \(Self.base) }
                    state: running
                    run:
                      - command: ["/bin/sh", "-c", "echo nope >&2; exit 3"]
                """, to: "/tmp/e2e-mfd-bad.yaml")
            let failing = try nspawnctlClient(["--api", "apply", "--json", "-f", "/tmp/e2e-mfd-bad.yaml"], limit: 120)
            #expect(failing.status == 1, "\(failing)")
            let failed = try decodeJSON(Report.self, from: failing.stdout)
            #expect(failed.failed == 1 && failed.machines.first?.result == "failed" && failed.machines.first?.rolledBack == true, "\(failing.stdout)")
            #expect(failed.machines.first?.error?.contains("exited with 3") == true, "\(failing.stdout)")
            #expect(try Testbed.run(["machinectl", "image-status", Self.bad]).status != 0, "the failed machine was removed")
            // In text mode the failure is an error message on stderr, as on the direct path.
            let failingText = try nspawnctlClient(["-H", RemoteFixtures.host("root"), "apply", "-f", "/tmp/e2e-mfd-bad.yaml"], limit: 120)
            #expect(failingText.status == 1 && failingText.stdout.hasSuffix("apply: 0 changes, 1 failed\n"), "\(failingText)")
            #expect(failingText.stderr.contains("nspawnctl: \(Self.bad): machine '\(Self.bad)': run[0]") && failingText.stderr.contains("exited with 3"), "\(failingText)")
            #expect(try Testbed.run(["machinectl", "image-status", Self.bad]).status != 0, "the failed machine was removed")
        }
    }
}
