import Foundation
import Testing

/// Comparing what a verb printed on the direct path (root, the library) with what it printed
/// through nspawnd (`--api`): machine names and volatile fields are normalised first.
enum Parity {
    /// Replaces each name (longest first, so "x2" of a rename follows "x") and masks what differs
    /// between two equal machines or two runs: timestamps, leader PIDs, interface indices, an
    /// import's duration and the memory a running machine uses now.
    static func normalize(_ text: String, names: [String: String]) -> String {
        var out = text
        for (name, placeholder) in names.sorted(by: { $0.key.count > $1.key.count }) {
            out = out.replacingOccurrences(of: name, with: placeholder)
        }
        let masks: [(String, String)] = [
            (#"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)?"#, "<time>"),
            (#"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC"#, "<time>"),
            (#"("leader"\s*:\s*)\d+"#, "$1<pid>"),
            (#"(Leader: )\d+"#, "$1<pid>"),
            (#"("network_interfaces"\s*:\s*\[)[^\]]*\]"#, "$1<interfaces>]"),
            (#"(Interfaces: )[0-9, ]+"#, "$1<interfaces>"),
            (#"("seconds"\s*:\s*)[0-9.eE+-]+"#, "$1<seconds>"),
            (#"("memory_current"\s*:\s*)\d+"#, "$1<bytes>"),
            (#"(memory now )[0-9.]+[BKMGTPE]"#, "$1<bytes>"),
            // A status's use sample moves between any two reads.
            (#"("(cpu_seconds|sampled_usec|uptime_seconds|memory_bytes|memory_peak_bytes|io_read_bytes|io_write_bytes|tasks|network_receive_bytes|network_transmit_bytes)"\s*:\s*)[0-9.eE+-]+"#, "$1<sample>"),
            (#"(Use: ).*"#, "$1<sample>"),
        ]
        for (pattern, template) in masks {
            guard let regex = try? NSRegularExpression(pattern: pattern) else { continue }
            out = regex.stringByReplacingMatches(in: out, range: NSRange(out.startIndex..., in: out), withTemplate: template)
        }
        return out
    }

    /// Shell words, each single-quoted.
    static func quoted(_ words: [String]) -> String {
        words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
    }

    /// What is there: running machines and their leaders, images and their read-only flag, the
    /// image directory, settings files, unit files and enablement. Equal before and after means
    /// nothing was done.
    static func snapshot() throws -> String {
        try Testbed.sh("""
            echo "== running"; machinectl list --no-legend --no-pager | awk '{print $1}' | sort
            echo "== leaders"; for m in $(machinectl list --no-legend --no-pager | awk '{print $1}'); do echo "$m $(machinectl show "$m" -p Leader --value)"; done
            echo "== images"; machinectl list-images --no-legend --no-pager | awk '{print $1, $3}' | sort
            echo "== directories"; ls -A /var/lib/machines
            echo "== settings"; (cd /etc/systemd/nspawn 2>/dev/null && sha256sum -- * 2>/dev/null)
            echo "== units"; find /etc/systemd/system -name '*e2e*' | sort
            echo "== unit files"; systemctl list-unit-files 'systemd-nspawn@*' --no-legend --no-pager
            echo "== recipes"; ls -A /etc/nspawnctl/images 2>/dev/null
            """).stdout
    }

    /// `State` as machined has it, or "gone".
    static func state(_ name: String) throws -> String {
        try Testbed.sh("machinectl show \(name) -p State --value 2>/dev/null || echo gone").trimmed
    }

    /// A small recipe of our own, so `bootstrap` needs no download from outside: the busybox
    /// tarball RemoteFixtures serves, no verification (so `--no-verify` must be given).
    static func installRecipe() throws {
        try RemoteFixtures.prepare()
        try Testbed.mustSh("""
            mkdir -p /etc/nspawnctl/images
            printf '[Recipe]\\nDescription=busybox root for the parity tests\\nMirror=http://127.0.0.1:8089\\nURL={mirror}/busybox-root.tar.gz\\n\\n[Setup]\\nSetHostname=yes\\nEmptyMachineID=yes\\n' \
                > /etc/nspawnctl/images/e2e-tiny.recipe
            """)
    }

    /// The local operator: a member of group `nspawn` (the same account RemoteFixtures logs in as).
    static func operatorAccount() throws {
        try Testbed.mustSh("""
            getent group nspawn >/dev/null || groupadd -f --system nspawn
            id -u nsop >/dev/null 2>&1 || useradd --create-home --shell /bin/sh --password '*' nsop
            usermod -a -G nspawn nsop
            """)
    }

    /// `nspawnctl ARGUMENTS` as the operator (not root: through nspawnd by default).
    static func asOperator(_ arguments: [String]) throws -> CommandResult {
        try Testbed.run(["su", "-s", "/bin/sh", "nsop", "-c", "timeout 60 nspawnctl " + quoted(arguments)])
    }
}

/// Sets up `name` as a stopped busybox machine (with its settings file).
private func stopped(_ name: String) throws { try Fixture.busybox(name) }

private func running(_ name: String) throws {
    try Fixture.busybox(name)
    try Testbed.mustSh("machinectl start \(name)")
}

private func enabled(_ name: String) throws {
    try Fixture.busybox(name)
    try Testbed.mustSh("systemctl enable systemd-nspawn@\(name).service 2>/dev/null")
}

private func nothing(_ name: String) throws {}

private func gone(_ name: String) throws -> String {
    try Testbed.sh("for i in $(seq 1 100); do machinectl show \(name) >/dev/null 2>&1 || break; sleep 0.1; done; machinectl show \(name) -p State --value 2>/dev/null || echo gone").trimmed
}

private func images(_ name: String) throws -> String {
    try Testbed.sh("machinectl list-images --no-legend --no-pager | awk '{print $1, $3}' | grep -e '\(name)' | sort").stdout
}

private func settingsFile(_ name: String) throws -> String {
    try Testbed.sh("cat /etc/systemd/nspawn/\(name).nspawn 2>&1; cat /etc/systemd/system/systemd-nspawn@\(name).service.d/*.conf 2>/dev/null").stdout
}

/// Runs one verb on the direct path on `e2e-pd-LABEL` and through nspawnd (`--api`) on `e2e-pa-LABEL`,
/// each set up alike by `setup`, in text and with `--json`, and expects the same exit code (and
/// `expecting`), the same stdout and the same `observe` afterwards, once names are normalised.
/// Names derived by appending to NAME (a rename's or clone's target) are cleaned up too.
private func expectParity(
    _ label: String, expecting: Int32 = Exit.ok, setup: (String) throws -> Void,
    _ arguments: (String) -> [String], observe: ((String) throws -> String)? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let direct = "e2e-pd-\(label)"
    let api = "e2e-pa-\(label)"
    let everything = [direct, direct + "2", api, api + "2"]
    defer { Fixture.remove(everything) }
    for json in [false, true] {
        var results: [(run: TimedResult, seen: String)] = []
        for (name, flags) in [(direct, [String]()), (api, ["--api"])] {
            Fixture.remove([name, name + "2"])
            try setup(name)
            let words = arguments(name)
            // Flags go right after the verb: --exec takes the rest of the line.
            let run = try nspawnctlClient([words[0]] + flags + (json ? ["--json"] : []) + words.dropFirst())
            let seen = try observe?(name) ?? ""
            results.append((run, Parity.normalize(seen, names: [name: "NAME"])))
        }
        let (d, a) = (results[0], results[1])
        let mode = json ? "\(label) --json" : label
        #expect(d.run.status == expecting, "\(mode), direct: \(d.run)", sourceLocation: sourceLocation)
        #expect(a.run.status == d.run.status, "\(mode): exit \(a.run.status) through nspawnd, \(d.run.status) direct\n\(a.run)\n--- direct ---\n\(d.run)",
                sourceLocation: sourceLocation)
        let dOut = Parity.normalize(d.run.stdout, names: [direct: "NAME"])
        let aOut = Parity.normalize(a.run.stdout, names: [api: "NAME"])
        #expect(aOut == dOut, "\(mode): stdout through nspawnd differs:\n\(aOut)\n--- direct ---\n\(dOut)", sourceLocation: sourceLocation)
        #expect(a.seen == d.seen, "\(mode): the effect through nspawnd differs:\n\(a.seen)\n--- direct ---\n\(d.seen)", sourceLocation: sourceLocation)
    }
}

/// Runs a reading verb both ways on the same state and expects the same exit code and stdout. The
/// daemon may answer from a listing up to 1 s old, and fixtures appear behind its back, so a
/// difference is looked at again after that second.
private func expectSameReading(_ arguments: [String], expecting: Int32 = Exit.ok, sourceLocation: SourceLocation = #_sourceLocation) throws {
    for json in [false, true] {
        let words = [arguments[0]] + (json ? ["--json"] : []) + arguments.dropFirst()
        var direct = try nspawnctlClient(words)
        var api = try nspawnctlClient([words[0], "--api"] + words.dropFirst())
        for _ in 0..<3 where api.stdout != direct.stdout {
            Thread.sleep(forTimeInterval: 1.1)
            direct = try nspawnctlClient(words)
            api = try nspawnctlClient([words[0], "--api"] + words.dropFirst())
        }
        #expect(direct.status == expecting && api.status == direct.status, "\(words): \(api)\n--- direct ---\n\(direct)", sourceLocation: sourceLocation)
        #expect(Parity.normalize(api.stdout, names: [:]) == Parity.normalize(direct.stdout, names: [:]),
                "\(words) through nspawnd differs:\n\(api.stdout)\n--- direct ---\n\(direct.stdout)", sourceLocation: sourceLocation)
    }
}

extension EndToEndTests {
    @Test func apiParityForReadingVerbs() throws {
        try Fixture.with(["e2e-pr-a", "e2e-pr-b"]) {
            try running("e2e-pr-a")
            try stopped("e2e-pr-b")
            try expectSameReading(["ls"])
            try expectSameReading(["ls", "--all"])
            try expectSameReading(["status", "e2e-pr-a"])
            try expectSameReading(["status", "e2e-pr-b"])
            try expectSameReading(["status", "e2e-pr-no-such-machine"], expecting: Exit.notFound)
            try expectSameReading(["config", "e2e-pr-b"])
            try expectSameReading(["config", "e2e-pr-no-such-machine"], expecting: Exit.notFound)
        }
    }

    @Test func apiParityForEvents() throws {
        let name = "e2e-pr-events"
        try Fixture.with([name]) {
            try stopped(name)
            let streams = ["direct-json": "events --json", "api-json": "events --api --json", "direct-text": "events", "api-text": "events --api"]
            defer {
                _ = try? Testbed.sh("for s in \(streams.keys.sorted().joined(separator: " ")); do systemctl stop e2e-pr-events-$s; systemctl reset-failed e2e-pr-events-$s; done 2>/dev/null; true")
            }
            try Testbed.mustSh("""
                for s in \(streams.keys.sorted().joined(separator: " ")); do
                    systemctl stop e2e-pr-events-$s 2>/dev/null; systemctl reset-failed e2e-pr-events-$s 2>/dev/null; rm -f /tmp/e2e-pr-events-$s
                done
                \(streams.map { "systemd-run --quiet --unit=e2e-pr-events-\($0.key) -p StandardOutput=file:/tmp/e2e-pr-events-\($0.key) timeout 60 nspawnctl \($0.value)" }.joined(separator: "\n"))
                for i in $(seq 1 150); do
                    n=0; for s in \(streams.keys.sorted().joined(separator: " ")); do grep -q subscribed /tmp/e2e-pr-events-$s 2>/dev/null && n=$((n + 1)); done
                    [ $n = \(streams.count) ] && exit 0
                    sleep 0.1
                done
                echo "not every stream is subscribed"; head /tmp/e2e-pr-events-*; exit 1
                """)
            try Testbed.mustSh("machinectl start \(name) && machinectl terminate \(name)")
            let outputs = try Testbed.sh("""
                for i in $(seq 1 150); do
                    n=0; for s in \(streams.keys.sorted().joined(separator: " ")); do grep -q 'machine_removed.*\(name)' /tmp/e2e-pr-events-$s 2>/dev/null && n=$((n + 1)); done
                    [ $n = \(streams.count) ] && break
                    sleep 0.1
                done
                for s in \(streams.keys.sorted().joined(separator: " ")); do echo "== $s"; cat /tmp/e2e-pr-events-$s; done
                """).stdout
            var byStream: [String: String] = [:]
            var current = ""
            for line in outputs.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("== ") { current = String(line.dropFirst(3)); byStream[current] = ""; continue }
                if !current.isEmpty && !line.isEmpty { byStream[current, default: ""] += String(line) + "\n" }
            }
            for mode in ["json", "text"] {
                let direct = Parity.normalize(byStream["direct-\(mode)"] ?? "", names: [:])
                let api = Parity.normalize(byStream["api-\(mode)"] ?? "", names: [:])
                #expect(direct.contains("machine_new") && direct.contains("machine_removed"), "\(mode): \(outputs)")
                #expect(api == direct, "events \(mode) through nspawnd differ:\n\(api)\n--- direct ---\n\(direct)")
            }
        }
    }

    @Test func apiParityForLifecycleVerbs() throws {
        try expectParity("start", setup: stopped, { ["start", $0] }, observe: Parity.state)
        try expectParity("start-again", setup: running, { ["start", $0] }, observe: Parity.state)
        try expectParity("stop", setup: running, { ["stop", "--timeout", "1", $0] }, observe: Parity.state)
        try expectParity("stop-stopped", expecting: Exit.conflict, setup: stopped, { ["stop", $0] }, observe: Parity.state)
        try expectParity("reboot", setup: running, { ["reboot", $0] }, observe: Parity.state)
        try expectParity("terminate", setup: running, { ["terminate", $0] }, observe: Parity.state)
        try expectParity("kill", setup: running, { ["kill", "--signal", "KILL", "--kill-whom", "leader", $0] }, observe: gone)
        try expectParity("kill-missing", expecting: Exit.notFound, setup: nothing, { ["kill", "--signal", "HUP", $0] })
        try expectParity("start-bad", expecting: Exit.invalidInput, setup: nothing, { _ in ["start", "../etc"] })
    }

    @Test(.testbedAccounts) func apiParityForImageVerbs() throws {
        try Parity.tarball()
        try expectParity("enable", setup: stopped, { ["enable", $0] }, observe: { try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@\($0).service"]).trimmed })
        try expectParity("disable", setup: enabled, { ["disable", $0] }, observe: { try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@\($0).service"]).trimmed })
        try expectParity("enable-missing", expecting: Exit.notFound, setup: nothing, { ["enable", $0] })
        try expectParity("remove", setup: stopped, { ["remove", $0] }, observe: images)
        try expectParity("remove-running", expecting: Exit.conflict, setup: running, { ["remove", $0] }, observe: images)
        try expectParity("remove-force", setup: running, { ["remove", "--force", "--timeout", "1", $0] }, observe: images)
        try expectParity("rename", setup: stopped, { ["rename", $0, $0 + "2"] }, observe: images)
        try expectParity("clone", setup: stopped, { ["clone", $0, $0 + "2"] }, observe: images)
        try expectParity("clone-ro", setup: stopped, { ["clone", "--read-only", $0, $0 + "2"] }, observe: images)
        try expectParity("read-only", setup: stopped, { ["read-only", $0] }, observe: images)
        try expectParity("read-only-no", setup: { try stopped($0); try Testbed.mustSh("machinectl read-only \($0) yes") },
                         { ["read-only", $0, "no"] }, observe: images)
        let contents: (String) throws -> String = {
            try images($0) + Testbed.sh("cat /var/lib/machines/\($0)/etc/os-release /var/lib/machines/\($0)/etc/hostname 2>&1").stdout
        }
        try expectParity("import", setup: nothing, { ["import", $0, RemoteFixtures.tarballURL] }, observe: contents)
        try expectParity("import-taken", expecting: Exit.conflict, setup: stopped, { ["import", $0, RemoteFixtures.tarballURL] }, observe: contents)
        try expectParity("import-404", expecting: 1, setup: nothing, { ["import", $0, "http://127.0.0.1:8089/e2e-no-such.tar.gz"] }, observe: contents)
        try Parity.installRecipe()
        defer { _ = try? Testbed.sh("rm -f /etc/nspawnctl/images/e2e-tiny.recipe") }
        try expectParity("bootstrap", setup: nothing, { ["bootstrap", "e2e-tiny", $0, "--no-verify"] }, observe: contents)
        try expectParity("bootstrap-unverified", expecting: Exit.invalidInput, setup: nothing, { ["bootstrap", "e2e-tiny", $0] }, observe: contents)

        // The daemon imports only from http(s) URLs; a file or stdin is refused, not read.
        try Fixture.with(["e2e-pa-file"]) {
            try Testbed.mustSh("busybox wget -q -O /var/tmp/e2e-pa.tar.gz \(RemoteFixtures.tarballURL)")
            for source in ["/var/tmp/e2e-pa.tar.gz", "-"] {
                let refused = try nspawnctlClient(["import", "--api", "e2e-pa-file", source])
                #expect(refused.status == Exit.invalidInput, "\(source): \(refused)")
                #expect(refused.stderr.contains("http"), "the message says the daemon imports only from http(s) URLs: \(refused)")
            }
            #expect(try !Fixture.imageNames().contains("e2e-pa-file"))
        }
    }

    @Test func apiParityForSettingsVerbs() throws {
        try expectParity("config-set", setup: stopped,
                         { ["config", $0, "--set", "Hostname=parity", "--bind", "/srv:/srv", "--bind-ro", "/etc/ssl", "--port", "tcp:18200:80",
                            "--env", "GREETING=hi", "--network", "veth"] }, observe: settingsFile)
        try expectParity("config-flavor", setup: stopped, { ["config", $0, "--flavor", "small"] }, observe: settingsFile)
        try expectParity("config-unset", setup: stopped, { ["config", $0, "--unset", "Parameters", "--boot"] }, observe: settingsFile)
        try expectParity("config-bad", expecting: Exit.invalidInput, setup: stopped, { ["config", $0, "--port", "99999"] }, observe: settingsFile)
        try expectParity("create", setup: stopped,
                         { ["create", $0 + "2", "--image", $0, "--flavor", "tiny", "--port", "tcp:18201:80", "--env", "A=b"] },
                         observe: { try images($0) + settingsFile($0 + "2") })
        try expectParity("create-start", setup: stopped, { ["create", $0 + "2", "--image", $0, "--start"] },
                         observe: { try images($0) + Parity.state($0 + "2") })
        try expectParity("create-missing", expecting: Exit.notFound, setup: nothing, { ["create", $0 + "2", "--image", $0] }, observe: images)
        try expectParity("resize", setup: stopped, { ["resize", $0, "--flavor", "tiny"] }, observe: settingsFile)
        try expectParity("resize-live", setup: running, { ["resize", $0, "--flavor", "tiny"] },
                         observe: { try Testbed.run(["systemctl", "show", "-p", "MemoryMax,TasksMax", "systemd-nspawn@\($0).service"]).stdout })
        // A busybox payload does not boot systemd: refused alike.
        try expectParity("expose-noboot", expecting: Exit.invalidInput, setup: stopped,
                         { ["expose", $0, "--listen", "127.0.0.1:18202", "--exec", "/bin/echo", "x"] }, observe: settingsFile)
        try expectParity("unexpose-not", expecting: Exit.conflict, setup: stopped, { ["unexpose", $0] })

        // expose and unexpose of a systemd guest, one machine, one way after the other.
        let name = "e2e-pr-expose"
        try Fixture.with([name]) {
            try Fixture.systemdRoot(name)
            let sockets = "systemd-nspawn@\(name).socket"
            func seen() throws -> String {
                try Testbed.run(["systemctl", "show", "-p", "LoadState,ActiveState,Listen", sockets]).stdout
                    + Testbed.sh("cat /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket 2>&1").stdout
            }
            for json in [false, true] {
                var runs: [[String]] = []
                for flags in [[String](), ["--api"]] {
                    let extra = flags + (json ? ["--json"] : [])
                    let expose = try nspawnctlClient(["expose"] + extra + [name, "--listen", "127.0.0.1:18203", "--exec", "/bin/echo", "hello"])
                    let exposed = try seen()
                    let unexpose = try nspawnctlClient(["unexpose"] + extra + [name])
                    let unexposed = try seen()
                    #expect(expose.status == Exit.ok && unexpose.status == Exit.ok, "\(extra): \(expose)\n\(unexpose)")
                    runs.append(["\(expose.status)", expose.stdout, exposed, "\(unexpose.status)", unexpose.stdout, unexposed])
                }
                #expect(runs[1] == runs[0], "expose/unexpose\(json ? " --json" : "") through nspawnd differ:\n\(runs[1])\n--- direct ---\n\(runs[0])")
            }
        }
    }

    @Test(.testbedAccounts) func anOperatorMayReadAndRunMachinesButNotChangeThem() throws {
        try Parity.operatorAccount()
        try RemoteFixtures.prepare()
        let name = "e2e-op"
        let deb = "e2e-op-deb"
        try Fixture.with([name, name + "2", deb]) {
            try stopped(name)
            try Fixture.systemdRoot(deb)
            try Testbed.mustSh("nspawnctl expose \(deb) --listen 127.0.0.1:18204 --exec /bin/echo hello >/dev/null")

            // Reading: the same as root sees directly.
            for arguments in [["ls"], ["ls", "--json"], ["status", name], ["status", name, "--json"], ["config", name], ["config", deb, "--json"]] {
                var mine = try Parity.direct(arguments)
                var theirs = try Parity.asOperator(arguments)
                for _ in 0..<3 where theirs.stdout != mine.stdout {
                    Thread.sleep(forTimeInterval: 1.1)
                    mine = try Parity.direct(arguments)
                    theirs = try Parity.asOperator(arguments)
                }
                #expect(theirs.status == Exit.ok && theirs.stdout == mine.stdout, "\(arguments): \(theirs)\n--- root ---\n\(mine)")
            }

            // The lifecycle.
            let start = try Parity.asOperator(["start", name])
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Parity.state(name) == "running")
            let leader = try Testbed.run(["machinectl", "show", name, "-p", "Leader", "--value"]).trimmed
            let reboot = try Parity.asOperator(["reboot", name])
            #expect(reboot.status == Exit.ok, "\(reboot)")
            #expect(try Testbed.run(["machinectl", "show", name, "-p", "Leader", "--value"]).trimmed != leader)
            let stop = try Parity.asOperator(["stop", "--timeout", "1", name])
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Parity.state(name) == "gone")
            try Testbed.mustSh("machinectl start \(name)")
            let terminate = try Parity.asOperator(["terminate", name])
            #expect(terminate.status == Exit.ok, "\(terminate)")
            #expect(try Parity.state(name) == "gone")
            try Testbed.mustSh("machinectl start \(name)")
            let kill = try Parity.asOperator(["kill", "--signal", "KILL", "--kill-whom", "leader", name])
            #expect(kill.status == Exit.ok, "\(kill)")
            #expect(try gone(name) == "gone")

            // Events.
            defer { _ = try? Testbed.sh("systemctl stop e2e-op-events; systemctl reset-failed e2e-op-events 2>/dev/null; true") }
            try Testbed.mustSh("""
                systemctl stop e2e-op-events 2>/dev/null; systemctl reset-failed e2e-op-events 2>/dev/null; rm -f /tmp/e2e-op-events
                systemd-run --quiet --unit=e2e-op-events --uid=nsop -p StandardOutput=file:/tmp/e2e-op-events timeout 60 /usr/local/bin/nspawnctl events --json
                for i in $(seq 1 150); do grep -q '"event":"subscribed"' /tmp/e2e-op-events 2>/dev/null && exit 0; sleep 0.1; done
                cat /tmp/e2e-op-events; exit 1
                """)
            try Testbed.mustSh("machinectl start \(name)")
            let events = try Testbed.sh("""
                for i in $(seq 1 100); do grep -q '"event":"machine_new","name":"\(name)"' /tmp/e2e-op-events && break; sleep 0.1; done
                cat /tmp/e2e-op-events
                """).stdout
            #expect(events.contains("\"event\":\"machine_new\",\"name\":\"\(name)\""), "\(events)")
            try Testbed.mustSh("machinectl terminate \(name); for i in $(seq 1 100); do machinectl show \(name) >/dev/null 2>&1 || exit 0; sleep 0.1; done; exit 1")

            // Everything else needs root, and says so; nothing changes.
            try Parity.tarball()
            try Parity.installRecipe()
            defer { _ = try? Testbed.sh("rm -f /etc/nspawnctl/images/e2e-tiny.recipe") }
            let before = try Parity.snapshot()
            let forbidden: [[String]] = [
                ["enable", name], ["disable", name], ["remove", name], ["rename", name, name + "2"], ["clone", name, name + "2"],
                ["read-only", name], ["config", name, "--set", "Hostname=x"], ["config", name, "--flavor", "small"],
                ["create", name + "2", "--image", name], ["expose", deb, "--listen", "127.0.0.1:18205", "--exec", "/bin/echo", "x"],
                ["unexpose", deb], ["resize", name, "--flavor", "tiny"], ["import", name + "2", RemoteFixtures.tarballURL],
                ["bootstrap", "e2e-tiny", name + "2", "--no-verify"],
            ]
            for arguments in forbidden {
                let run = try Parity.asOperator(arguments)
                #expect(run.status == Exit.permissionDenied, "\(arguments): \(run)")
                let message = run.stderr.lowercased()
                #expect(message.contains("permission denied"), "\(arguments): \(run)")
                #expect(message.contains("root") || message.contains("admin"), "\(arguments): the message says which role it needs: \(run)")
            }
            let after = try Parity.snapshot()
            #expect(after == before, "an operator changed something:\n\(after)\n--- before ---\n\(before)")
        }
    }

    @Test(.testbedAccounts) func apiWithoutADaemonFailsForEveryVerbAndDoesNothing() throws {
        try Parity.tarball()
        try Parity.installRecipe()
        defer { _ = try? Testbed.sh("rm -f /etc/nspawnctl/images/e2e-tiny.recipe") }
        let (a, r) = ("e2e-nod-a", "e2e-nod-r")
        try Fixture.with([a, a + "2", r]) {
            try stopped(a)
            try running(r)
            let unreachable: Int32 = 7
            let verbs: [[String]] = [
                ["ls"], ["ls", "--all"], ["status", a], ["start", a], ["stop", "--timeout", "1", r], ["reboot", r], ["terminate", r],
                ["kill", "--signal", "KILL", r], ["enable", a], ["disable", a], ["remove", a], ["rename", a, a + "2"],
                ["clone", a, a + "2"], ["read-only", a], ["config", a], ["config", a, "--set", "Hostname=x"],
                ["create", a + "2", "--image", a], ["expose", a, "--listen", "127.0.0.1:18206", "--exec", "/bin/echo", "x"],
                ["unexpose", a], ["resize", a, "--flavor", "tiny"], ["import", a + "2", RemoteFixtures.tarballURL],
                ["bootstrap", "e2e-tiny", a + "2", "--no-verify"], ["events"],
            ]
            let before = try Parity.snapshot()
            for words in verbs {
                for json in [false, true] {
                    let arguments = [words[0], "--api"] + (json ? ["--json"] : []) + words.dropFirst()
                    let run = try nspawnctlClient(arguments, environment: ["NSPAWND_SOCKET=/nonexistent.sock"], limit: 30)
                    #expect(run.status == unreachable, "\(arguments): \(run)")
                    #expect(run.stdout.isEmpty, "\(arguments): \(run)")
                }
            }
            let after = try Parity.snapshot()
            #expect(after == before, "a verb did something without the daemon:\n\(after)\n--- before ---\n\(before)")

            // A socket file nobody listens on any more (its daemon was killed) is the same.
            defer { _ = try? Testbed.sh("systemctl stop e2e-nod-stale 2>/dev/null; systemctl reset-failed e2e-nod-stale 2>/dev/null; rm -f /run/e2e-nod-stale.sock; true") }
            try Testbed.mustSh("""
                systemctl stop e2e-nod-stale 2>/dev/null; systemctl reset-failed e2e-nod-stale 2>/dev/null; rm -f /run/e2e-nod-stale.sock
                systemd-run --quiet --unit=e2e-nod-stale /usr/local/bin/nspawnd --socket /run/e2e-nod-stale.sock --idle-timeout 0
                for i in $(seq 1 50); do [ -S /run/e2e-nod-stale.sock ] && break; sleep 0.1; done
                systemctl kill --signal=KILL e2e-nod-stale
                for i in $(seq 1 50); do systemctl -q is-active e2e-nod-stale || break; sleep 0.1; done
                test -S /run/e2e-nod-stale.sock
                """)
            for words in [["ls"], ["start", a]] {
                let run = try nspawnctlClient([words[0], "--api"] + words.dropFirst(), environment: ["NSPAWND_SOCKET=/run/e2e-nod-stale.sock"], limit: 30)
                #expect(run.status == unreachable, "\(words): \(run)")
            }
            #expect(try Parity.state(a) == "gone")
        }
    }
}

extension Parity {
    /// `nspawnctl ARGUMENTS` as root on the direct path.
    static func direct(_ arguments: [String]) throws -> CommandResult {
        try nspawnctlClient(arguments).result
    }

    /// The busybox tarball on 127.0.0.1:8089 (RemoteFixtures serves it).
    static func tarball() throws {
        try RemoteFixtures.prepare()
    }
}
