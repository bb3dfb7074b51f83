import Foundation
import Testing

/// Site hooks in /etc/nspawnctl/hooks, against real systemd. The hook directory is the host's,
/// and other suites start machines meanwhile: every hook here acts only for this file's
/// machines (e2e-hk-*), and a refused hook sits only where a refusal is a warning.
extension EndToEndTests {
    private static let log = "/var/tmp/e2e-hooks.log"
    private static let events = ["pre-start", "post-start", "pre-stop", "post-stop", "pre-create", "post-create",
                                 "pre-rebuild", "post-rebuild", "pre-resize", "post-resize", "pre-remove", "post-remove"]

    private static func installHooks() throws {
        try Testbed.mustSh("""
            set -e
            install -d -m 0755 /etc/nspawnctl/hooks /usr/local/lib/e2e-hooks
            cat > /usr/local/lib/e2e-hooks/log <<'EOF'
            #!/bin/sh
            case "$1" in e2e-hk-*) ;; *) exit 0 ;; esac
            echo "$2 $1 ${NSPAWNCTL_IMAGE--} ${NSPAWNCTL_FLAVOR--} $(pwd) ${HOME-nohome} $NSPAWNCTL_EVENT" >> \(log)
            case "$1.$2" in e2e-hk-fail.pre-start) echo "the disk is not ready" >&2; exit 3 ;; esac
            case "$1.$2" in e2e-hk-hang.pre-remove) exec sleep 61 ;; esac
            exit 0
            EOF
            chmod 0755 /usr/local/lib/e2e-hooks/log
            for event in \(events.joined(separator: " ")); do
                install -d -m 0755 /etc/nspawnctl/hooks/$event.d
                ln -sf /usr/local/lib/e2e-hooks/log /etc/nspawnctl/hooks/$event.d/50-e2e-log
            done
            : > \(log)
            """)
    }

    private static func removeHooks() {
        _ = try? Testbed.sh("""
            rm -f /etc/nspawnctl/hooks/*.d/50-e2e-log /etc/nspawnctl/hooks/*.d/60-e2e-refused /etc/nspawnctl/hooks.conf
            rmdir /etc/nspawnctl/hooks/*.d /etc/nspawnctl/hooks 2>/dev/null
            rm -rf /usr/local/lib/e2e-hooks \(log) /var/tmp/e2e-hooks-refused-ran; true
            """)
    }

    private static func logged() throws -> [String] {
        try Testbed.sh("cat \(log); : > \(log)").stdout.split(separator: "\n").map(String.init)
    }

    @Test func everyEventFiresOnceInOrderHoweverTheMachineStartsAndStops() throws {
        let (base, name) = ("e2e-hk-base", "e2e-hk-log")
        try Fixture.with([name, base]) {
            try Self.installHooks()
            defer { Self.removeHooks() }
            try Fixture.busybox(base)
            #expect(try Testbed.nspawnctl("create", name, "--image", base, "--flavor", "tiny").status == Exit.ok)
            try Testbed.mustSh("printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1000000\\n' > /etc/systemd/nspawn/\(name).nspawn")
            // Clean environment, / as working directory, and what the machine is made of.
            #expect(try Self.logged() == ["pre-create \(name) \(base) tiny / nohome pre-create",
                                          "post-create \(name) \(base) tiny / nohome post-create"])

