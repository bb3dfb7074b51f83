import Foundation
import Testing

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

struct RebuildJSON: Decodable {
    var name: String
    var image: String
    var method: String
    var restarted: Bool
}

/// What belongs to the machine rather than its root: it must come through a rebuild unchanged.
private func machineFiles(_ name: String) throws -> String {
    try Testbed.mustSh("""
        cd /etc/systemd && sha256sum nspawn/\(name).nspawn system/systemd-nspawn@\(name).service.d/* system/systemd-nspawn@\(name).socket
        cat /var/lib/machines/\(name)/etc/machine-id
        sha256sum /var/lib/machines/\(name)/etc/systemd/system/nspawnctl-expose.socket
        systemctl is-enabled systemd-nspawn@\(name).socket
        """).stdout
}

extension EndToEndTests {
    @Test func rebuildReplacesTheRootAndKeepsTheMachine() throws {
        let base = "e2e-rb-base"
        let name = "e2e-rb"
        try Fixture.with([name, base]) {
            try Fixture.systemdRoot(base)
            let create = try Testbed.nspawnctl("create", name, "--image", base, "--flavor", "small",
                                               "--listen", "127.0.0.1:18093", "--exec", "/bin/echo", "rebuilt")
            #expect(create.status == Exit.ok, "\(create)")
            let recorded = try Testbed.run(["getfattr", "--only-values", "-n", "user.nspawnctl.image", "/var/lib/machines/\(name)"])
            #expect(recorded.stdout == base, "create records its image: \(recorded)")
            try Testbed.mustSh("""
                echo 0123456789abcdef0123456789abcdef > /var/lib/machines/\(name)/etc/machine-id
                echo written > /var/lib/machines/\(name)/root/marker
                """)
            let before = try machineFiles(name)
            #expect(try Testbed.nspawnctl("start", name).status == Exit.ok)

            let rebuild = try Testbed.nspawnctl("rebuild", name, "--json")
            #expect(rebuild.status == Exit.ok, "\(rebuild)")
            let result = try decodeJSON(RebuildJSON.self, from: rebuild.stdout)
            #expect(result.image == base && result.restarted && ["btrfs", "reflink", "copy"].contains(result.method))
            #expect(try Fixture.machinedState(name) == "running", "a running machine runs again")
            #expect(try Testbed.sh("test -e /var/lib/machines/\(name)/root/marker").status != 0, "the file written into the machine is gone")
            #expect(try machineFiles(name) == before, "machine-id, settings, flavor, sockets and enablement stay")
            #expect(try Testbed.run(["getfattr", "--only-values", "-n", "user.nspawnctl.image", "/var/lib/machines/\(name)"]).stdout == base)
            // The guest's own view: its machine-id is the one it had.
            try Testbed.mustSh("for i in $(seq 1 100); do s=$(systemctl -M \(name) is-system-running 2>/dev/null); case $s in running|degraded) exit 0;; esac; sleep 0.2; done; exit 1")
            let guestID = try Testbed.run(["systemd-run", "-M", name, "--pipe", "--wait", "--quiet", "cat", "/etc/machine-id"])
            #expect(guestID.trimmed == "0123456789abcdef0123456789abcdef", "\(guestID)")
            let leftovers = try Testbed.sh("ls -a /var/lib/machines | grep '^.#rebuild' || true")
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
        }
    }

    /// kill -9 at several points of a rebuild: the root is always the old one or the new one, whole.
    @Test func aKilledRebuildLeavesTheOldRootOrTheNewOne() throws {
        let base = "e2e-rbk-base"
        let name = "e2e-rbk"
        try Fixture.with([name, base]) {
            try Fixture.systemdRoot(base)
            #expect(try Testbed.nspawnctl("create", name, "--image", base).status == Exit.ok)
            let imageEntries = try Int(Testbed.mustSh("find /var/lib/machines/\(base) | wc -l").trimmed) ?? -1
            // One whole rebuild gives its duration; the kills land at fractions of it, the last ones
            // (most likely) after the swap, while the old root is being removed.
            try Testbed.mustSh("echo written > /var/lib/machines/\(name)/root/marker")
            let started = ContinuousClock.now
            #expect(try Testbed.nspawnctl("rebuild", name).status == Exit.ok)
            let whole = (ContinuousClock.now - started).seconds
            var outcomes: [String] = []
            for fraction in [0.3, 0.8, 0.95] {
                let delay = String(format: "%.2f", whole * fraction)
                try Testbed.mustSh("echo written > /var/lib/machines/\(name)/root/marker")
                try Testbed.mustSh("nspawnctl rebuild \(name) >/dev/null 2>&1 & pid=$!; sleep \(delay); kill -9 $pid 2>/dev/null; wait $pid; true")
                let entries = try Int(Testbed.mustSh("find /var/lib/machines/\(name) | wc -l").trimmed) ?? -2
                let marked = try Testbed.sh("test -e /var/lib/machines/\(name)/root/marker").status == 0
                // The old root has the marker on top of the image's entries; the new one exactly the image's.
                #expect(entries == imageEntries + (marked ? 1 : 0), "after \(delay) s: \(entries) entries, marker \(marked), image \(imageEntries)")
                outcomes.append(marked ? "old" : "new")
            }
            // The next rebuild clears what the killed ones left and succeeds.
            print("killed rebuilds of a \(whole) s rebuild left: \(outcomes)")
            let rebuild = try Testbed.nspawnctl("rebuild", name)
            #expect(rebuild.status == Exit.ok, "\(rebuild) after \(outcomes)")
            let leftovers = try Testbed.sh("ls -a /var/lib/machines | grep '^.#rebuild' || true")
            #expect(leftovers.trimmed.isEmpty, "\(leftovers)")
        }
    }

    @Test func rebuildRefusesWhatItCannotDo() throws {
        try Fixture.with(["e2e-rbx", "e2e-rbx-ro"]) {
            try Fixture.busybox("e2e-rbx")
            let unrecorded = try Testbed.nspawnctl("rebuild", "e2e-rbx")
            #expect(unrecorded.status == Exit.invalidInput, "\(unrecorded)")
            #expect(unrecorded.stderr.contains("'e2e-rbx' has no recorded image"), "\(unrecorded.stderr)")
            let noImage = try Testbed.nspawnctl("rebuild", "e2e-rbx", "--image", "e2e-no-such-image")
            #expect(noImage.status == Exit.notFound, "\(noImage)")
            let ownRoot = try Testbed.nspawnctl("rebuild", "e2e-rbx", "--image", "e2e-rbx")
            #expect(ownRoot.status == Exit.invalidInput, "\(ownRoot)")
            let unknown = try Testbed.nspawnctl("rebuild", "e2e-no-such-machine", "--image", "e2e-rbx")
            #expect(unknown.status == Exit.notFound, "\(unknown)")
            try Fixture.busybox("e2e-rbx-ro")
            try Testbed.mustSh("machinectl read-only e2e-rbx-ro yes")
            let readOnly = try Testbed.nspawnctl("rebuild", "e2e-rbx-ro", "--image", "e2e-rbx")
            #expect(readOnly.status == Exit.conflict, "\(readOnly)")
            #expect(try Testbed.sh("ls /var/lib/machines/e2e-rbx-ro/bin/busybox").status == 0, "nothing was touched")
        }
    }
}
