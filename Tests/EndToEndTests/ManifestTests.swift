import Foundation
import Testing

struct PlanJSON: Decodable {
    struct Change: Decodable, Equatable {
        var op: String
        var field: String
    }
    struct Machine: Decodable {
        var name: String
        var action: String
        var changes: [Change]
    }
    var manifest: String
    var changes: Int
    var machines: [Machine]
}

struct ApplyJSON: Decodable {
    struct Machine: Decodable {
        var name: String
        var result: String
        var changes: [PlanJSON.Change]
        var error: String?
        var rolledBack: Bool?
        var rollbackError: String?
    }
    var changes: Int
    var failed: Int
    var machines: [Machine]
}

private func busyboxBase(_ name: String) throws { try Fixture.busyboxWithAccounts(name) }

/// Writes the manifest into the testbed, where nspawnctl reads it.
private func writeManifest(_ text: String, to path: String = "/tmp/e2e-manifest/site.yaml") throws {
    try Testbed.mustSh("mkdir -p /tmp/e2e-manifest && cat > \(path) <<'MANIFEST'\n\(text)\nMANIFEST")
}

/// Inode and modification time of every file the manifest manages, host and guest side.
private func managedFileStamps() throws -> String {
    try Testbed.mustSh("""
        stat -c '%n %i %Y.%y' /etc/systemd/nspawn/e2e-mf-a.nspawn /etc/systemd/nspawn/e2e-mf-b.nspawn \
            /etc/systemd/system/systemd-nspawn@e2e-mf-b.service.d/50-flavor.conf /etc/systemd/system/systemd-nspawn@e2e-mf-a.service.d/50-flavor.conf \
            /etc/systemd/system/systemd-nspawn@e2e-mf-deb.socket /var/lib/machines/e2e-mf-a/etc/motd /var/lib/machines/e2e-mf-deb/etc/motd \
            /var/lib/machines/e2e-mf-deb/etc/systemd/system/nspawnctl-expose.socket
        """).stdout
}

private func manifest(bEnvironment: String = "MODE=prod", aExtra: String = "", includeB: Bool = true) -> String {
    """
    name: e2e-site
    defaults:
      flavor: small
    profiles:
      sleeper:
        settings: { Environment: ["ROLE=sleeper"] }
    machines:
      e2e-mf-a:
        image: { clone: e2e-mf-base }
        profiles: [sleeper]
        state: running
        files:
          - { path: /etc/motd, content: "hello from a\\n", mode: "0640", owner: nobody }
        run:
          - { command: [/bin/sh, -c, "echo once >> /var/created-once"] }
          - { command: [/bin/touch, /var/ready], creates: /var/ready }
    \(aExtra)
    """ + (includeB ? """

      e2e-mf-b:
        image: { clone: e2e-mf-base }
        profiles: [sleeper]
        flavor: tiny
        settings: { Environment: ["\(bEnvironment)"] }
        state: stopped
    """ : "") + """

      e2e-mf-deb:
        image: { clone: e2e-mf-debbase }
        enabled: true
        files:
          - { path: /etc/motd, content: "debian guest\\n" }
        expose: { listen: "127.0.0.1:18097", exec: [/bin/echo, provisioned] }
    """
}

