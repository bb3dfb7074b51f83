import Foundation
import Testing

struct ConfigJSON: Decodable {
    struct Settings: Decodable {
        var settings: [String: [String]]
    }
    var name: String
    var path: String?
    var settings: Settings
    var flavor: String?
    var exposed: [String]
}

struct UnitStatusJSON: Decodable {
    struct Limits: Decodable {
        var memoryMax: UInt64?
        var cpuQuotaPerSecUSec: UInt64?
        var tasksMax: UInt64?
    }
    var name: String
    var state: String
    var exposed: [String]
    var socketState: String?
    var flavor: String?
    var limits: Limits?
}

/// Reads what a socket-activated machine answers on the host's port, from inside the testbed.
func connect(_ port: Int) throws -> CommandResult {
    try Testbed.sh("timeout 30 busybox nc 127.0.0.1 \(port) </dev/null")
}

private func unitProperty(_ unit: String, _ property: String) throws -> String {
    try Testbed.run(["systemctl", "show", "-p", property, "--value", unit]).trimmed
}

extension EndToEndTests {
    @Test func exposeStartsTheMachineOnTheFirstConnectionAndUnexposeRemovesBothSides() throws {
        let name = "e2e-expose"
        try Fixture.with([name]) {
            try Fixture.systemdRoot(name)
            let expose = try Testbed.nspawnctl("expose", name, "--json", "--listen", "127.0.0.1:18080", "--exec", "/bin/echo", "hello from \(name)")
            #expect(expose.status == Exit.ok, "\(expose)")
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "ActiveState") == "active")
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "Listen") == "127.0.0.1:18080 (Stream)")
            #expect(try Testbed.run(["systemctl", "is-enabled", "systemd-nspawn@\(name).socket"]).trimmed == "enabled")
            #expect(try Fixture.machinedState(name) == nil, "nothing runs before the first connection")
            let listed = try decodeJSON([ListedMachine].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
            #expect(listed.first { $0.name == name }?.state == "listening")

            let cold = try connect(18080)
            #expect(cold.trimmed == "hello from \(name)", "\(cold)")
            #expect(try Fixture.machinedState(name) == "running")
            let warm = try connect(18080)
            #expect(warm.trimmed == "hello from \(name)", "\(warm)")

            let status = try decodeJSON(UnitStatusJSON.self, from: try Testbed.nspawnctl("status", name, "--json").stdout)
            #expect(status.state == "running" && status.exposed == ["127.0.0.1:18080"])

            // The running machine holds the passed socket: unexpose says so and changes nothing.
            let refused = try Testbed.nspawnctl("unexpose", name)
            #expect(refused.status == Exit.conflict, "\(refused)")
            #expect(refused.stderr.contains(name) && refused.stderr.contains("--restart"))
            #expect(try connect(18080).trimmed == "hello from \(name)")

            let unexpose = try Testbed.nspawnctl("unexpose", name, "--restart")
            #expect(unexpose.status == Exit.ok, "\(unexpose)")
            #expect(try Fixture.machinedState(name) == "running", "--restart starts it again")
            let closed = try connect(18080)
            #expect(closed.status != 0 && !closed.stdout.contains("hello"), "\(closed)")
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "LoadState") == "not-found")
            let leftovers = try Testbed.sh("""
                ls /etc/systemd/system/systemd-nspawn@\(name).socket /etc/systemd/system/sockets.target.wants/systemd-nspawn@\(name).socket \
                   /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket \
                   /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose@.service \
                   /var/lib/machines/\(name)/etc/systemd/system/sockets.target.wants/nspawnctl-expose.socket 2>/dev/null
                """)
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
            let again = try Testbed.nspawnctl("unexpose", name)
            #expect(again.status == Exit.conflict && again.stderr.contains("not exposed"), "\(again)")
        }
    }

    @Test func exposeHandsAGuestServiceItsSocketAndReplacesAddresses() throws {
        let name = "e2e-expose-unit"
        try Fixture.with([name]) {
            try Fixture.systemdRoot(name)
            // A socket-aware guest service for --unit: systemd-socket-proxyd takes the passed
            // socket and forwards to a backend inside the guest.
            try Testbed.mustSh("""
                cd /var/lib/machines/\(name)/etc/systemd/system
                printf '[Service]\\nExecStart=/bin/busybox nc -ll -p 9999 -e /bin/echo answer-from-unit\\nExecStartPost=/bin/sleep 0.5\\n' > backend.service
                printf '[Unit]\\nRequires=backend.service\\nAfter=backend.service\\n[Service]\\nExecStart=/usr/lib/systemd/systemd-socket-proxyd 127.0.0.1:9999\\n' > proxy.service
                """)
            // Exposing twice replaces the first address set.
            let first = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18081", "--exec", "/bin/echo", "one")
            #expect(first.status == Exit.ok, "\(first)")
            let second = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18082", "--unit", "proxy.service")
            #expect(second.status == Exit.ok, "\(second)")
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "Listen") == "127.0.0.1:18082 (Stream)")
            let guestSocket = try Testbed.sh("cat /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket")
            #expect(guestSocket.stdout.contains("ListenStream=127.0.0.1:18082\nService=proxy.service"))
            #expect(!guestSocket.stdout.contains("18081") && !guestSocket.stdout.contains("Accept=yes"))
            #expect(try Testbed.sh("test -e /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose@.service").status != 0,
                    "the per-connection service of the first expose is gone")
            #expect(try connect(18081).status != 0, "the first address no longer listens")
            // systemd-socket-proxyd drops a connection whose client has already sent EOF, so keep
            // the client's side open until the answer is in.
            let answer = try Testbed.sh("sleep 2 | timeout 30 busybox nc 127.0.0.1 18082")
            #expect(answer.trimmed == "answer-from-unit", "the guest service got the socket: \(answer)")
            #expect(try Fixture.machinedState(name) == "running")
            #expect(try Testbed.nspawnctl("stop", name).status == Exit.ok)

            // A replacement that cannot work is refused and the current expose stays as it was.
            let before = try Testbed.sh("sha256sum /etc/systemd/system/systemd-nspawn@\(name).socket /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket")
            let missing = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18084", "--exec", "/no/such/program")
            #expect(missing.status == Exit.invalidInput && missing.stderr.contains("/no/such/program") && missing.stderr.contains(name), "\(missing)")
            let after = try Testbed.sh("sha256sum /etc/systemd/system/systemd-nspawn@\(name).socket /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket")
            #expect(after.stdout == before.stdout && !before.stdout.isEmpty)
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "ActiveState") == "active")
        }
    }

    @Test func exposeOnATakenPortFailsAndLeavesNothing() throws {
        let name = "e2e-expose-taken"
        try Fixture.with([name]) {
            try Fixture.systemdRoot(name)
            // Another program holds the port (on all addresses, which 127.0.0.1 cannot share).
            try Testbed.mustSh("systemd-run --unit=e2e-port-hog busybox nc -l -p 18085 >/dev/null 2>&1; sleep 0.3; systemctl is-active e2e-port-hog")
            defer { _ = try? Testbed.sh("systemctl stop e2e-port-hog; systemctl reset-failed e2e-port-hog 2>/dev/null; true") }
            let expose = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18085", "--exec", "/bin/echo", "x")
            #expect(expose.status == 1, "\(expose)")
            #expect(expose.stderr.contains("systemd-nspawn@\(name).socket"), "the error names the unit: \(expose.stderr)")
            let leftovers = try Testbed.sh("""
                ls /etc/systemd/system/systemd-nspawn@\(name).socket /etc/systemd/system/sockets.target.wants/systemd-nspawn@\(name).socket \
                   /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket \
                   /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose@.service 2>/dev/null
                """)
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "LoadState") == "not-found")
            #expect(try Testbed.run(["systemctl", "is-active", "e2e-port-hog"]).trimmed == "active", "the other listener is untouched")
        }
    }

    @Test func exposeNeverWritesThroughAGuestSymlink() throws {
        let name = "e2e-expose-hostile"
        try Fixture.with([name]) {
            try Fixture.systemdRoot(name)
            try Testbed.mustSh("""
                rm -rf /tmp/e2e-host-target && mkdir -p /tmp/e2e-host-target /var/lib/machines/\(name)/tmp/e2e-host-target
                rm -rf /var/lib/machines/\(name)/etc/systemd/system
                ln -s /tmp/e2e-host-target /var/lib/machines/\(name)/etc/systemd/system
                """)
            let expose = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18083", "--exec", "/bin/echo", "x")
            #expect(expose.status == Exit.ok, "\(expose)")
            let host = try Testbed.sh("ls -A /tmp/e2e-host-target")
            #expect(host.trimmed.isEmpty, "nothing may land in the host's directory: \(host)")
            let inside = try Testbed.sh("ls -A /var/lib/machines/\(name)/tmp/e2e-host-target")
            #expect(inside.stdout.contains("nspawnctl-expose.socket"), "the symlink resolves inside the root: \(inside)")
            #expect(try Testbed.nspawnctl("unexpose", name).status == Exit.ok)
            try Testbed.sh("rm -rf /tmp/e2e-host-target")
        }
    }

    @Test func createClonesAppliesTheFlavorAndSettingsAndResizeIsLive() throws {
        let base = "e2e-create-base"
        let name = "e2e-create"
        try Fixture.with([name, base]) {
            try Fixture.systemdRoot(base)
            let create = try Testbed.nspawnctl("create", name, "--image", base, "--flavor", "small", "--port", "tcp:18090:80",
                                               "--bind-ro", "/usr/share/doc:/srv/doc", "--env", "GREETING=hi", "--start", "--json")
            #expect(create.status == Exit.ok, "\(create)")
            #expect(try Fixture.machinedState(name) == "running")
            #expect(try Fixture.imageNames().contains(name))

            let settings = try Testbed.sh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
            #expect(settings.contains("Port=tcp:18090:80") && settings.contains("BindReadOnly=/usr/share/doc:/srv/doc")
                    && settings.contains("Environment=GREETING=hi"), "\(settings)")
            let unit = "systemd-nspawn@\(name).service"
            let shown = try Testbed.run(["systemctl", "show", "-p", "MemoryMax,CPUQuotaPerSecUSec,TasksMax", unit]).stdout
            #expect(shown.contains("MemoryMax=536870912") && shown.contains("CPUQuotaPerSecUSec=500ms") && shown.contains("TasksMax=512"), "\(shown)")
            let leader = try Testbed.run(["machinectl", "show", name, "-p", "Leader", "--value"]).trimmed
            // mountinfo field 6 holds the per-mount options.
            let mount = try Testbed.sh("awk '$5 == \"/srv/doc\" {print $6}' /proc/\(leader)/mountinfo")
            #expect(mount.trimmed.split(separator: ",").first == "ro", "the bind is read-only inside: \(mount)")

            let resize = try Testbed.nspawnctl("resize", name, "--flavor", "tiny")
            #expect(resize.status == Exit.ok, "\(resize)")
            let live = try Testbed.run(["systemctl", "show", "-p", "MemoryMax,CPUQuotaPerSecUSec,TasksMax", unit]).stdout
            #expect(live.contains("MemoryMax=268435456") && live.contains("CPUQuotaPerSecUSec=250ms") && live.contains("TasksMax=256"), "\(live)")
            let status = try decodeJSON(UnitStatusJSON.self, from: try Testbed.nspawnctl("status", name, "--json").stdout)
            #expect(status.flavor == "tiny" && status.limits?.memoryMax == 268_435_456 && status.limits?.tasksMax == 256)

            // After a restart the drop-in alone gives the same limits.
            #expect(try Testbed.nspawnctl("stop", name).status == Exit.ok)
            #expect(try Testbed.nspawnctl("start", name).status == Exit.ok)
            #expect(try unitProperty(unit, "MemoryMax") == "268435456")

            let remove = try Testbed.nspawnctl("remove", "--force", name)
            #expect(remove.status == Exit.ok, "\(remove)")
            let leftovers = try Testbed.sh("ls -d /etc/systemd/nspawn/\(name).nspawn /etc/systemd/system/\(unit).d /var/lib/machines/\(name) 2>/dev/null")
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
        }
    }

    @Test func createLeavesNothingBehindWhenAStepFails() throws {
        let base = "e2e-undo-base"
        let name = "e2e-undo"
        try Fixture.with([name, base]) {
            try Fixture.systemdRoot(base)
            // The bind source does not exist, so systemd-nspawn fails at start, after every file was written.
            let create = try Testbed.nspawnctl("create", name, "--image", base, "--flavor", "small", "--bind", "/nonexistent-e2e:/mnt",
                                               "--start", "--listen", "127.0.0.1:18091", "--exec", "/bin/echo", "x")
            #expect(create.status == 1, "\(create)")
            #expect(create.stderr.contains("systemd-nspawn@\(name)"), "the error names the unit: \(create.stderr)")
            #expect(try !Fixture.imageNames().contains(name))
            #expect(try Fixture.machinedState(name) == nil)
            let leftovers = try Testbed.sh("""
                ls -d /etc/systemd/nspawn/\(name).nspawn /etc/systemd/system/systemd-nspawn@\(name).service.d \
                   /etc/systemd/system/systemd-nspawn@\(name).socket /etc/systemd/system/sockets.target.wants/systemd-nspawn@\(name).socket \
                   /var/lib/machines/\(name) 2>/dev/null
                """)
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
            #expect(try connect(18091).status != 0)
            #expect(try unitProperty("systemd-nspawn@\(name).socket", "LoadState") == "not-found")

            // An unknown flavor or image is refused before anything is cloned.
            let badFlavor = try Testbed.nspawnctl("create", name, "--image", base, "--flavor", "enormous")
            #expect(badFlavor.status == Exit.invalidInput && badFlavor.stderr.contains("enormous"), "\(badFlavor)")
            let badImage = try Testbed.nspawnctl("create", name, "--image", "e2e-no-such-image")
            #expect(badImage.status == Exit.notFound, "\(badImage)")
            let taken = try Testbed.nspawnctl("create", base, "--image", base)
            #expect(taken.status == Exit.conflict, "\(taken)")
            #expect(try !Fixture.imageNames().contains(name))
        }
    }

    @Test func settingsNextToTheImageAreNeverShadowedSilently() throws {
        let name = "e2e-adjacent"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            // Only the untrusted file next to the image: systemd-nspawn reads it (minus privileged keys).
            try Testbed.mustSh("mv /etc/systemd/nspawn/\(name).nspawn /var/lib/machines/\(name).nspawn")
            defer { _ = try? Testbed.sh("rm -f /var/lib/machines/\(name).nspawn") }
            let config = try Testbed.nspawnctl("config", name, "--port", "8080")
            #expect(config.status == Exit.conflict, "\(config)")
            #expect(config.stderr.contains("/var/lib/machines/\(name).nspawn"), "\(config.stderr)")
            #expect(try Testbed.sh("test -e /etc/systemd/nspawn/\(name).nspawn").status != 0, "nothing was written to /etc")
            let expose = try Testbed.nspawnctl("expose", name, "--listen", "127.0.0.1:18087", "--exec", "/bin/sh")
            #expect(expose.status == Exit.invalidInput && expose.stderr.contains("Boot=no"), "its Boot=no counts: \(expose)")
            #expect(try Testbed.sh("test -e /etc/systemd/system/systemd-nspawn@\(name).socket").status != 0)
        }
    }

    @Test func badFlagValuesLeaveTheSettingsFileUntouched() throws {
        let name = "e2e-config"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                cat > /etc/systemd/nspawn/\(name).nspawn <<'EOF'
                # hand-written; keep this comment
                [Exec]
                Boot=no
                Parameters=/bin/sleep 1000000
                X-Unknown=kept

                [Files]
                Bind=/srv:/srv
                EOF
                sha256sum /etc/systemd/nspawn/\(name).nspawn > /tmp/\(name).sum
                # Next to the image, untrusted: systemd ignores its privileged keys, and so do we.
                printf '[Network]\\nPort=9999\\n[Files]\\nBind=/:/host\\n' > /var/lib/machines/\(name).nspawn
                """)
            defer { _ = try? Testbed.sh("rm -f /var/lib/machines/\(name).nspawn") }
            let attempts: [[String]] = [
                ["--port", "99999"], ["--port", "tcp:80:80:80"], ["--bind", "relative:/x"], ["--bind", "/a/../etc:/x"],
                ["--env", "1BAD=x"], ["--network", "wormhole"], ["--network", "bridge=this-name-is-too-long"],
                ["--set", "Exec.Boot=maybe"], ["--set", "Exec.Bogus=1"], ["--unset", "Nope"], ["--set", "Hostname=-x-"],
                ["--port", "8080", "--network", "host"], ["--flavor", "no-such-flavor"], ["--flavor", "../../etc/passwd"],
                ["--bind", "/ok:/ok", "--port", "0"],
            ]
            for attempt in attempts {
                let result = try Testbed.run(["nspawnctl", "config", name] + attempt)
                #expect(result.status == Exit.invalidInput, "\(attempt): \(result)")
                #expect(!result.stderr.isEmpty)
                let unchanged = try Testbed.sh("sha256sum -c --quiet /tmp/\(name).sum")
                #expect(unchanged.status == 0, "\(attempt) changed the file: \(unchanged)")
            }
            #expect(try Testbed.sh("ls -A /etc/systemd/nspawn | grep -v '\\.nspawn$'").trimmed.isEmpty, "no temporary files are left")

            let good = try Testbed.nspawnctl("config", name, "--json", "--bind-ro", "/etc/ssl", "--port", "udp:5353:53", "--network", "veth")
            #expect(good.status == Exit.ok, "\(good)")
            let config = try decodeJSON(ConfigJSON.self, from: good.stdout)
            #expect(config.settings.settings["Files.Bind"] == ["/srv:/srv"])
            #expect(config.settings.settings["Files.BindReadOnly"] == ["/etc/ssl"])
            #expect(config.settings.settings["Network.Port"] == ["udp:5353:53"], "nothing from the untrusted file next to the image")
            #expect(config.path == "/etc/systemd/nspawn/\(name).nspawn")
            #expect(try Testbed.sh("cat /var/lib/machines/\(name).nspawn").stdout == "[Network]\nPort=9999\n[Files]\nBind=/:/host\n")
            let text = try Testbed.sh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
            #expect(text.hasPrefix("# hand-written; keep this comment\n[Exec]\nBoot=no\nParameters=/bin/sleep 1000000\nX-Unknown=kept\n"), "\(text)")
            let unknownMachine = try Testbed.nspawnctl("config", "e2e-no-such-machine", "--port", "80")
            #expect(unknownMachine.status == Exit.notFound, "\(unknownMachine)")
            #expect(try Testbed.sh("test -e /etc/systemd/nspawn/e2e-no-such-machine.nspawn").status != 0)
        }
    }
}
