import Foundation
import Testing

/// `exec` and `shell` through nspawnd's exec stream: over its socket (`--api`) and over ssh
/// (`--host`), against a real machine, held against the direct path, sha256sum and a client of
/// the stream we did not build on our Swift code (Tests/Fixtures/exec-stream-client).
extension ExecEndToEndTests {
    static let routes: [(String, [String])] = [("--api", ["--api"]), ("--host", ["--host", RemoteFixtures.host("root")])]

    @Test(.testbedAccounts) func throughNspawndAndOverSSH() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-exec-stream"
        try Fixture.with([name]) {
            try Self.busyboxGuest(name)
            for (label, route) in Self.routes {
                func exec(_ arguments: String..., stdin: String? = nil) throws -> CommandResult {
                    try Testbed.run(["timeout", "120", "nspawnctl", "exec"] + route + [name] + arguments, stdin: stdin)
                }
                let ok = try exec("--", "true")
                #expect(ok.status == 0 && ok.stdout.isEmpty && ok.stderr.isEmpty, "\(label): \(ok)")
                let three = try exec("--", "sh", "-c", "exit 3")
                #expect(three.status == 3, "\(label): \(three)")
                let killed = try exec("--", "sh", "-c", "kill -KILL $$")
                #expect(killed.status == 137, "\(label): \(killed)")
                let missing = try exec("--", "no-such-command-e2e")
                #expect(missing.status == Self.notFound && missing.stderr.contains("no-such-command-e2e"), "\(label): \(missing)")

                // The streams stay apart, as on the direct path, byte for byte.
                let script = "echo out; echo err >&2; echo -n $#"
                let streams = try exec("--", "sh", "-c", script, "sh", "-la", "--user")
                let direct = try Testbed.run(["nspawnctl", "exec", name, "--", "sh", "-c", script, "sh", "-la", "--user"])
                #expect(streams.status == 0 && streams.stdout == "out\n2" && streams.stderr == "err\n", "\(label): \(streams)")
                #expect(streams.stdout == direct.stdout && streams.stderr == direct.stderr, "\(label): \(streams)\n--- direct ---\n\(direct)")

                // 10 MB of stdin: the guest's sha256sum, and a round trip through cat, agree with ours.
                let routeWords = route.joined(separator: " ")
                let digests = try Testbed.mustSh("""
                    set -e
                    head -c 10485760 /dev/urandom > /tmp/e2e-stream-10m
                    sha256sum < /tmp/e2e-stream-10m | cut -d' ' -f1
                    timeout 120 nspawnctl exec \(routeWords) \(name) -i -- sha256sum < /tmp/e2e-stream-10m | cut -d' ' -f1
                    timeout 120 nspawnctl exec \(routeWords) \(name) -i -- cat < /tmp/e2e-stream-10m | sha256sum | cut -d' ' -f1
                    rm -f /tmp/e2e-stream-10m
                    """).stdout.split(separator: "\n")
                #expect(digests.count == 3 && Set(digests).count == 1 && digests[0].count == 64, "\(label): \(digests)")
                // Without -i the command reads /dev/null.
                let noStdin = try exec("--", "cat", stdin: "secret\n")
                #expect(noStdin.status == 0 && noStdin.stdout.isEmpty, "\(label): \(noStdin)")

                // A terminal, and a signal the client receives reaching the command's trap.
                let tty = try exec("-t", "--", "sh", "-c", "test -t 0 && test -t 1 && tty")
                #expect(tty.status == 0 && tty.stdout.contains("/dev/pts/"), "\(label): \(tty)")
                let forwarded = try Testbed.sh("""
                    nspawnctl exec \(routeWords) \(name) -- sh -c 'sleep 30 </dev/null >/dev/null 2>&1 & trap "kill $!; echo got TERM; exit 7" TERM; wait' & pid=$!
                    sleep 2; kill -TERM $pid; wait $pid
                    """)
                #expect(forwarded.status == 7 && forwarded.stdout == "got TERM\n", "\(label): \(forwarded)")

                // The shell on a real terminal: an answer computed in the guest, its status, its size.
                let shell = try Testbed.sh("""
                    { sleep 2; printf 'echo $((6*7)); stty size; exit 3\\n'; sleep 3; } |
                    script -qec 'stty rows 33 cols 77; nspawnctl shell \(routeWords) \(name)' /dev/null
                    """)
                let shown = Self.withoutEscapes(shell.stdout).replacingOccurrences(of: "\r", with: "").split(separator: "\n").map(String.init)
                #expect(shell.status == 3 && shown.contains("42") && shown.contains("33 77"), "\(label): \(shell)")
            }

            // Root only: an operator is refused before anything runs, locally and over ssh.
            let local = try Testbed.run(["su", "nsop", "-s", "/bin/sh", "-c", "nspawnctl exec \(name) -- true"])
            #expect(local.status == Self.ownFailure && local.stderr.contains("running commands in machines needs root"), "\(local)")
            let remote = try Testbed.run(["timeout", "60", "nspawnctl", "exec", "--host", RemoteFixtures.host("nsop"), name, "--", "true"])
            #expect(remote.status == Self.ownFailure && remote.stderr.contains("running commands in machines needs root"), "\(remote)")
            // A stopped machine says so whichever way, with the same code.
            try Testbed.mustSh("machinectl terminate \(name); for i in $(seq 1 50); do machinectl show \(name) >/dev/null 2>&1 || exit 0; sleep 0.1; done")
            for (label, route) in Self.routes {
                let stopped = try Testbed.run(["timeout", "60", "nspawnctl", "exec"] + route + [name, "--", "true"])
                #expect(stopped.status == 5 && stopped.stderr.contains("is not running"), "\(label): \(stopped)")
            }
        }
    }

    /// The documented frames, spoken by a Python client that uses only the socket module.
    @Test func anIndependentClientSpeaksTheDocumentedStream() throws {
        let name = "e2e-exec-py"
        try Fixture.with([name]) {
            try Self.busyboxGuest(name)
            // The testbed has no Python: the client runs here, on the testbed's socket through
            // its systemd's root (as scripts/api-fuzz reaches it), as root.
            let status = try Testbed.runLocal([Testbed.repositoryRoot.appendingPathComponent("scripts/testbed").path, "status", Testbed.name ?? ""])
            let pid = try #require(status.stdout.firstMatch(of: /systemd PID ([0-9]+)/)?.1, "\(status)")
            let python = try Testbed.runLocal(["/usr/bin/timeout", "60", "/usr/bin/python3",
                                               Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/exec-stream-client").path,
                                               "/proc/\(pid)/root/run/nspawnd/nspawnd.sock", name])
            #expect(python.status == 0 && python.stdout == "ok\n", "\(python)")
        }
    }

    /// Figures, reported and not asserted: a round trip of `true`, and 10 MiB through `cat`,
    /// directly, through nspawnd's socket and over ssh.
    @Test(.testbedAccounts) func streamFigures() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-exec-bench"
        try Fixture.with([name]) {
            try Self.busyboxGuest(name)
            let figures = try Testbed.mustSh("""
                set -e
                head -c 10485760 /dev/urandom > /tmp/e2e-stream-bench
                ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
                for route in direct --api '--host ssh://root@127.0.0.1'; do
                    words=$route; [ "$route" = direct ] && words=
                    times=
                    for i in 1 2 3 4 5 6 7 8 9; do
                        t=$(date +%s%N); nspawnctl exec $words \(name) -- true; times="$times $(ms $t)"
                    done
                    median=$(printf '%s\\n' $times | sort -n | sed -n 5p)
                    t=$(date +%s%N); nspawnctl exec $words \(name) -i -- cat < /tmp/e2e-stream-bench > /dev/null; copy=$(ms $t)
                    echo "$route: exec true median ${median} ms (of$times); 10 MiB through cat ${copy} ms"
                done
                rm -f /tmp/e2e-stream-bench
                """)
            print("exec stream figures:\n\(figures.stdout)")
            #expect(figures.stdout.split(separator: "\n").count == 3, "\(figures)")
        }
    }
}
