import Foundation
import Testing

extension EndToEndTests {
    /// Four clients read `ls` and `status` through nspawnd while a fifth cycles the machine with
    /// start and stop, for two minutes: a machine that stops while it is read is a stopped
    /// machine (never a 500), a start right after a stop always works, and the daemon's memory
    /// does not grow. The daemon is one of the test's own (Tests/Fixtures/daemon-churn).
    @Test func readsAndCyclesThroughTheDaemonNeverFailAndItsMemoryStaysFlat() throws {
        let name = "e2e-churn"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            let script = Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/daemon-churn").path
            let result = try Testbed.run([script.replacingOccurrences(of: Testbed.repositoryRoot.path, with: "/nspawnctl"),
                                          name, "120", "4", "/run/e2e-churn/nspawnd.sock", "e2e-churn-nspawnd"])
            #expect(result.status == 0, "\(result)")
            let summary = result.stdout.split(separator: "\n").first.map(String.init) ?? ""
            var figures: [String: String] = [:]
            for pair in summary.split(separator: " ") {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                if parts.count == 2 { figures[parts[0]] = parts[1] }
            }
            let answers = Int(figures["answers"] ?? "") ?? 0
            let cycles = Int(figures["cycles"] ?? "") ?? 0
            #expect(answers > 1000, "the readers were answered: \(result.stdout)")
            #expect(cycles > 20, "the machine was cycled: \(result.stdout)")
            #expect(figures["non200"] == "0", "every answer was 200: \(result.stdout)")
            #expect(figures["failed"] == "0", "every start after a stop worked: \(result.stdout)")
            #expect(figures["same_daemon"] == "yes", "one daemon served it all: \(result.stdout)")
            let early = Double(figures["rss_early_kb"] ?? "") ?? 0
            let end = Double(figures["rss_end_kb"] ?? "") ?? .infinity
            #expect(early > 0 && end <= early * 1.10, "nspawnd's RSS after 10 s and at the end: \(early) → \(end) kB")
            print("churn: \(summary)")
        }
    }
}
