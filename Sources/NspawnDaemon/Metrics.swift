import NspawnAPI
import NspawnKit
import Synchronization

/// nspawnd's own numbers for `/v1/metrics`: requests by route, method and status, and their
/// latency as a histogram per route. Counted from the daemon's start; it exits when idle, so a
/// scraper sees counters reset (Prometheus's rate() takes resets in its stride).
public final class DaemonMetrics: Sendable {
    static let buckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    struct RequestKey: Hashable { var route: String; var method: String; var status: Int }
    struct Histogram {
        var counts = [Int](repeating: 0, count: DaemonMetrics.buckets.count)
        var count = 0
        var sum = 0.0
    }

    private struct State {
        var requests: [RequestKey: Int] = [:]
        var latency: [String: Histogram] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// `route` is the endpoint's operation name, or `unknown` for a path that is none.
    public func record(route: String, method: String, status: Int, seconds: Double) {
        state.withLock { state in
            state.requests[RequestKey(route: route, method: method, status: status), default: 0] += 1
            var histogram = state.latency[route, default: Histogram()]
            for (index, bound) in Self.buckets.enumerated() where seconds <= bound { histogram.counts[index] += 1 }
            histogram.count += 1
            histogram.sum += seconds
            state.latency[route] = histogram
        }
    }

    func snapshot() -> (requests: [RequestKey: Int], latency: [String: Histogram]) {
        state.withLock { ($0.requests, $0.latency) }
    }
}

/// The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per family,
/// then its samples, label values escaped.
struct PrometheusText {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        let rendered = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escaped($0.1))\"" }.joined(separator: ",") + "}"
        text += "\(name)\(rendered) \(Self.number(value))\n"
    }

    static func escaped(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }

    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

extension Router {
    /// Machines, images and the daemon itself in Prometheus's text format.
    func metricsResponse() async throws -> APIResponse {
        let service = service
        async let listed = listings.list { try await service.list(ListRequest()) }
        async let sampled = service.stats(StatsRequest())
        let (machines, stats) = try await (listed, sampled)
        var out = PrometheusText()
        Self.machineFamilies(machines, stats, into: &out)
        await daemonFamilies(into: &out)
        return APIResponse(status: 200, body: Array(out.text.utf8), headers: [("Content-Type", PrometheusText.contentType)])
    }

    static func machineFamilies(_ machines: [MachineSummary], _ stats: [MachineStats], into out: inout PrometheusText) {
        let states = MachineState.allCases.map(\.rawValue)
        out.family("nspawn_machine_state", "gauge", "1 for the state the machine is in (running, stopped, listening, ...), 0 for the others.")
        for machine in machines {
            for state in states {
                out.sample("nspawn_machine_state", [("machine", machine.name), ("state", state)], machine.state.rawValue == state ? 1 : 0)
            }
        }
        out.family("nspawn_image_size_bytes", "gauge", "Disk space the machine's image uses, as machined counts it.")
        for machine in machines {
            if let usage = machine.usage { out.sample("nspawn_image_size_bytes", [("machine", machine.name)], Double(usage)) }
        }
        out.family("nspawn_machine_healthy", "gauge", "1 when the running machine's health check passes, 0 when it is unhealthy; absent without a check or before a verdict.")
        for machine in machines {
            guard let health = machine.health, health.status != .starting else { continue }
            out.sample("nspawn_machine_healthy", [("machine", machine.name)], health.status == .healthy ? 1 : 0)
        }
        out.family("nspawn_machine_health_failing_streak", "gauge", "Failed health checks in a row of the running machine.")
        for machine in machines {
            if let health = machine.health { out.sample("nspawn_machine_health_failing_streak", [("machine", machine.name)], Double(health.failingStreak)) }
        }
        let perMachine: [(String, String, String, (MachineStats) -> Double?)] = [
            ("nspawn_machine_cpu_seconds_total", "counter", "CPU time of everything in the running machine (cgroup cpu.stat usage_usec).", { $0.cpuSeconds }),
            ("nspawn_machine_memory_bytes", "gauge", "Memory the running machine's cgroup uses (memory.current).", { $0.memoryBytes.map { Double($0) } }),
            ("nspawn_machine_memory_peak_bytes", "gauge", "The running machine's highest memory use (memory.peak).", { $0.memoryPeakBytes.map { Double($0) } }),
            ("nspawn_machine_memory_limit_bytes", "gauge", "The running machine's memory limit (memory.max); absent when unlimited.", { $0.memoryLimitBytes.map { Double($0) } }),
            ("nspawn_machine_io_read_bytes_total", "counter", "Bytes the running machine read from block devices (io.stat rbytes).", { $0.ioReadBytes.map { Double($0) } }),
            ("nspawn_machine_io_write_bytes_total", "counter", "Bytes the running machine wrote to block devices (io.stat wbytes).", { $0.ioWriteBytes.map { Double($0) } }),
            ("nspawn_machine_tasks", "gauge", "Tasks (threads) in the running machine.", { $0.tasks.map { Double($0) } }),
            ("nspawn_machine_network_receive_bytes_total", "counter", "Bytes received on the running machine's own interfaces, loopback left out.",
             { $0.networkReceiveBytes.map { Double($0) } }),
            ("nspawn_machine_network_transmit_bytes_total", "counter", "Bytes sent on the running machine's own interfaces, loopback left out.",
             { $0.networkTransmitBytes.map { Double($0) } }),
            ("nspawn_machine_uptime_seconds", "gauge", "Seconds since machined registered the running machine.", { $0.uptimeSeconds }),
        ]
        for (name, type, help, value) in perMachine {
            out.family(name, type, help)
            for sample in stats { if let v = value(sample) { out.sample(name, [("machine", sample.name)], v) } }
        }
    }

    func daemonFamilies(into out: inout PrometheusText) async {
        let (requests, latency) = metrics.snapshot()
        out.family("nspawnd_requests_total", "counter", "Requests nspawnd answered since it started, by route, method and status.")
        for (key, count) in requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status) }) {
            out.sample("nspawnd_requests_total", [("route", key.route), ("method", key.method), ("status", String(key.status))], Double(count))
        }
        out.family("nspawnd_request_duration_seconds", "histogram", "Time from a request's end to its answer, by route (streams until their first byte).")
        for (route, histogram) in latency.sorted(by: { $0.key < $1.key }) {
            for (index, bound) in DaemonMetrics.buckets.enumerated() {
                out.sample("nspawnd_request_duration_seconds_bucket", [("route", route), ("le", PrometheusText.number(bound))], Double(histogram.counts[index]))
            }
            out.sample("nspawnd_request_duration_seconds_bucket", [("route", route), ("le", "+Inf")], Double(histogram.count))
            out.sample("nspawnd_request_duration_seconds_sum", [("route", route)], histogram.sum)
            out.sample("nspawnd_request_duration_seconds_count", [("route", route)], Double(histogram.count))
        }
        let running = await operations.runningByKind
        let finished = await operations.finishedCounts
        out.family("nspawnd_operations_running", "gauge", "Imports and applies running now.")
        for kind in [Operation.importKind, Operation.applyKind] {
            out.sample("nspawnd_operations_running", [("kind", kind)], Double(running[kind] ?? 0))
        }
        out.family("nspawnd_operations_finished_total", "counter", "Imports and applies that ended since nspawnd started, by final state.")
        for kind in [Operation.importKind, Operation.applyKind] {
            for state in [Operation.State.succeeded, .failed, .cancelled] {
                out.sample("nspawnd_operations_finished_total", [("kind", kind), ("state", state.rawValue)], Double(finished[kind]?[state] ?? 0))
            }
        }
    }
}