extension EndToEndTests {
    @Test func aManifestConvergesAndASecondApplyChangesNothing() throws {
        let names = ["e2e-mf-a", "e2e-mf-b", "e2e-mf-deb", "e2e-mf-hand", "e2e-mf-base", "e2e-mf-debbase"]
        try Fixture.with(names) {
            try busyboxBase("e2e-mf-base")
            try Fixture.systemdRoot("e2e-mf-debbase")
            try writeManifest(manifest())

            // From scratch: every machine is created and converged.
            let first = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--json")
            #expect(first.status == Exit.ok, "\(first)")
            let report = try decodeJSON(ApplyJSON.self, from: first.stdout)
            #expect(report.failed == 0 && report.machines.map(\.result) == ["changed", "changed", "changed"])
            #expect(try Fixture.machinedState("e2e-mf-a") == "running")
            #expect(try Fixture.machinedState("e2e-mf-b") == nil, "b is stopped")
            try Testbed.mustSh("""
                set -e
                test "$(stat -c '%a %u %g' /var/lib/machines/e2e-mf-a/etc/motd)" = "640 65534 65534"
                test "$(cat /var/lib/machines/e2e-mf-a/etc/motd)" = "hello from a"
                test "$(cat /var/lib/machines/e2e-mf-a/var/created-once)" = once
                test -e /var/lib/machines/e2e-mf-a/var/ready
                grep -qx 'Environment=MODE=prod' /etc/systemd/nspawn/e2e-mf-b.nspawn
                grep -qx 'Environment=ROLE=sleeper' /etc/systemd/nspawn/e2e-mf-a.nspawn
                test "$(systemctl show -p MemoryMax --value systemd-nspawn@e2e-mf-b.service)" = 268435456
                test "$(systemctl show -p MemoryMax --value systemd-nspawn@e2e-mf-a.service)" = "$((512*1024*1024))"
                test "$(systemctl is-enabled systemd-nspawn@e2e-mf-deb.service)" = enabled
                test "$(systemctl is-active systemd-nspawn@e2e-mf-deb.socket)" = active
                test "$(stat -c '%a %u' /var/lib/machines/e2e-mf-deb/etc/motd)" = "644 0"
                """)
            let recorded = try Testbed.run(["getfattr", "--only-values", "-n", "user.nspawnctl.manifest", "/var/lib/machines/e2e-mf-a"])
            #expect(recorded.stdout.contains("\"manifest\":\"e2e-site\""), "\(recorded)")

            // Again: nothing to do, nothing written.
            let before = try managedFileStamps()
            let plan = try decodeJSON(PlanJSON.self, from: try Testbed.nspawnctl("plan", "-f", "/tmp/e2e-manifest/site.yaml", "--json").stdout)
            #expect(plan.changes == 0, "\(plan.machines.map(\.changes))")
            let second = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--json")
            let secondReport = try decodeJSON(ApplyJSON.self, from: second.stdout)
            #expect(second.status == Exit.ok && secondReport.changes == 0, "\(second)")
            #expect(try managedFileStamps() == before, "same inode and mtime for every managed file")
            #expect(try Testbed.mustSh("cat /var/lib/machines/e2e-mf-a/var/created-once").trimmed == "once", "an unguarded command runs only at creation")

            // One edited value: exactly that change, and only that written.
            try writeManifest(manifest(bEnvironment: "MODE=edited"))
            let edited = try decodeJSON(PlanJSON.self, from: try Testbed.nspawnctl("plan", "-f", "/tmp/e2e-manifest/site.yaml", "--json").stdout)
            #expect(edited.changes == 1)
            #expect(edited.machines.first { $0.name == "e2e-mf-b" }?.changes == [PlanJSON.Change(op: "~", field: "settings.Exec.Environment")])
            let third = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--json")
            #expect((try decodeJSON(ApplyJSON.self, from: third.stdout)).changes == 1, "\(third)")
            try Testbed.mustSh("grep -qx 'Environment=ROLE=sleeper MODE=edited' /etc/systemd/nspawn/e2e-mf-b.nspawn || grep -qx 'Environment=MODE=edited' /etc/systemd/nspawn/e2e-mf-b.nspawn")
            let afterEdit = try managedFileStamps().split(separator: "\n").filter { !$0.contains("e2e-mf-b.nspawn") }
            #expect(afterEdit == before.split(separator: "\n").filter { !$0.contains("e2e-mf-b.nspawn") }, "only b's settings file was written")

            // The socket-activated machine answers its first connection.
            let answer = try Testbed.sh("timeout 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/18097; cat <&3'")
            #expect(answer.trimmed == "provisioned", "\(answer)")
        }
    }

