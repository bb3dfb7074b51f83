import ArgumentParser
import FoundationEssentials
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

struct Events: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Follow machines appearing and going away until interrupted.",
        discussion: "One line per event; with --json, one JSON object per line (the API's MachineEvent).")

    @OptionGroup var output: OutputOptions

    func run() async throws {
        let json = output.json
        let show: @Sendable (MachineEvent) -> Void = { event in
            guard event.event != .heartbeat else { return }
            if json {
                printOut(Renderer.json(event, compact: true))
            } else {
                printOut("\(Renderer.timestamp(event.time))  \(event.event.rawValue)" + (event.name.map { "  \($0)" } ?? "") + (event.state.map { "  \($0.rawValue)" } ?? "")
                         + (event.health.map { "  \($0.text)" } ?? ""))
            }
            fflush(nil)
        }
        for try await event in try output.service.events() { show(event) }
    }
}
