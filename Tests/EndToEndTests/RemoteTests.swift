import Foundation
import Testing

/// The far side of `nspawnctl --host ssh://…`: the testbed's own OpenSSH server (scripts/testbed
/// runs one on 127.0.0.1:22 of the testbed's network namespace), reached from inside the testbed.
/// Client and remote are the same host, so what nspawnctl shows remotely can be compared with
/// what it shows locally and with machinectl.
///
/// Set up once per run, by shell, under /var/lib/nspawnctl-e2e-remote:
/// - root's client key `/root/.ssh/id_ed25519` (throw-away, made here) and `known_hosts` holding
///   the server's real host key, taken from its key file: host key checking stays on;
/// - `nsop` (group `nspawn`: operator), `nsout` (no group) and root accept that key;
/// - `nsnokey` accepts only a key the client does not have;
/// - `nsnobin` runs the client's command with a PATH without nspawnctl (a host without it),
///   `nsnod` with `NSPAWND_SOCKET` at a path where nothing listens (a host without nspawnd);
/// - `nsh-BEHAVIOUR`: forced commands (authorized_keys `command=`) that answer like a broken or
///   hostile nspawnd (see `hostileScript`);
/// - a busybox root as a gzip tarball, served by busybox httpd on 127.0.0.1:8089.
enum RemoteFixtures {
    /// Guarded by AccountsLock.
    nonisolated(unsafe) static var ready = false

    static let directory = "/var/lib/nspawnctl-e2e-remote"
    static let hostileScript = "/usr/local/lib/nspawnctl-e2e-remote"
    static let tarballURL = "http://127.0.0.1:8089/busybox-root.tar.gz"
    static let hostileBehaviours = ["garbage", "truncated", "endless", "huge", "long-header", "endless-headers", "silent", "mute", "v9", "no-api"]

    /// `ssh://USER@127.0.0.1[:PORT]`
    static func host(_ user: String, port: Int? = nil) -> String {
        "ssh://\(user)@127.0.0.1" + (port.map { ":\($0)" } ?? "")
    }