    @Test func aFailingMachineIsRolledBackAndPruneRemovesOnlyWhatTheManifestCreated() throws {
        let names = ["e2e-mf-a", "e2e-mf-b", "e2e-mf-deb", "e2e-mf-hand", "e2e-mf-base", "e2e-mf-debbase"]
        try Fixture.with(names) {
            try busyboxBase("e2e-mf-base")
            try Fixture.systemdRoot("e2e-mf-debbase")
            try writeManifest(manifest())
            let first = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml")
            #expect(first.status == Exit.ok, "\(first)")
            let settingsBefore = try Testbed.mustSh("sha256sum /etc/systemd/nspawn/e2e-mf-a.nspawn /etc/systemd/system/systemd-nspawn@e2e-mf-a.service.d/50-flavor.conf").stdout

            // a: a new setting, a new flavor, then a command that fails. b comes after it.
            let failing = """
                    settings: { Port: ["tcp:18098:80"] }
                    flavor: medium
                    run:
                      - { command: [/bin/sh, -c, "echo failing on purpose >&2; exit 3"], creates: /never }
                """
            try writeManifest(manifest(bEnvironment: "MODE=after", aExtra: failing).replacingOccurrences(
                of: "    run:\n      - { command: [/bin/sh, -c, \"echo once >> /var/created-once\"] }\n      - { command: [/bin/touch, /var/ready], creates: /var/ready }\n", with: ""))
            let failed = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--keep-going", "--json")
            #expect(failed.status == 1, "\(failed)")
            let report = try decodeJSON(ApplyJSON.self, from: failed.stdout)
            let a = report.machines.first { $0.name == "e2e-mf-a" }
            #expect(a?.result == "failed" && a?.rolledBack == true && a?.error?.contains("exited with 3: failing on purpose") == true, "\(failed)")
            #expect(report.machines.first { $0.name == "e2e-mf-b" }?.result == "changed", "--keep-going goes on with b")
            #expect(try Testbed.mustSh("sha256sum /etc/systemd/nspawn/e2e-mf-a.nspawn /etc/systemd/system/systemd-nspawn@e2e-mf-a.service.d/50-flavor.conf").stdout == settingsBefore,
                    "a's settings and flavor are what they were")
            #expect(try Testbed.mustSh("systemctl show -p MemoryMax --value systemd-nspawn@e2e-mf-a.service").trimmed == "\(512 * 1024 * 1024)")

            // Without --keep-going the machines after a failed one are skipped.
            let stopped = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--json")
            let skipped = try decodeJSON(ApplyJSON.self, from: stopped.stdout)
            #expect(stopped.status == 1 && skipped.machines.map(\.result) == ["failed", "skipped", "skipped"], "\(stopped)")

            // Prune: b is dropped from the manifest and goes; a machine made by hand stays.
            try Testbed.mustSh("machinectl clone e2e-mf-base e2e-mf-hand")
            try writeManifest(manifest(includeB: false))
            let plan = try decodeJSON(PlanJSON.self, from: try Testbed.nspawnctl("plan", "-f", "/tmp/e2e-manifest/site.yaml", "--prune", "--json").stdout)
            #expect(plan.machines.filter { $0.action == "remove" }.map(\.name) == ["e2e-mf-b"])
            let pruned = try Testbed.nspawnctl("apply", "-f", "/tmp/e2e-manifest/site.yaml", "--prune", "--json")
            #expect(pruned.status == Exit.ok, "\(pruned)")
            let images = try Fixture.imageNames()
            #expect(!images.contains("e2e-mf-b") && images.contains("e2e-mf-hand") && images.contains("e2e-mf-a") && images.contains("e2e-mf-base"), "\(images)")
        }
    }

    /// A refused manifest is exit 2, names the file, line and key, and leaves the host as it was.
    @Test(arguments: [
        ("machines:\n  e2e-mf-x:\n    image: { clone: e2e-mf-base }\n    flavr: small\n", "site.yaml:4:5: machines.e2e-mf-x.flavr: unknown key"),
        ("machines:\n  e2e-mf-x:\n    image: { clone: e2e-mf-base }\n    settings: { Port: [\"tcp:0:80\"] }\n", "site.yaml:4:23: machines.e2e-mf-x.settings.Port: invalid value"),
        ("machines:\n  e2e-mf-x:\n    image: { clone: e2e-mf-base }\n    profiles: [nope]\n", "site.yaml:4:16: machines.e2e-mf-x.profiles: no profile 'nope'"),
        ("machines:\n  e2e-mf-x: {}\n  e2e-mf-x: {}\n", "site.yaml:2:3: e2e-mf-x is given twice"),
        ("machines:\n  e2e-mf-x:\n    image: { clone: \"../etc\" }\n", "site.yaml:3:21: machines.e2e-mf-x.image.clone:"),
    ])
    func aRefusedManifestChangesNothing(_ text: String, _ expected: String) throws {
        try Fixture.with(["e2e-mf-x", "e2e-mf-base"]) {
            try busyboxBase("e2e-mf-base")
            try writeManifest(text)
            let state = "ls /var/lib/machines /etc/systemd/nspawn /etc/systemd/system; machinectl list-images --no-legend"
            let before = try Testbed.mustSh(state).stdout
            for verb in ["plan", "apply"] {
                let result = try Testbed.nspawnctl(verb, "-f", "/tmp/e2e-manifest/site.yaml")
                #expect(result.status == 2, "\(verb): \(result)")
                #expect(result.stderr.contains("/tmp/e2e-manifest/\(expected)"), "\(verb): \(result.stderr)")
            }
            #expect(try Testbed.mustSh(state).stdout == before)
        }
    }
}
