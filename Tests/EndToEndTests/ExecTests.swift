import Foundation
import Testing

/// `nspawnctl exec` and `shell` against real machines: a Debian guest that boots systemd and a
/// busybox payload (Boot=no, no bus in the guest). Results are held against tools we did not
/// write: sha256sum, systemd-run in the guest, the kernel's own namespace links, script(1).
@Suite("Exec", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct ExecEndToEndTests {
    /// nspawnctl's own failures, as the README documents them for exec and shell.
    static let ownFailure: Int32 = 125
    static let cannotExecute: Int32 = 126
    static let notFound: Int32 = 127

    init() throws {
        try Testbed.mustSh("command -v nspawnctl && command -v script")
    }

    /// A guest user to switch to, with a supplementary group, in the guest's own files.
    static func addGuestUser(_ name: String) throws {
        try Testbed.mustSh("""
            set -e
            root=/var/lib/machines/\(name)
            grep -q '^root:' "$root"/etc/passwd 2>/dev/null || echo 'root:x:0:0:root:/root:/bin/sh' >> "$root"/etc/passwd
            grep -q '^root:' "$root"/etc/group 2>/dev/null || echo 'root:x:0:' >> "$root"/etc/group
            echo 'e2euser:x:1234:1234:E2E user:/home/e2euser:/bin/sh' >> "$root"/etc/passwd
            echo 'e2euser:x:1234:' >> "$root"/etc/group
            echo 'e2eextra:x:2345:someone,e2euser' >> "$root"/etc/group
            # PAM's account check (machined's shell is a login session) wants a shadow entry.
            if [ -e "$root"/etc/shadow ]; then echo 'e2euser:*:19000:0:99999:7:::' >> "$root"/etc/shadow; fi
            mkdir -p "$root"/home/e2euser
            """)
    }

    /// The busybox fixture with the applets these tests use, and a user.
    static func busyboxGuest(_ name: String) throws {
        try Fixture.busybox(name)
        try Testbed.mustSh("""
            set -e
            cd /var/lib/machines/\(name)/bin
            for tool in id env pwd sha256sum kill true false head tty stty test echo hostname; do ln -sf busybox $tool; done
            echo \(name) > ../etc/hostname
            """)
        try addGuestUser(name)
        try Testbed.mustSh("machinectl start \(name)")
    }

    static func systemdGuest(_ name: String) throws {
        try Fixture.systemdRoot(name)
        try addGuestUser(name)
        try Testbed.mustSh("machinectl start \(name)")
        // Running is enough for exec; the shell and systemd-run want the guest's bus, which
        // comes up during the boot (systemctl -M fails until it does).
        try Testbed.mustSh("""
            for i in $(seq 1 120); do
                case $(timeout 60 systemctl -M \(name) is-system-running --wait 2>/dev/null) in running|degraded) exit 0;; esac
                sleep 0.5
            done
            exit 1
            """)
    }

    /// A terminal's text without the control sequences shells add (bracketed paste, cursor queries).
    static func withoutEscapes(_ text: String) -> String {
        var out = ""
        var scalars = text.unicodeScalars[...]
        while let scalar = scalars.popFirst() {
            guard scalar == "\u{1B}" else { out.unicodeScalars.append(scalar); continue }
            if scalars.first == "[" {
                scalars = scalars.dropFirst()
                while let next = scalars.popFirst(), !(("@"..."~").contains(next)) {}
            }
        }
        return out
    }

    func exec(_ arguments: String...) throws -> CommandResult {
        try Testbed.run(["nspawnctl", "exec"] + arguments)
    }

    /// What both kinds of guest must do alike.
    func commonChecks(_ name: String) throws {
        let ok = try exec(name, "--", "true")
        #expect(ok.status == 0, "\(ok)")
        let three = try exec(name, "--", "sh", "-c", "exit 3")
        #expect(three.status == 3, "\(three)")

        let missing = try exec(name, "--", "no-such-command-e2e")
        #expect(missing.status == Self.notFound, "\(missing)")
        #expect(missing.stderr.contains("no-such-command-e2e") && missing.stderr.contains("command not found"), "\(missing)")
        let directory = try exec(name, "--", "/etc")
        #expect(directory.status == Self.cannotExecute, "\(directory)")

        let killed = try exec(name, "--", "sh", "-c", "kill -KILL $$")
        #expect(killed.status == 137, "\(killed)")

        // Separate streams, and the command's own options pass through untouched.
        let streams = try exec(name, "--", "sh", "-c", "echo out; echo err >&2; echo -n $#", "sh", "-la", "--user")
        #expect(streams.status == 0 && streams.stdout == "out\n2" && streams.stderr == "err\n", "\(streams)")

        // Inside the machine: the leader's namespaces (as the kernel names them) and hostname.
        let leader = try Testbed.run(["machinectl", "show", name, "-p", "Leader", "--value"]).trimmed
        for kind in ["pid", "mnt", "net", "uts", "ipc", "user", "cgroup"] {
            let theirs = try Testbed.run(["readlink", "/proc/\(leader)/ns/\(kind)"]).trimmed
            let ours = try exec(name, "--", "sh", "-c", "ls -l /proc/self/ns/\(kind)")
            #expect(ours.stdout.contains(theirs) && !theirs.isEmpty, "\(kind): leader \(theirs), command \(ours)")
        }
        let hostname = try Testbed.sh("cat /var/lib/machines/\(name)/etc/hostname").trimmed
        #expect(try exec(name, "--", "hostname").trimmed == hostname)

        // 10 MB through stdin: the guest's sha256sum and a round trip through cat agree with ours.
        let digests = try Testbed.mustSh("""
            set -e
            head -c 10485760 /dev/urandom > /tmp/e2e-exec-10m
            sha256sum < /tmp/e2e-exec-10m | cut -d' ' -f1
            nspawnctl exec \(name) -i -- sha256sum < /tmp/e2e-exec-10m | cut -d' ' -f1
            nspawnctl exec \(name) -i -- cat < /tmp/e2e-exec-10m | sha256sum | cut -d' ' -f1
            rm -f /tmp/e2e-exec-10m
            """).stdout.split(separator: "\n")
        #expect(digests.count == 3 && Set(digests).count == 1 && digests[0].count == 64, "\(digests)")
        // Without -i the command reads /dev/null, not our stdin.
        let noStdin = try Testbed.run(["nspawnctl", "exec", name, "--", "cat"], stdin: "secret\n")
        #expect(noStdin.status == 0 && noStdin.stdout.isEmpty, "\(noStdin)")

        // --user, by name and by uid, with the guest's groups and HOME.
        let user = try exec(name, "--user", "e2euser", "--", "sh", "-c", "id -u; id -g; id -G; echo $HOME $USER")
        #expect(user.status == 0, "\(user)")
        let lines = user.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 4 && lines[0] == "1234" && lines[1] == "1234", "\(user)")
        #expect(lines.count == 4 && Set(lines[2].split(separator: " ")) == ["1234", "2345"], "\(user)")
        #expect(lines.count == 4 && lines[3] == "/home/e2euser e2euser", "\(user)")
        #expect(try exec(name, "--user", "1234", "--", "id", "-un").trimmed == "e2euser")
        let unknown = try exec(name, "--user", "nobody-e2e", "--", "true")
        #expect(unknown.status == Self.ownFailure && unknown.stderr.contains("no user 'nobody-e2e'"), "\(unknown)")

        // --env on top of the guest's environment; --workdir.
        let env = try exec(name, "--env", "E2E_A=one two", "-e", "E2E_B=x=y", "--", "sh", "-c", "echo \"$E2E_A|$E2E_B|$PATH\"")
        #expect(env.status == 0 && env.stdout.hasPrefix("one two|x=y|/"), "\(env)")
        #expect(try exec(name, "--workdir", "/tmp", "--", "pwd").trimmed == "/tmp")
        #expect(try exec(name, "--user", "e2euser", "--", "pwd").trimmed == "/home/e2euser")
        let badDirectory = try exec(name, "--workdir", "/no/such/dir", "--", "pwd")
        #expect(badDirectory.status == Self.ownFailure && badDirectory.stderr.contains("/no/such/dir"), "\(badDirectory)")

        // A terminal with -t.
        let tty = try exec(name, "-t", "--", "sh", "-c", "test -t 0 && test -t 1 && tty")
        #expect(tty.status == 0 && tty.stdout.contains("/dev/pts/"), "\(tty)")

        // Signals we receive go to the command: its trap runs and its status is ours.
        let forwarded = try Testbed.sh("""
            nspawnctl exec \(name) -- sh -c 'sleep 30 </dev/null >/dev/null 2>&1 & trap "kill $!; echo got TERM; exit 7" TERM; wait' & pid=$!
            sleep 1.5; kill -TERM $pid; wait $pid
            """)
        #expect(forwarded.status == 7 && forwarded.stdout == "got TERM\n", "\(forwarded)")

        // The shell on a real terminal (script(1)): a computed answer, its exit status, and
        // the window size, first as given and then after the terminal is resized.
        let shell = try Testbed.sh("""
            { sleep 1; printf 'stty size\\n'; sleep 4; printf 'echo $((6*7)); stty size\\nexit 3\\n'; sleep 3; } |
            script -qec 'stty rows 33 cols 77; (sleep 3; stty rows 44 cols 88 </dev/tty) & nspawnctl shell \(name)' /dev/null
            """)
        let shown = Self.withoutEscapes(shell.stdout).replacingOccurrences(of: "\r", with: "").split(separator: "\n").map(String.init)
        #expect(shell.status == 3, "\(shell)")
        #expect(shown.contains("42"), "\(shell)")
        #expect(shown.contains("33 77") && shown.contains("44 88"), "\(shell)")
        let clean = try Testbed.sh("""
            { sleep 1; printf 'exit\\n'; sleep 3; } | script -qec 'nspawnctl shell \(name) --user e2euser' /dev/null
            """)
        #expect(clean.status == 0, "\(clean)")
    }

    @Test func aGuestThatBootsSystemd() throws {
        let name = "e2e-exec-deb"
        try Fixture.with([name]) {
            try Self.systemdGuest(name)
            try commonChecks(name)

            // The same user as the guest's systemd makes it.
            let ours = try exec(name, "--user", "e2euser", "--", "id")
            let systemds = try Testbed.run(["systemd-run", "-M", name, "--pipe", "--wait", "-q", "-p", "User=e2euser", "id"])
            #expect(ours.status == 0 && systemds.status == 0 && ours.stdout == systemds.stdout, "\(ours)\n--- systemd-run ---\n\(systemds)")

            // The shell is machined's login session: a container-shell@ unit of the guest's systemd.
            let session = try Testbed.sh("""
                { sleep 1; printf 'cat /proc/self/cgroup; exit 4\\n'; sleep 3; } | script -qec 'nspawnctl shell \(name)' /dev/null
                """)
            #expect(session.status == 4 && session.stdout.contains("/system.slice/system-container\\x2dshell.slice/container-shell@"), "\(session)")
        }
    }

    @Test func aBusyboxPayloadWithoutBus() throws {
        let name = "e2e-exec-bb"
        try Fixture.with([name]) {
            try Self.busyboxGuest(name)
            #expect(try Testbed.run(["systemctl", "-M", name, "is-system-running"]).status != 0, "the payload has no bus")
            try commonChecks(name)
        }
    }

    @Test func aStoppedMachineIsNotRunningAndAnUnknownOneIsOurFailure() throws {
        let name = "e2e-exec-stopped"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            let stopped = try exec(name, "--", "true")
            #expect(stopped.status == 5 && stopped.stderr.contains("is not running"), "\(stopped)")
            let shell = try Testbed.run(["nspawnctl", "shell", name])
            #expect(shell.status == 5, "\(shell)")
            let unknown = try exec("e2e-exec-nothing", "--", "true")
            #expect(unknown.status == Self.ownFailure, "\(unknown)")
            let usage = try Testbed.run(["nspawnctl", "exec", name])
            #expect(usage.status == Self.ownFailure, "\(usage)")
            // Through nspawnd the same: its 409 is the same "not running" and the same code.
            let through = try Testbed.run(["nspawnctl", "exec", "--api", name, "--", "true"])
            #expect(through.status == 5 && through.stderr.contains("is not running"), "\(through)")
        }
    }
}