    static func prepare() throws {
        guard AccountsLock.isHeld else {
            Issue.record("RemoteFixtures.prepare() outside a test marked .testbedAccounts: another suite may be changing the same accounts")
            throw TestbedError.setupFailed("ssh fixtures without their lock")
        }
        if ready, try Testbed.sh("test -s /root/.ssh/id_ed25519 && id nsop >/dev/null && id nsh-v9 >/dev/null && systemctl -q is-active nspawnctl-e2e-remote-httpd").status == 0 {
            try useKnownHosts("right")
            return
        }
        try Testbed.mustSh(#"""
            set -e
            systemctl -q is-active ssh.service || { echo "sshd does not run in the testbed (scripts/testbed starts one)" >&2; exit 1; }
            getent group nspawn >/dev/null || groupadd -f --system nspawn
            fx=/var/lib/nspawnctl-e2e-remote
            install -d -m 700 /root/.ssh "$fx"
            # The client: root's own throw-away key; "stranger" is a key nobody trusts, "impostor" not the server's host key.
            [ -s /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C nspawnctl-e2e -f /root/.ssh/id_ed25519
            [ -s "$fx/stranger" ] || ssh-keygen -q -t ed25519 -N '' -C nspawnctl-e2e-stranger -f "$fx/stranger"
            [ -s "$fx/impostor" ] || ssh-keygen -q -t ed25519 -N '' -C '' -f "$fx/impostor"
            # Host key checking stays on: known_hosts holds the server's real key (from its key file, not trusted on first use).
            printf '127.0.0.1 %s\n' "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > "$fx/known_hosts.right"
            printf '127.0.0.1 %s\n' "$(cut -d' ' -f1,2 "$fx/impostor.pub")" > "$fx/known_hosts.wrong"
            : > "$fx/known_hosts.empty"
            cp "$fx/known_hosts.right" /root/.ssh/known_hosts
            rm -f /root/.ssh/config
            key=$(cat /root/.ssh/id_ed25519.pub)

            # A broken or hostile far end, run by sshd as a forced command in place of `nspawnctl dial-stdio`.
            # It reads the request's head first, as a server would.
            cat > /usr/local/lib/nspawnctl-e2e-remote <<'EOF'
            #!/bin/sh
            cr=$(printf '\r')
            head() { while IFS= read -r line; do if [ -z "$line" ] || [ "$line" = "$cr" ]; then return; fi; done; }
            ok='HTTP/1.1 200 OK\r\nNspawnd-Api: v1\r\nContent-Type: application/json\r\n'
            case $1 in
                garbage) head; printf 'garbage\r\n\r\n' ;;
                truncated) head; printf "${ok}Content-Length: 1000\r\n\r\n"; printf '[{"name": ' ;;
                endless) head; printf "$ok\r\n"; exec cat /dev/zero ;;
                huge) head; printf "${ok}Content-Length: 1099511627776\r\n\r\n"; exec cat /dev/zero ;;
                long-header) head; printf "${ok}X-Padding: "; exec tr '\000' a < /dev/zero ;;
                endless-headers) head; printf "$ok"; exec yes "X-Padding: a$cr" ;;
                silent) head; printf "${ok}Content-Length: 100\r\n\r\n"; exec sleep 600 ;;
                mute) exec sleep 600 ;;
                v9) head; printf 'HTTP/1.1 200 OK\r\nNspawnd-Api: v9\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]' ;;
                no-api) head; printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]' ;;
                *) echo "nspawnctl-e2e-remote: unknown behaviour '$1'" >&2; exit 2 ;;
            esac
            EOF
            chmod 755 /usr/local/lib/nspawnctl-e2e-remote

            account() {  # NAME GROUPS AUTHORIZED_KEYS_LINE
                id -u "$1" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh --password '*' "$1"
                usermod --groups "$2" "$1"
                home=$(getent passwd "$1" | cut -d: -f6)
                install -d -m 700 -o "$1" -g "$1" "$home/.ssh"
                printf '%s\n' "$3" > "$home/.ssh/authorized_keys"
                chown "$1:" "$home/.ssh/authorized_keys"
                chmod 600 "$home/.ssh/authorized_keys"
            }
            install -m 600 /dev/null /root/.ssh/authorized_keys
            printf '%s\n' "$key" > /root/.ssh/authorized_keys
            account nsop nspawn "$key"
            account nsout '' "$key"
            account nsnokey nspawn "$(cat "$fx/stranger.pub")"
            # A host without nspawnctl: the client's command runs, with a PATH that lacks it (sh exits 127).
            account nsnobin nspawn "command=\"PATH=/usr/bin:/bin; eval \\\"\$SSH_ORIGINAL_COMMAND\\\"\" $key"
            # A host with nspawnctl but without nspawnd.
            account nsnod nspawn "command=\"NSPAWND_SOCKET=/run/nspawnd-e2e-absent/nspawnd.sock; export NSPAWND_SOCKET; eval \\\"\$SSH_ORIGINAL_COMMAND\\\"\" $key"
            for behaviour in garbage truncated endless huge long-header endless-headers silent mute v9 no-api; do
                account "nsh-$behaviour" nspawn "command=\"/usr/local/lib/nspawnctl-e2e-remote $behaviour\",restrict $key"
            done

            # A busybox root as a tarball, served over http on the testbed's loopback.
            www=/var/tmp/e2e-remote-www
            rm -rf "$fx/root" && mkdir -p "$fx/root/bin" "$fx/root/etc" "$www"
            cp /bin/busybox "$fx/root/bin/busybox"
            for tool in sh sleep cat ls; do ln -sf busybox "$fx/root/bin/$tool"; done
            printf 'ID=busybox\nNAME=BusyBox\nPRETTY_NAME="BusyBox remote"\n' > "$fx/root/etc/os-release"
            tar --numeric-owner -C "$fx/root" -czf "$www/busybox-root.tar.gz.new" .
            mv -f "$www/busybox-root.tar.gz.new" "$www/busybox-root.tar.gz"
            if ! systemctl -q is-active nspawnctl-e2e-remote-httpd; then
                # As a service: a child of this script would hold the descriptor the harness waits on.
                systemctl reset-failed nspawnctl-e2e-remote-httpd 2>/dev/null || true
                systemd-run --quiet --collect --unit=nspawnctl-e2e-remote-httpd busybox httpd -f -p 127.0.0.1:8089 -h "$www"
            fi
            for i in $(seq 1 50); do busybox wget -q -O /dev/null http://127.0.0.1:8089/busybox-root.tar.gz && exit 0; sleep 0.1; done
            echo "the tarball is not served on 127.0.0.1:8089" >&2
            exit 1
            """#)
        ready = true
    }

    /// Puts `known_hosts.VARIANT` (right, wrong, empty) in place as root's known_hosts.
    static func useKnownHosts(_ variant: String) throws {
        try Testbed.mustSh("cp \(directory)/known_hosts.\(variant) /root/.ssh/known_hosts")
    }

    /// Ends what hostile remotes and their ssh clients may have left running.
    static func killLeftovers() {
        _ = try? Testbed.sh("""
            for behaviour in \(hostileBehaviours.joined(separator: " ")); do pkill -KILL -u nsh-$behaviour 2>/dev/null; done
            pkill -KILL -x ssh 2>/dev/null
            true
            """)
    }
}

/// A client command's result and how long it took.
struct TimedResult: CustomStringConvertible {
    var result: CommandResult
    var seconds: Double

    var status: Int32 { result.status }
    var stdout: String { result.stdout }
    var stderr: String { result.stderr }
    var description: String { "after \(String(format: "%.1f", seconds)) s: \(result)" }
}

/// Runs `nspawnctl ARGUMENTS` as root in the testbed under `timeout LIMIT` (a hang becomes exit
/// 124 and a failed test, never a stuck suite), with `environment` (VAR=VALUE words) added.
func nspawnctlClient(_ arguments: [String], environment: [String] = [], limit: Int = 60) throws -> TimedResult {
    let started = Date()
    let result = try Testbed.run(["env"] + environment + ["timeout", String(limit), "nspawnctl"] + arguments)
    return TimedResult(result: result, seconds: Date().timeIntervalSince(started))
}

extension EndToEndTests {
    @Test(.testbedAccounts) func anOperatorOverSSHSeesAndRunsTheSameMachinesAsTheHostItself() throws {
        try RemoteFixtures.prepare()
        let names = ["e2e-rem-a", "e2e-rem-b"]
        try Fixture.with(names) {
            for name in names { try Fixture.busybox(name) }
            try Testbed.mustSh("machinectl start e2e-rem-a")
            let nsop = RemoteFixtures.host("nsop")

            // The daemon may answer from a listing up to 1 s old, and the images above appeared
            // behind its back (no machined signal for a new directory); give it that second.
            func sameAsLocal(_ arguments: [String]) throws {
                var local = try nspawnctlClient(arguments)
                var remote = try nspawnctlClient(["--host", nsop] + arguments)
                for _ in 0..<3 where remote.stdout != local.stdout {
                    Thread.sleep(forTimeInterval: 1.1)
                    local = try nspawnctlClient(arguments)
                    remote = try nspawnctlClient(["--host", nsop] + arguments)
                }
                #expect(local.status == Exit.ok && remote.status == Exit.ok, "\(arguments): local \(local)\nremote \(remote)")
                #expect(remote.stdout == local.stdout, "\(arguments) over ssh differs from local:\n\(remote.stdout)\n--- local ---\n\(local.stdout)\n\(remote.stderr)")
            }
            try sameAsLocal(["ls"])
            try sameAsLocal(["ls", "--json"])
            try sameAsLocal(["status", "e2e-rem-a"])
            try sameAsLocal(["status", "e2e-rem-b", "--json"])
            let listed = try decodeJSON([ListedMachine].self, from: try nspawnctlClient(["--host", nsop, "ls", "--json"]).stdout)
            #expect(listed.first { $0.name == "e2e-rem-a" }?.state == "running")
            #expect(listed.first { $0.name == "e2e-rem-b" }?.state == "stopped")

            // The option may come after the verb, and an explicit port or --api change nothing.
            let local = try nspawnctlClient(["status", "e2e-rem-a"])
            let after = try nspawnctlClient(["status", "e2e-rem-a", "--host", nsop])
            #expect(after.status == Exit.ok && after.stdout == local.stdout, "\(after)")
            let withPort = try nspawnctlClient(["--host", RemoteFixtures.host("nsop", port: 22), "status", "e2e-rem-a"])
            #expect(withPort.status == Exit.ok && withPort.stdout == local.stdout, "\(withPort)")
            let withAPI = try nspawnctlClient(["--host", nsop, "status", "--api", "e2e-rem-a"])
            #expect(withAPI.status == Exit.ok && withAPI.stdout == local.stdout, "\(withAPI)")
            // Without a user, ssh logs in as the local user (root here).
            let noUser = try nspawnctlClient(["--host", "ssh://127.0.0.1", "status", "e2e-rem-a"])
            #expect(noUser.status == Exit.ok && noUser.stdout == local.stdout, "\(noUser)")

            // Lifecycle over ssh, cross-checked with machined on the same host.
            let start = try nspawnctlClient(["--host", nsop, "start", "e2e-rem-b"])
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Fixture.machinedState("e2e-rem-b") == "running")
            let stop = try nspawnctlClient(["--host", nsop, "stop", "--timeout", "1", "e2e-rem-b"])
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Fixture.machinedState("e2e-rem-b") == nil, "stop returns once the machine is gone")
            let terminate = try nspawnctlClient(["--host", nsop, "terminate", "e2e-rem-a", "--json"])
            #expect(terminate.status == Exit.ok, "\(terminate)")
            #expect(try Fixture.machinedState("e2e-rem-a") == nil)

            // The remote's exit codes come through as they are.
            let missing = try nspawnctlClient(["--host", nsop, "status", "e2e-rem-no-such-machine"])
            #expect(missing.status == Exit.notFound, "\(missing)")
            let notRunning = try nspawnctlClient(["--host", nsop, "stop", "e2e-rem-b"])
            #expect(notRunning.status == Exit.conflict, "\(notRunning)")
            let badName = try nspawnctlClient(["--host", nsop, "start", "../etc"])
            #expect(badName.status == Exit.invalidInput, "\(badName)")
            // An operator may not change images.
            let remove = try nspawnctlClient(["--host", nsop, "remove", "e2e-rem-b"])
            #expect(remove.status == Exit.permissionDenied && remove.stderr.lowercased().contains("permission denied"), "\(remove)")
            #expect(try Fixture.imageNames().contains("e2e-rem-b"))
        }
    }

    @Test(.testbedAccounts) func rootOverSSHIsAnAdministrator() throws {
        try RemoteFixtures.prepare()
        try Fixture.with(["e2e-rem-admin", "e2e-rem-admin2"]) {
            try Fixture.busybox("e2e-rem-admin")
            let root = RemoteFixtures.host("root")
            let enable = try nspawnctlClient(["--host", root, "enable", "e2e-rem-admin"])
            #expect(enable.status == Exit.ok, "\(enable)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-rem-admin.service"]).trimmed == "enabled")
            let disable = try nspawnctlClient(["--host", root, "disable", "e2e-rem-admin"])
            #expect(disable.status == Exit.ok, "\(disable)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@e2e-rem-admin.service"]).trimmed != "enabled")
            let rename = try nspawnctlClient(["--host", root, "rename", "e2e-rem-admin", "e2e-rem-admin2"])
            #expect(rename.status == Exit.ok, "\(rename)")
            let images = try Fixture.imageNames()
            #expect(images.contains("e2e-rem-admin2") && !images.contains("e2e-rem-admin"), "\(images)")
        }
    }

    @Test(.testbedAccounts) func eventsStreamOverSSH() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-rem-events"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            // Each stream follows as a unit of its own, so nothing here waits on its output.
            defer {
                _ = try? Testbed.sh("systemctl stop e2e-rem-events-json e2e-rem-events-text 2>/dev/null; systemctl reset-failed e2e-rem-events-json e2e-rem-events-text 2>/dev/null; true")
            }
            try Testbed.mustSh("""
                rm -f /tmp/e2e-rem-events.json /tmp/e2e-rem-events.txt /tmp/e2e-rem-events.err
                systemctl stop e2e-rem-events-json e2e-rem-events-text 2>/dev/null
                systemctl reset-failed e2e-rem-events-json e2e-rem-events-text 2>/dev/null || true
                systemd-run --quiet --unit=e2e-rem-events-json -p StandardOutput=file:/tmp/e2e-rem-events.json -p StandardError=file:/tmp/e2e-rem-events.err \
                    timeout 60 nspawnctl --host \(RemoteFixtures.host("nsop")) events --json
                systemd-run --quiet --unit=e2e-rem-events-text -p StandardOutput=file:/tmp/e2e-rem-events.txt \
                    timeout 60 nspawnctl events --host \(RemoteFixtures.host("nsop"))
                for i in $(seq 1 150); do
                    grep -q '"event":"subscribed"' /tmp/e2e-rem-events.json 2>/dev/null && grep -q subscribed /tmp/e2e-rem-events.txt 2>/dev/null && exit 0
                    sleep 0.1
                done
                echo "the streams did not say they are subscribed:"; cat /tmp/e2e-rem-events.json /tmp/e2e-rem-events.txt /tmp/e2e-rem-events.err
                exit 1
                """)
            try Testbed.mustSh("machinectl start \(name)")
            let stream = try Testbed.sh("""
                for i in $(seq 1 150); do grep -q '"name":"\(name)"' /tmp/e2e-rem-events.json && grep -q '\(name)' /tmp/e2e-rem-events.txt && break; sleep 0.1; done
                cat /tmp/e2e-rem-events.json
                """).stdout
            let objects = stream.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            #expect(objects.count == stream.split(separator: "\n").count, "one JSON object per line: \(stream)")
            let new = objects.first { $0["event"] as? String == "machine_new" && $0["name"] as? String == name }
            #expect(new?["state"] as? String == "running", "\(stream)")
            #expect(new?["time"] is String, "\(stream)")
            let text = try Testbed.sh("cat /tmp/e2e-rem-events.txt").stdout
            let line = text.split(separator: "\n").first { $0.contains("machine_new") && $0.contains(name) }
            #expect(line?.contains("running") == true, "one line per event: \(text)")
            #expect(try Testbed.run(["systemctl", "is-active", "e2e-rem-events-json"]).trimmed == "active",
                    "the stream keeps following")
        }
    }

    @Test(.testbedAccounts) func importOverSSHFetchesAURLAndRefusesLocalFiles() throws {
        try RemoteFixtures.prepare()
        try Fixture.with(["e2e-rem-imp", "e2e-rem-imp-local", "e2e-rem-imp-file"]) {
            let root = RemoteFixtures.host("root")
            let remote = try nspawnctlClient(["--host", root, "import", "--json", "e2e-rem-imp", RemoteFixtures.tarballURL])
            #expect(remote.status == Exit.ok, "\(remote)")
            #expect(try Fixture.imageNames().contains("e2e-rem-imp"))
            let listed = try Testbed.run(["machinectl", "list-images", "--no-legend", "--no-pager"]).stdout
            #expect(listed.contains("e2e-rem-imp "), "\(listed)")
            #expect(try Testbed.sh("cat /var/lib/machines/e2e-rem-imp/etc/os-release").stdout.contains("BusyBox remote"))
            // The same result as a local import of the same URL.
            let local = try nspawnctlClient(["import", "--json", "e2e-rem-imp-local", RemoteFixtures.tarballURL])
            #expect(local.status == Exit.ok, "\(local)")
            #expect(Parity.normalize(remote.stdout, names: ["e2e-rem-imp": "NAME"])
                    == Parity.normalize(local.stdout, names: ["e2e-rem-imp-local": "NAME"]),
                    "\(remote.stdout)\n--- local ---\n\(local.stdout)")

            // The daemon imports only from http(s) URLs: a file or stdin is refused up front.
            try Testbed.mustSh("busybox wget -q -O /var/tmp/e2e-rem.tar.gz \(RemoteFixtures.tarballURL)")
            for source in ["/var/tmp/e2e-rem.tar.gz", "-"] {
                let refused = try nspawnctlClient(["--host", root, "import", "e2e-rem-imp-file", source])
                #expect(refused.status == Exit.invalidInput, "\(source): \(refused)")
                #expect(refused.stderr.contains("http"), "the message says the daemon imports only from http(s) URLs: \(refused)")
            }
            #expect(try !Fixture.imageNames().contains("e2e-rem-imp-file"))
        }
    }

    @Test(.testbedAccounts) func ctrlCCancelsAnImportOverSSH() throws {
        try RemoteFixtures.prepare()
        let name = "e2e-rem-cancel"
        try Fixture.with([name]) {
            // A source that sends a little and then stalls, so the import is still running when cancelled.
            defer { _ = try? Testbed.sh("systemctl stop e2e-rem-stalled; systemctl reset-failed e2e-rem-stalled 2>/dev/null; true") }
            try Testbed.mustSh("""
                systemctl stop e2e-rem-stalled 2>/dev/null; systemctl reset-failed e2e-rem-stalled 2>/dev/null
                head -c 2000 /var/tmp/e2e-remote-www/busybox-root.tar.gz > /tmp/e2e-rem-head
                systemd-run --quiet --unit=e2e-rem-stalled /bin/sh -c \
                    '(printf "HTTP/1.0 200 OK\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n"; cat /tmp/e2e-rem-head; sleep 120) | busybox nc -l -p 8098'
                sleep 0.3
                """)
            // Ctrl-C signals the terminal's foreground process group: nspawnctl and its ssh alike.
            // Job control gives the background client a group of its own (and SIGINT not ignored).
            let run = try Testbed.run(["/bin/bash", "-c", """
                set -m
                nspawnctl --host \(RemoteFixtures.host("root")) import \(name) http://127.0.0.1:8098/stalled.tar.gz >/tmp/e2e-rem-cancel.out 2>/tmp/e2e-rem-cancel.err &
                client=$!
                child=
                for i in $(seq 1 200); do
                    daemon=$(systemctl show -p MainPID --value nspawnd.service)
                    [ "$daemon" != 0 ] && child=$(pgrep -P "$daemon" -f 'import' | head -1)
                    [ -n "$child" ] && break
                    sleep 0.1
                done
                echo "import child: ${child:-none}"
                sleep 1
                kill -INT -- -$client
                for i in $(seq 1 300); do kill -0 $client 2>/dev/null || break; sleep 0.1; done
                kill -KILL -- -$client 2>/dev/null
                wait $client
                echo "status=$?"
                cat /tmp/e2e-rem-cancel.err >&2
                """])
            #expect(run.stdout.contains("import child: ") && !run.stdout.contains("import child: none"),
                    "the daemon ran the import: \(run)")
            #expect(run.stdout.contains("status=130"), "\(run)")
            let children = try Testbed.sh("""
                for i in $(seq 1 100); do pgrep -f '[n]spawnctl import.*\(name)' >/dev/null || exit 0; sleep 0.1; done
                pgrep -af '[n]spawnctl import'
                """)
            #expect(children.trimmed.isEmpty, "the remote import was cancelled: \(children)")
            #expect(try !Fixture.imageNames().contains(name))
            let leftovers = try Testbed.sh("ls -A /var/lib/machines | grep -e '\(name)' || true")
            #expect(leftovers.trimmed.isEmpty, "nothing of the import is left: \(leftovers)")
        }
    }

    @Test(.testbedAccounts) func theHostVariableActsLikeTheOption() throws {
        try RemoteFixtures.prepare()
        try Fixture.with(["e2e-rem-env"]) {
            try Fixture.busybox("e2e-rem-env")
            let nsop = RemoteFixtures.host("nsop")
            let option = try nspawnctlClient(["--host", nsop, "ls", "--json"])
            let variable = try nspawnctlClient(["ls", "--json"], environment: ["NSPAWNCTL_HOST=\(nsop)"])
            #expect(option.status == Exit.ok && variable.status == Exit.ok, "\(option)\n\(variable)")
            #expect(variable.stdout == option.stdout)
            #expect(variable.stdout.contains("\"e2e-rem-env\""))
            // It really goes to the far side: as nsout there, root here is refused.
            let outsider = try nspawnctlClient(["ls"], environment: ["NSPAWNCTL_HOST=\(RemoteFixtures.host("nsout"))"])
            #expect(outsider.status == Exit.permissionDenied, "\(outsider)")
            let start = try nspawnctlClient(["start", "e2e-rem-env"], environment: ["NSPAWNCTL_HOST=\(nsop)"])
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Fixture.machinedState("e2e-rem-env") == "running")
        }
    }

    @Test(.testbedAccounts) func anOutsiderOverSSHIsPermissionDenied() throws {
        try RemoteFixtures.prepare()
        try Fixture.with(["e2e-rem-out"]) {
            try Fixture.busybox("e2e-rem-out")
            let ls = try nspawnctlClient(["--host", RemoteFixtures.host("nsout"), "ls"])
            #expect(ls.status == Exit.permissionDenied, "\(ls)")
            #expect(ls.stderr.lowercased().contains("permission denied"), "\(ls)")
            #expect(ls.stderr.contains("127.0.0.1"), "the message names the host: \(ls)")
            let start = try nspawnctlClient(["--host", RemoteFixtures.host("nsout"), "start", "e2e-rem-out"])
            #expect(start.status == Exit.permissionDenied, "\(start)")
            #expect(try Fixture.machinedState("e2e-rem-out") == nil)
        }
    }

    @Test(.testbedAccounts) func sshFailuresGetTheirExitCodesAndNameTheHost() throws {
        try RemoteFixtures.prepare()
        defer { _ = try? RemoteFixtures.useKnownHosts("right") }
        func expectFailure(_ host: String, _ code: Int32, _ what: String, naming: String = "127.0.0.1",
                           within limit: Double = 30, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let run = try nspawnctlClient(["--host", host, "ls"])
            #expect(run.status == code, "\(what): \(run)", sourceLocation: sourceLocation)
            #expect(run.stderr.contains(naming), "\(what): the message names the host: \(run)", sourceLocation: sourceLocation)
            #expect(run.seconds < limit, "\(what): \(run)", sourceLocation: sourceLocation)
            #expect(run.stdout.isEmpty, "\(what): \(run)", sourceLocation: sourceLocation)
        }
        let verificationFailed: Int32 = 6
        let unreachable: Int32 = 7

        // Host key checking is the user's: a changed or unknown key is a verification failure.
        try RemoteFixtures.useKnownHosts("wrong")
        try expectFailure(RemoteFixtures.host("nsop"), verificationFailed, "a host key that is not the one known")
        try RemoteFixtures.useKnownHosts("empty")
        try expectFailure(RemoteFixtures.host("nsop"), verificationFailed, "an unknown host key (no prompt without a terminal)")
        try RemoteFixtures.useKnownHosts("right")
        #expect(try Testbed.sh("cmp /root/.ssh/known_hosts \(RemoteFixtures.directory)/known_hosts.right").status == 0,
                "nspawnctl never writes the user's known_hosts")

        try expectFailure(RemoteFixtures.host("nsnokey"), Exit.permissionDenied, "a key the server does not accept")
        try expectFailure(RemoteFixtures.host("nsop", port: 1), unreachable, "a port where nothing listens")
        try expectFailure("ssh://nsop@e2e-no-such-host.invalid", unreachable, "a name that does not resolve", naming: "e2e-no-such-host.invalid")
        try expectFailure(RemoteFixtures.host("nsnobin"), unreachable, "a host without nspawnctl")
        try expectFailure(RemoteFixtures.host("nsnod"), unreachable, "a host without nspawnd")

        // A host that accepts the connection and never answers: ssh gives up after ConnectTimeout=10.
        defer { _ = try? Testbed.sh("systemctl stop e2e-rem-mute-port; systemctl reset-failed e2e-rem-mute-port 2>/dev/null; true") }
        try Testbed.mustSh("""
            systemctl stop e2e-rem-mute-port 2>/dev/null; systemctl reset-failed e2e-rem-mute-port 2>/dev/null
            systemd-run --quiet --unit=e2e-rem-mute-port /bin/sh -c 'sleep 120 | busybox nc -l -p 2222'
            for i in $(seq 1 50); do ss -ltn | grep -q ':2222 ' && exit 0; sleep 0.1; done; exit 1
            """)
        try expectFailure(RemoteFixtures.host("nsop", port: 2222), unreachable, "a host that does not answer", within: 40)
    }

    @Test(.testbedAccounts) func aHostileHostValueRunsNothingAndBadOnesAreInvalidInput() throws {
        try RemoteFixtures.prepare()
        try Testbed.mustSh("rm -f /tmp/e2e-rem-pwned")
        for host in ["ssh://-oProxyCommand=touch${IFS}/tmp/e2e-rem-pwned", "ssh://-oProxyCommand=touch /tmp/e2e-rem-pwned@127.0.0.1",
                     "ssh://127.0.0.1;touch /tmp/e2e-rem-pwned", "ssh://$(touch /tmp/e2e-rem-pwned)@127.0.0.1"] {
            let run = try nspawnctlClient(["--host", host, "ls"])
            #expect(run.status != Exit.ok && run.status < 124, "\(host): \(run)")
        }
        #expect(try Testbed.sh("test -e /tmp/e2e-rem-pwned").status != 0, "a --host value was run as a command")
        for host in ["ftp://127.0.0.1", "ssh://", "ssh://nsop@127.0.0.1:notaport", "ssh://nsop@127.0.0.1:70000"] {
            let run = try nspawnctlClient(["--host", host, "ls"])
            #expect(run.status == Exit.invalidInput, "\(host): \(run)")
        }
    }

    @Test(.testbedAccounts) func hostileRemotesEndTheClientWithoutHangingOrCrashing() throws {
        try RemoteFixtures.prepare()
        defer { RemoteFixtures.killLeftovers() }
        let failure: Int32 = 1
        let apiMismatch: Int32 = 8
        let unreachable: Int32 = 7
        // A far end that says nothing at all after the login may count as a failure or as not answering.
        let cases: [(behaviour: String, codes: Set<Int32>, within: Double, what: String)] = [
            ("garbage", [failure], 30, "an answer that is not HTTP"),
            ("truncated", [failure], 30, "a connection closed after 10 of 1000 bytes"),
            ("endless", [failure], 50, "an endless body"),
            ("huge", [failure], 50, "a body over 64 MiB by its Content-Length"),
            ("long-header", [failure], 50, "an endless header line"),
            ("endless-headers", [failure], 50, "endless short header lines"),
            ("silent", [failure], 10, "headers, then nothing (NSPAWNCTL_API_TIMEOUT=3)"),
            ("mute", [failure, unreachable], 10, "nothing at all (NSPAWNCTL_API_TIMEOUT=3)"),
            ("v9", [apiMismatch], 30, "an API level this nspawnctl does not speak"),
            ("no-api", [apiMismatch], 30, "an HTTP answer without Nspawnd-Api"),
        ]
        for c in cases {
            let run = try nspawnctlClient(["--host", RemoteFixtures.host("nsh-\(c.behaviour)"), "ls"],
                                          environment: ["NSPAWNCTL_API_TIMEOUT=3"])
            #expect(run.status != 124, "\(c.what): nspawnctl hung: \(run)")
            #expect(run.status < 128, "\(c.what): nspawnctl died of a signal: \(run)")
            #expect(c.codes.contains(run.status), "\(c.what): expected exit \(c.codes.sorted()): \(run)")
            #expect(run.seconds < c.within, "\(c.what): \(run)")
            #expect(run.stderr.contains("127.0.0.1"), "\(c.what): the message names the host: \(run)")
            #expect(!run.stdout.contains("NAME"), "\(c.what): nothing is shown as if it were a listing: \(run)")
            if c.codes == [apiMismatch] {
                #expect(run.stderr.uppercased().contains("API"), "\(c.what): the message says it is about the API level: \(run)")
            }
            // nspawnctl leaves no ssh behind to keep the far end busy.
            let ssh = try Testbed.sh("""
                for i in $(seq 1 100); do pgrep -a -x ssh | grep -q -- 'nsh-\(c.behaviour)' || exit 0; sleep 0.1; done
                pgrep -a -x ssh; exit 1
                """)
            #expect(ssh.status == 0, "\(c.what): an ssh client outlived nspawnctl: \(ssh)")
            RemoteFixtures.killLeftovers()
        }
        // The timeout is the client's, as the variable says: 8 s is waited for, not 3.
        let patient = try nspawnctlClient(["--host", RemoteFixtures.host("nsh-silent"), "ls"], environment: ["NSPAWNCTL_API_TIMEOUT=8"])
        #expect(patient.status == failure && patient.seconds >= 7 && patient.seconds < 20, "\(patient)")
    }
}
