import Foundation
import Testing

extension EndToEndTests {
    /// One refusal, one answer: every error category reads the same directly, through nspawnd
    /// and over ssh — exit code, message on stderr and the `--json` error object. Each route
    /// gets the same state from the same setup. Permission here is the host's own refusal (an
    /// immutable settings file), which root meets on every route; the daemon's refusal of a
    /// non-root peer is anOperatorMayReadAndRunMachinesButNotChangeThem's.
    @Test(.testbedAccounts) func everyErrorCategoryReadsTheSameOnEveryRoute() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-ep-x"
        let settings = "/etc/systemd/nspawn/\(name).nspawn"
        // A download slow enough to be cancelled, of the same tarball the other cases fetch.
        let slowURL = "http://127.0.0.1:8093/busybox-root.tar.gz"
        try Testbed.mustSh("""
            systemctl -q is-active e2e-ep-slow-http || systemd-run --quiet --collect --unit=e2e-ep-slow-http \\
                /nspawnctl/Tests/Fixtures/slow-http /var/tmp/e2e-remote-www/busybox-root.tar.gz 8093 20000
            for i in $(seq 1 50); do curl -s -o /dev/null --max-time 0.3 \(slowURL); [ $? -eq 28 ] && exit 0; sleep 0.1; done
            echo "nothing serves \(slowURL)" >&2; exit 1
            """)
        defer { _ = try? Testbed.sh("systemctl stop e2e-ep-slow-http") }
        let clear = {
            _ = try? Testbed.sh("chattr -i \(settings) 2>/dev/null; true")
            Fixture.remove([name])
        }
        let immutableSettings: (String) throws -> Void = {
            try Fixture.busybox($0)
            try Testbed.mustSh("nspawnctl config \($0) --set Hostname=a >/dev/null && chattr +i \(settings)")
        }
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
            ("permission", Exit.permissionDenied, immutableSettings, ["config", name, "--set", "Hostname=b"],
             "cannot write '\(settings)': Operation not permitted"),
            ("cancelled", 130, none, ["import", name, slowURL], "import of '\(name)' cancelled; what it wrote was removed"),
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
                    clear()
                    try item.setup(name)
                    let words = [item.argv[0]] + route.flags + (json ? ["--json"] : []) + item.argv.dropFirst()
                    if item.exit == 130 {
                        // Ctrl-C, as a terminal sends it: SIGINT to the whole process group.
                        seen.append((route.label, try interrupted(words, after: 2)))
                        let left = try leftovers(of: name)
                        #expect(left.isEmpty, "\(item.label), \(route.label) left \(left)")
                    } else {
                        seen.append((route.label, try nspawnctlClient(words, limit: 120)))
                    }
                }
                clear()
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

    /// nspawnctl with `words`, sent SIGINT by `timeout` after `seconds` (timeout signals its
    /// process group, helper and ssh included, as Ctrl-C would).
    func interrupted(_ words: [String], after seconds: Int) throws -> TimedResult {
        let started = Date()
        let result = try Testbed.run(["timeout", "--preserve-status", "-s", "INT", String(seconds), "nspawnctl"] + words)
        return TimedResult(result: result, seconds: Date().timeIntervalSince(started))
    }

    /// What a cancelled import of `name` left in the store, once the canceller has had 5 s.
    func leftovers(of name: String) throws -> String {
        try Testbed.sh("""
            for i in $(seq 1 50); do ls -A /var/lib/machines | grep -qxE '(\\.#import\\.[0-9a-f]+\\.)?\(name)' || exit 0; sleep 0.1; done
            ls -A /var/lib/machines | grep -xE '(\\.#import\\.[0-9a-f]+\\.)?\(name)'
            """).trimmed
    }
}