            #expect(try Testbed.nspawnctl("start", name).status == Exit.ok)
            #expect(try Testbed.nspawnctl("stop", name).status == Exit.ok)
            try Testbed.mustSh("machinectl start \(name) && machinectl terminate \(name)")
            // Until the unit is inactive, its stop commands (post-stop) run: "deactivating" is not the end.
            try Testbed.mustSh("""
                for i in $(seq 1 100); do
                    case $(systemctl show -p ActiveState --value systemd-nspawn@\(name).service) in inactive|failed) break ;; esac
                    sleep 0.1
                done
                """)
            let lifecycle = try Self.logged().map { $0.split(separator: " ").prefix(2).joined(separator: " ") }
            #expect(lifecycle == ["pre-start", "post-start", "pre-stop", "post-stop", "pre-start", "post-start", "pre-stop", "post-stop"]
                .map { "\($0) \(name)" }, "nspawnctl, then machinectl: \(lifecycle)")

            #expect(try Testbed.nspawnctl("resize", name, "--flavor", "small", "--confirm-after", "0").status == Exit.ok)
            #expect(try Testbed.nspawnctl("rebuild", name, "--image", base).status == Exit.ok)
            let changed = try Self.logged()
            #expect(changed.map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["pre-resize", "post-resize", "pre-rebuild", "post-rebuild"],
                    "\(changed)")
            #expect(changed.first?.contains(" small / ") == true, "resize hooks see the new flavor: \(changed)")

            // apply starts the machine through systemd, so the unit's hooks fire.
            try Testbed.mustSh("""
                mkdir -p /tmp/e2e-hooks && printf 'name: e2e-hk\\nmachines:\\n  \(name):\\n    state: running\\n' > /tmp/e2e-hooks/m.yaml
                nspawnctl apply -f /tmp/e2e-hooks/m.yaml >/dev/null
                """)
            #expect(try Self.logged().map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["pre-start", "post-start"])

            // remove --force: its own pre hook first, then the stop with the unit's hooks.
            #expect(try Testbed.nspawnctl("remove", "--force", name).status == Exit.ok)
            let removed = try Self.logged().map { $0.split(separator: " ").first.map(String.init) ?? "" }
            #expect(removed == ["pre-remove", "pre-stop", "post-stop", "post-remove"], "\(removed)")
        }
    }

    @Test func aFailingPreStartHookKeepsTheMachineStoppedAndSaysWhy() throws {
        let name = "e2e-hk-fail"
        try Fixture.with([name]) {
            try Self.installHooks()
            defer { Self.removeHooks() }
            try Fixture.busybox(name)
            let start = try Testbed.nspawnctl("start", name)
            #expect(start.status == 1, "\(start)")
            #expect(start.stderr.contains("machine '\(name)': pre-start hook '/etc/nspawnctl/hooks/pre-start.d/50-e2e-log' exited with status 3: the disk is not ready"),
                    "\(start)")
            #expect(try Testbed.run(["machinectl", "show", name]).status != 0, "the machine is not running")
            // Started by machinectl, the same hook stops it too.
            #expect(try Testbed.run(["machinectl", "start", name]).status != 0)
            #expect(try Testbed.run(["systemctl", "is-active", "systemd-nspawn@\(name).service"]).trimmed != "active")
        }
    }

    @Test func aWritableHookIsRefusedAndAHangingOneIsKilledAtItsTimeout() throws {
        let name = "e2e-hk-hang"
        try Fixture.with([name]) {
            try Self.installHooks()
            defer { Self.removeHooks() }
            try Fixture.busybox(name)
            // A post-resize hook anyone may write: named, not run; the resize stands.
            try Testbed.mustSh("""
                printf '#!/bin/sh\\ntouch /var/tmp/e2e-hooks-refused-ran\\n' > /etc/nspawnctl/hooks/post-resize.d/60-e2e-refused
                chmod 0777 /etc/nspawnctl/hooks/post-resize.d/60-e2e-refused
                """)
            let resize = try Testbed.nspawnctl("resize", name, "--flavor", "tiny", "--confirm-after", "0")
            #expect(resize.status == Exit.ok, "\(resize)")
            #expect(resize.stderr.contains("post-resize hook '/etc/nspawnctl/hooks/post-resize.d/60-e2e-refused' is refused: it is writable by group or others (mode 777)"),
                    "\(resize)")
            #expect(try Testbed.run(["test", "-e", "/var/tmp/e2e-hooks-refused-ran"]).status != 0, "the refused hook did not run")

            // A pre-remove hook that hangs: killed at the configured timeout, and the machine stays.
            try Testbed.mustSh("printf '[Hooks]\\nTimeoutSec=2\\n' > /etc/nspawnctl/hooks.conf")
            let started = Date()
            let remove = try Testbed.nspawnctl("remove", name)
            let seconds = Date().timeIntervalSince(started)
            #expect(remove.status == 1 && remove.stderr.contains("pre-remove hook '/etc/nspawnctl/hooks/pre-remove.d/50-e2e-log' did not finish in 2.0 seconds and was killed"),
                    "\(remove)")
            #expect(seconds < 30, "killed after \(seconds) s")
            #expect(try Fixture.imageNames().contains(name), "a failed pre-remove hook changes nothing")
            #expect(try Testbed.sh("pgrep -fx 'sleep 61' | wc -l").trimmed == "0", "the hook's process group is gone")
        }
    }
}
