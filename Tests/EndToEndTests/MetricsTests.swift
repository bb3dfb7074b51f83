import Foundation
import Testing

/// `/v1/metrics` checked by Prometheus's own tools: promtool reads the document, and a real
/// Prometheus (Debian's, run in the testbed's network namespace) scrapes nspawnd-metrics.socket
/// and answers for the machine through its HTTP API.
@Suite("Metrics", .serialized, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct MetricsEndToEndTests {
    static func testbedPID() throws -> String {
        let status = try Testbed.runLocal([Testbed.repositoryRoot.appendingPathComponent("scripts/testbed").path, "status", try #require(Testbed.name)])
        return try #require(status.stdout.firstMatch(of: /systemd PID ([0-9]+)/).map { String($0.1) }, "\(status)")
    }

    @Test(.usesDaemon) func theDocumentPassesPromtoolAndNamesTheMachine() throws {
        let name = "metricsbb"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("nspawnctl start \(name)")
            let text = try Testbed.mustSh("curl -sf --unix-socket /run/nspawnd/nspawnd.sock http://nspawnd/v1/metrics").stdout
            let check = try Testbed.runLocal(["/usr/bin/promtool", "check", "metrics"], stdin: text)
            #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
            #expect(text.contains("nspawn_machine_state{machine=\"\(name)\",state=\"running\"} 1\n"))
            #expect(text.contains("nspawn_machine_cpu_seconds_total{machine=\"\(name)\"} "))
            #expect(text.contains("nspawn_machine_tasks{machine=\"\(name)\"} "))
            #expect(text.contains("nspawnd_requests_total{") || text.contains("# TYPE nspawnd_requests_total counter"))
            // The second scrape counts the first.
            let again = try Testbed.mustSh("curl -sf --unix-socket /run/nspawnd/nspawnd.sock http://nspawnd/v1/metrics").stdout
            #expect(again.contains("nspawnd_requests_total{route=\"metrics\",method=\"GET\",status=\"200\"} "), "\(again.split(separator: "\n").filter { $0.hasPrefix("nspawnd_requests_total") })")
            #expect(again.contains("nspawnd_request_duration_seconds_bucket{route=\"metrics\",le=\"+Inf\"} "))
        }
    }

    /// systemd starts a socket only while its service is not running, so nspawnd is stopped
    /// first: no other suite may be using it then.
    @Test(.killsDaemon) func aRealPrometheusScrapesTheMetricsSocket() throws {
        let name = "metricsprom"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                nspawnctl start \(name)
                systemctl enable nspawnd-metrics.socket
                for i in $(seq 1 20); do systemctl stop nspawnd.service; systemctl start nspawnd-metrics.socket 2>/dev/null && exit 0; sleep 0.2; done
                exit 1
                """)
            defer { _ = try? Testbed.sh("systemctl disable --now nspawnd-metrics.socket") }
            // The listener serves metrics and nothing else.
            let refused = try Testbed.sh("curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:9842/v1/machines; curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:9842/v1/machines/\(name)/stop").stdout
            #expect(refused == "404 404", "\(refused)")
            #expect(try Fixture.machinedState(name) == "running")

            let work = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-prometheus-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: work) }
            try """
                global: { scrape_interval: 1s }
                scrape_configs:
                  - job_name: nspawnd
                    static_configs: [{ targets: ["127.0.0.1:9842"] }]
                """.write(to: work.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
            let prometheus = Process()
            prometheus.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            prometheus.arguments = ["-t", try Self.testbedPID(), "-n", "/usr/bin/prometheus", "--config.file=\(work.path)/prometheus.yml",
                                    "--storage.tsdb.path=\(work.path)/data", "--web.listen-address=127.0.0.1:9091"]
            prometheus.standardOutput = FileHandle.nullDevice
            let log = work.appendingPathComponent("log")
            #expect(FileManager.default.createFile(atPath: log.path, contents: nil))
            prometheus.standardError = try FileHandle(forWritingTo: log)
            try prometheus.run()
            defer { prometheus.terminate(); prometheus.waitUntilExit() }

            // Memory where systemd accounts it; CPU time on a host whose memory controller is cgroup v1's.
            let memoryCurrent = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p MemoryCurrent --value").trimmed
            let series = UInt64(memoryCurrent) != nil ? "nspawn_machine_memory_bytes" : "nspawn_machine_cpu_seconds_total"
            let answer = try Testbed.mustSh("""
                for i in $(seq 1 60); do
                    out=$(curl -sf 'http://127.0.0.1:9091/api/v1/query?query=\(series)%7Bmachine%3D%22\(name)%22%7D')
                    case "$out" in *'"machine":"\(name)"'*) echo "$out"; exit 0;; esac
                    sleep 0.5
                done
                echo "$out"; exit 1
                """).stdout
            #expect(answer.contains("\"__name__\":\"\(series)\"") && answer.contains("\"job\":\"nspawnd\""), "\(answer)")
            if series == "nspawn_machine_cpu_seconds_total" {
                let memory = try Testbed.mustSh("curl -sf 'http://127.0.0.1:9091/api/v1/query?query=nspawn_machine_memory_bytes'").stdout
                #expect(memory.contains("\"result\":[]"), "memory reported where systemd has none: \(memory)")
            }
            let up = try Testbed.mustSh("curl -sf 'http://127.0.0.1:9091/api/v1/query?query=up%7Bjob%3D%22nspawnd%22%7D'").stdout
            #expect(up.contains("\"value\":[") && up.contains(",\"1\"]"), "the scrape target is not up: \(up)")
        }
    }
}
