import Foundation
import Testing

extension EndToEndTests {
    /// One refusal, one answer: every error category reads the same directly, through nspawnd
    /// and over ssh — exit code, message on stderr and the `--json` error object. Each route
    /// gets the same state from the same setup. (Permission is the daemon's alone, as root
    /// calls the library directly: anOperatorMayReadAndRunMachinesButNotChangeThem covers it.)
    @Test(.testbedAccounts) func everyErrorCategoryReadsTheSameOnEveryRoute() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-ep-x"
        let stopped: (String) throws -> Void = { try Fixture.busybox($0) }
        let running: (String) throws -> Void = { try Fixture.busybox($0); try Testbed.mustSh("machinectl start \($0)") }
        let readOnlyWithSnapshot: (String) throws -> Void = {
            try Fixture.busybox($0)
            // The fixtures remove roots by hand, which leaves the snapshots of an earlier route.
            try Testbed.mustSh("""
                chattr -i '/var/lib/machines/.#nspawnctl-snapshots/\($0)'/* 2>/dev/null; rm -rf '/var/lib/machines/.#nspawnctl-snapshots/\($0)'
                nspawnctl snapshot \($0) s1 >/dev/null && machinectl read-only \($0) yes
                """)
        }
        let none: (String) throws -> Void = { _ in }
        let cases: [(label: String, exit: Int32, setup: (String) throws -> Void, argv: [String], says: String)] = [
            ("not found", Exit.notFound, none, ["status", name], "no machine or image '\(name)' exists"),
            ("invalid name", Exit.invalidInput, none, ["start", "../etc"], "invalid machine name '../etc'"),
            ("invalid timeout", Exit.invalidInput, running, ["stop", "--timeout", "100000", name],
             "invalid timeout 100000: expected seconds between 0 and 86400"),
            ("conflict", Exit.conflict, stopped, ["stop", name], "machine '\(name)' is not running"),
            ("read-only image", Exit.conflict, readOnlyWithSnapshot, ["restore", name, "s1"],
             "machine '\(name)' is read-only; make it writable first with 'nspawnctl read-only \(name) no'"),
            ("unknown recipe", Exit.notFound, none, ["bootstrap", "e2e-no-such-recipe", name], "no recipe 'e2e-no-such-recipe' in "),
            ("verification", 6, none, ["import", "--checksum", "sha256:" + String(repeating: "0", count: 64), name, RemoteFixtures.tarballURL],
             "sha256"),
        ]
        let routes: [(label: String, flags: [String])] = [("direct", []), ("nspawnd", ["--api"]), ("ssh", ["--host", "ssh://127.0.0.1"])]
        for item in cases {
            for json in [false, true] {
                var seen: [(route: String, run: TimedResult)] = []
                for route in routes {
                    Fixture.remove([name])
                    try item.setup(name)
                    let words = [item.argv[0]] + route.flags + (json ? ["--json"] : []) + item.argv.dropFirst()
                    seen.append((route.label, try nspawnctlClient(words, limit: 120)))
                }
                Fixture.remove([name])
                // The store itself goes when empty, as nspawnctl's own removal leaves it: other
                // tests count every .# entry in /var/lib/machines as a leftover.
                _ = try? Testbed.sh("""
                    chattr -i '/var/lib/machines/.#nspawnctl-snapshots/\(name)'/* 2>/dev/null; rm -rf '/var/lib/machines/.#nspawnctl-snapshots/\(name)'
                    rmdir '/var/lib/machines/.#nspawnctl-snapshots' 2>/dev/null; true
                    """)
                let context = "\(item.label)\(json ? " --json" : "")"
                // An import's --json progress events come as often as time allows; the rest must match.
                func said(_ run: TimedResult) -> String {
                    run.stderr.split(separator: "\n").filter { !$0.hasPrefix(#"{"event":"progress""#) }.joined(separator: "\n")
                }
                for (route, run) in seen {
                    #expect(run.status == item.exit, "\(context), \(route): \(run)")
                    #expect(run.stderr.contains(item.says), "\(context), \(route) names the cause: \(run)")
                    #expect(said(run) == said(seen[0].run), "\(context): \(route) says\n\(run.stderr)\n--- direct says ---\n\(seen[0].run.stderr)")
                    #expect(run.stdout == seen[0].run.stdout, "\(context): \(route) printed\n\(run.stdout)\n--- direct printed ---\n\(seen[0].run.stdout)")
                }
                if json {
                    let error = try decodeJSON(ErrorJSON.self, from: said(seen[0].run))
                    #expect(error.error.message.contains(item.says), "\(context): \(seen[0].run.stderr)")
                }
            }
        }
    }
}
