import ArgumentParser
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

struct Stats: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show running machines' CPU, memory, block I/O, tasks and network use.",
        discussion: """
            From each machine's cgroup (cpu.stat, memory.current, memory.peak, memory.max, io.stat, \
            pids.current) and its own network namespace's interfaces, without a process per machine. \
            CPU % needs two samples, so a single one shows '-' (as systemd-cgtop's first does); with \
            --watch each refresh shows the use since the last one, 100 being one CPU busy. On a \
            terminal --watch redraws the table; otherwise it prints one table (or, with --json, one \
            JSON array) per refresh.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machines to show (default: every running container).", transform: parseMachineName)
    var names: [MachineName] = []

    @Flag(name: .shortAndLong, help: "Refresh until interrupted.")
    var watch = false

    @Option(help: ArgumentHelp("Seconds between refreshes with --watch (default 2).", valueName: "SECONDS"), transform: parseSeconds)
    var interval: Double?

    func validate() throws {
        if interval != nil && !watch { throw ValidationError("--interval needs --watch") }
        if let interval, interval < 0.1 || interval > 3600 { throw ValidationError("--interval must be between 0.1 and 3600 seconds") }
    }

    func run() async throws {
        let service = try output.service
        let request = StatsRequest(names: names.isEmpty ? nil : names.map(\.rawValue))
        var samples = try await service.stats(request)
        guard watch else {
            printOut(output.json ? Renderer.json(samples) : Renderer.statsTable(samples))
            return
        }
        let redraw = isatty(1) == 1 && !output.json
        let pause = Duration.milliseconds(Int64((interval ?? 2) * 1000))
        while true {
            if redraw {
                printOut("\u{1b}[H\u{1b}[2J" + Renderer.statsTable(samples))
            } else {
                printOut(output.json ? Renderer.json(samples, compact: true) : Renderer.statsTable(samples) + "\n")
            }
            fflush(nil)
            try await Task.sleep(for: pause)
            let previous = Dictionary(samples.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            samples = try await service.stats(request).map { $0.withCPUPercent(since: previous[$0.name]) }
        }
    }
}
