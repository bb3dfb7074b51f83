import Foundation
import Testing

/// copy-to, copy-from and snapshots against real machines, checked with stat, getfattr and
/// sha256sum on disk and inside the guest (through nsenter into a busybox machine's namespaces,
/// or systemd-run -M into a booted one).
enum CopyFixtures {
    static let snapshots = "/var/lib/machines/.#nspawnctl-snapshots"

    /// A tree with modes, owners, a symlink, a hardlink, a user xattr and a set-uid file.
    static func makeTree(_ path: String) throws {
        try Testbed.mustSh("""
            set -e
            rm -rf \(path) && mkdir -p \(path)/sub/deeper
            printf 'hello\\n' > \(path)/file && chmod 0754 \(path)/file
            head -c 200000 /dev/urandom > \(path)/sub/data && chown 1234:5678 \(path)/sub/data && chmod 4750 \(path)/sub/data
            ln \(path)/sub/data \(path)/sub/deeper/data-link
            ln -s ../file \(path)/sub/relative
            setfattr -n user.origin -v e2e \(path)/file
            chmod 0701 \(path)/sub
            touch -d '2003-04-05 06:07:08' \(path)/file \(path)/sub/deeper \(path)/sub \(path)
            """)
    }

    /// One line per entry (relative path, type and mode, owner, size, mtime, links, target),
    /// the user xattrs and the checksums, as tools we did not write see them.
    static func describe(_ path: String) throws -> String {
        try Testbed.mustSh("""
            cd \(path) && find . -printf '%p %M %U:%G %s %T@ %n %l\\n' | sort
            getfattr -R -h -d -m '^user\\.' . 2>/dev/null | grep -v '^$'
            find . -type f -print0 | sort -z | xargs -0 sha256sum
            """).stdout
    }

    /// Runs a command in a running busybox machine's mount (and user) namespace.
    static func inGuest(_ name: String, _ command: String) throws -> CommandResult {
        try Testbed.sh("nsenter -t $(machinectl show \(name) -p Leader --value) -U -m -- /bin/busybox \(command)")
    }

    static func removeSnapshots(_ names: [String]) {
        for name in names {
            _ = try? Testbed.sh("chattr -i \(snapshots)/\(name)/* 2>/dev/null; rm -rf \(snapshots)/\(name); rmdir \(snapshots) 2>/dev/null; true")
        }
    }

    static func with(_ names: [String], _ body: () throws -> Void) throws {
        removeSnapshots(names)
        defer { removeSnapshots(names) }
        try Fixture.with(names, body)
    }
}

extension EndToEndTests {
    @Test func copyToAndFromKeepModesLinksHardlinksAndXattrsOnStoppedAndRunningMachines() throws {
        try CopyFixtures.with(["e2e-cp"]) {
            try Fixture.busybox("e2e-cp")
            try Testbed.mustSh("mkdir -p /var/lib/machines/e2e-cp/srv")
            try CopyFixtures.makeTree("/var/tmp/e2e-cp-src")
            let expected = try CopyFixtures.describe("/var/tmp/e2e-cp-src")

            // Stopped: straight onto the image.
            let into = try Testbed.nspawnctl("copy-to", "--json", "e2e-cp", "/var/tmp/e2e-cp-src", "/srv/tree")
            #expect(into.status == Exit.ok, "\(into)")
            struct Copied: Decodable { var files: Int; var hardlinks: Int; var symlinks: Int; var method: String?; var replaced: Bool }
            let copied = try decodeJSON(Copied.self, from: into.stdout)
            #expect(copied.files == 2 && copied.hardlinks == 1 && copied.symlinks == 1 && !copied.replaced)
            #expect(copied.method != nil, "the method the data went by is reported: \(into.stdout)")
            #expect(try CopyFixtures.describe("/var/lib/machines/e2e-cp/srv/tree") == expected)

            // Running (user-namespaced by systemd-nspawn@.service's -U): the guest sees the same.
            try Testbed.mustSh("machinectl start e2e-cp")
            let guest = try CopyFixtures.inGuest("e2e-cp", "stat -c '%a %u:%g %h' /srv/tree/file /srv/tree/sub/data /srv/tree/sub/deeper/data-link")
            #expect(guest.stdout == "754 0:0 1\n4750 1234:5678 2\n4750 1234:5678 2\n", "\(guest)")
            let guestSum = try CopyFixtures.inGuest("e2e-cp", "sha256sum /srv/tree/sub/data").stdout.prefix(64)
            let hostSum = try Testbed.mustSh("sha256sum /var/tmp/e2e-cp-src/sub/data").stdout.prefix(64)
            #expect(guestSum == hostSum)

            // And back out of the running machine, every detail intact.
            try Testbed.mustSh("rm -rf /var/tmp/e2e-cp-back")
            let back = try Testbed.nspawnctl("copy-from", "e2e-cp", "/srv/tree", "/var/tmp/e2e-cp-back")
            #expect(back.status == Exit.ok, "\(back)")
            #expect(try CopyFixtures.describe("/var/tmp/e2e-cp-back") == expected)

            // Without DESTINATION the path is the same on both sides.
            try Testbed.mustSh("printf one > /tmp/e2e-cp-single")
            #expect(try Testbed.nspawnctl("copy-to", "e2e-cp", "/tmp/e2e-cp-single").status == Exit.ok)
            #expect(try Testbed.mustSh("cat /var/lib/machines/e2e-cp/tmp/e2e-cp-single").stdout == "one")

            // An existing destination: a conflict naming it, unless --replace, which swaps atomically.
            try Testbed.mustSh("printf two > /tmp/e2e-cp-single")
            let refused = try Testbed.nspawnctl("copy-to", "e2e-cp", "/tmp/e2e-cp-single")
            #expect(refused.status == Exit.conflict, "\(refused)")
            #expect(refused.stderr.contains("e2e-cp:/tmp/e2e-cp-single"), "\(refused)")
            #expect(try Testbed.mustSh("cat /var/lib/machines/e2e-cp/tmp/e2e-cp-single").stdout == "one")
            #expect(try Testbed.nspawnctl("copy-to", "--replace", "e2e-cp", "/tmp/e2e-cp-single").status == Exit.ok)
            #expect(try Testbed.mustSh("cat /var/lib/machines/e2e-cp/tmp/e2e-cp-single").stdout == "two")
            try Testbed.mustSh("rm /var/tmp/e2e-cp-src/sub/relative && printf new > /var/tmp/e2e-cp-src/added")
            let replaced = try Testbed.nspawnctl("copy-to", "--replace", "e2e-cp", "/var/tmp/e2e-cp-src", "/srv/tree")
            #expect(replaced.status == Exit.ok, "\(replaced)")
            #expect(try CopyFixtures.describe("/var/lib/machines/e2e-cp/srv/tree") == (try CopyFixtures.describe("/var/tmp/e2e-cp-src")))
            let backAgain = try Testbed.nspawnctl("copy-from", "e2e-cp", "/srv/tree/added", "/var/tmp/e2e-cp-back/file")
            #expect(backAgain.status == Exit.conflict && backAgain.stderr.contains("/var/tmp/e2e-cp-back/file"), "\(backAgain)")

            // Nothing half-done is left anywhere.
            #expect(try Testbed.sh("ls -A /var/lib/machines/e2e-cp/srv /var/lib/machines/e2e-cp/tmp /var/tmp | grep nspawnctl-copy || true").trimmed == "")
            // A missing source is bad input; so is a copy through nspawnd, which cannot reach this host's files.
            #expect(try Testbed.nspawnctl("copy-from", "e2e-cp", "/no/such", "/var/tmp/x").status == Exit.invalidInput)
            let api = try Testbed.nspawnctl("copy-to", "--api", "e2e-cp", "/tmp/e2e-cp-single", "/tmp/y")
            #expect(api.status == Exit.invalidInput && api.stderr.contains("local host only"), "\(api)")
            try Testbed.sh("rm -rf /var/tmp/e2e-cp-src /var/tmp/e2e-cp-back /tmp/e2e-cp-single")
        }
    }

    @Test func aGuestSymlinkCannotLeadACopyToTheHostsFiles() throws {
        try CopyFixtures.with(["e2e-cp-esc"]) {
            try Fixture.busybox("e2e-cp-esc")
            let root = "/var/lib/machines/e2e-cp-esc"
            try Testbed.mustSh("""
                set -e
                ln -s /etc \(root)/x && ln -s ../../../../../etc \(root)/up && ln -s /etc/shadow \(root)/leak
                printf guest-hostname > \(root)/etc/hostname
                printf payload > /var/tmp/e2e-payload
                """)
            let hostEtc = try Testbed.mustSh("ls -la --time-style=full-iso /etc | sha256sum; sha256sum /etc/shadow /etc/passwd").stdout

            // Writing through the links lands in the guest's /etc, never the host's.
            for path in ["/x/e2e-evil", "/up/e2e-evil2"] {
                let copy = try Testbed.nspawnctl("copy-to", "e2e-cp-esc", "/var/tmp/e2e-payload", path)
                #expect(copy.status == Exit.ok, "\(copy)")
            }
            #expect(try Testbed.mustSh("cat \(root)/etc/e2e-evil \(root)/etc/e2e-evil2").stdout == "payloadpayload")
            #expect(try Testbed.sh("ls /etc/e2e-evil /etc/e2e-evil2 2>&1").status != 0)
            // Reading through them reads the guest's files; a link itself is copied as a link.
            try Testbed.mustSh("rm -f /var/tmp/e2e-got /var/tmp/e2e-leak")
            #expect(try Testbed.nspawnctl("copy-from", "e2e-cp-esc", "/x/hostname", "/var/tmp/e2e-got").status == Exit.ok)
            #expect(try Testbed.mustSh("cat /var/tmp/e2e-got").stdout == "guest-hostname")
            let shadow = try Testbed.nspawnctl("copy-from", "e2e-cp-esc", "/x/shadow", "/var/tmp/e2e-got-shadow")
            #expect(shadow.status == Exit.invalidInput, "the guest has no /etc/shadow: \(shadow)")
            #expect(try Testbed.nspawnctl("copy-from", "e2e-cp-esc", "/leak", "/var/tmp/e2e-leak").status == Exit.ok)
            #expect(try Testbed.mustSh("stat -c %F /var/tmp/e2e-leak; readlink /var/tmp/e2e-leak").stdout == "symbolic link\n/etc/shadow\n")
            // Over a guest symlink with --replace: the link is replaced in the guest, its target untouched.
            #expect(try Testbed.nspawnctl("copy-to", "--replace", "e2e-cp-esc", "/var/tmp/e2e-payload", "/leak").status == Exit.ok)
            #expect(try Testbed.mustSh("stat -c %F \(root)/leak").stdout == "regular file\n")
            #expect(try Testbed.mustSh("ls -la --time-style=full-iso /etc | sha256sum; sha256sum /etc/shadow /etc/passwd").stdout == hostEtc)
            try Testbed.sh("rm -f /var/tmp/e2e-payload /var/tmp/e2e-got /var/tmp/e2e-leak")
        }
    }

    /// nspawn's chown mode moves a -U machine's tree to a range base; the copy follows it.
    @Test func aChownedUserNamespacedMachineSeesItsOwnUsersOnCopiedFiles() throws {
        try CopyFixtures.with(["e2e-cp-userns"]) {
            try Fixture.busybox("e2e-cp-userns")
            let root = "/var/lib/machines/e2e-cp-userns"
            try Testbed.mustSh("""
                set -e
                printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1000000\\nPrivateUsers=pick\\nPrivateUsersOwnership=chown\\n' > /etc/systemd/nspawn/e2e-cp-userns.nspawn
                mkdir -p \(root)/srv && printf mine > /var/tmp/e2e-root-owned && chown 0:0 /var/tmp/e2e-root-owned
                machinectl start e2e-cp-userns
                """)
            let base = try Testbed.mustSh("stat -c %u \(root)").trimmed
            #expect(base != "0" && (UInt32(base) ?? 1) % 65536 == 0, "nspawn chowned the root to a range base: \(base)")
            let copy = try Testbed.nspawnctl("copy-to", "--json", "e2e-cp-userns", "/var/tmp/e2e-root-owned", "/srv/f")
            #expect(copy.status == Exit.ok, "\(copy)")
            #expect(copy.stdout.contains("\"id_shift\" : \(base)"), "\(copy.stdout)")
            #expect(try Testbed.mustSh("stat -c %u:%g \(root)/srv/f").trimmed == "\(base):\(base)")
            let guest = try CopyFixtures.inGuest("e2e-cp-userns", "stat -c %u:%g / /srv/f")
            #expect(guest.stdout == "0:0\n0:0\n", "\(guest)")
            // Out again: the guest's root is the host's root, its user 33 the host's 33.
            try Testbed.mustSh("chown \(UInt32(base)! + 33):\(UInt32(base)! + 33) \(root)/srv/f && rm -f /var/tmp/e2e-out")
            #expect(try Testbed.nspawnctl("copy-from", "e2e-cp-userns", "/srv/f", "/var/tmp/e2e-out").status == Exit.ok)
            #expect(try Testbed.mustSh("stat -c %u:%g /var/tmp/e2e-out").trimmed == "33:33")
            try Testbed.sh("rm -f /var/tmp/e2e-root-owned /var/tmp/e2e-out")
        }
    }

    /// A booted Debian with systemd-nspawn@'s -U (idmapped here): checked from inside with
    /// systemd-run -M, then snapshots of its root: taken running, restore refused while it runs,
    /// restored stopped, gone with the machine.
    @Test func aBootedUserNamespacedMachineAndItsSnapshots() throws {
        try CopyFixtures.with(["e2e-cp-deb", "e2e-cp-deb2"]) {
            try Fixture.systemdRoot("e2e-cp-deb")
            try Testbed.mustSh("""
                printf 'root file\\n' > /var/tmp/e2e-host-root && chown 0:0 /var/tmp/e2e-host-root
                machinectl start e2e-cp-deb
                for i in $(seq 1 100); do systemd-run -M e2e-cp-deb --quiet --pipe --wait true 2>/dev/null && break; sleep 0.2; done
                """)
            #expect(try Testbed.nspawnctl("copy-to", "e2e-cp-deb", "/var/tmp/e2e-host-root", "/root/from-host").status == Exit.ok)
            let seen = try Testbed.sh("systemd-run -M e2e-cp-deb --quiet --pipe --wait stat -c %u:%g / /root/from-host")
            #expect(seen.stdout == "0:0\n0:0\n", "\(seen)")
            let onDisk = try Testbed.mustSh("stat -c %u:%g /var/lib/machines/e2e-cp-deb /var/lib/machines/e2e-cp-deb/root/from-host").stdout
            let rootOwner = onDisk.split(separator: "\n").first.map(String.init) ?? "?"
            #expect(onDisk == "\(rootOwner)\n\(rootOwner)\n", "the file is owned as the root directory is: \(onDisk)")

            // A snapshot of the running machine.
            let settings = try Testbed.mustSh("sha256sum /etc/systemd/nspawn/* 2>/dev/null; systemctl is-enabled systemd-nspawn@e2e-cp-deb.service || true").stdout
            let taken = try Testbed.nspawnctl("snapshot", "--json", "e2e-cp-deb", "before")
            #expect(taken.status == Exit.ok, "\(taken)")
            struct Taken: Decodable { struct Info: Decodable { var name: String; var method: String; var path: String }; var snapshot: Info; var method: String }
            let info = try decodeJSON(Taken.self, from: taken.stdout)
            #expect(info.snapshot.name == "before" && info.method == "copy", "ext4 has neither btrfs snapshots nor reflinks: \(taken.stdout)")
            #expect(info.snapshot.path == "\(CopyFixtures.snapshots)/e2e-cp-deb/before")
            let restoreRunning = try Testbed.nspawnctl("restore", "e2e-cp-deb", "before")
            #expect(restoreRunning.status == Exit.conflict, "\(restoreRunning)")

            // Change, stop, restore: the snapshot's content is back, settings untouched.
            try Testbed.mustSh("""
                systemd-run -M e2e-cp-deb --quiet --pipe --wait sh -c 'echo changed > /etc/motd; rm /etc/debian_version; touch /root/added'
                machinectl poweroff e2e-cp-deb
                for i in $(seq 1 150); do machinectl show e2e-cp-deb >/dev/null 2>&1 || break; sleep 0.2; done
                """)
            let restored = try Testbed.nspawnctl("restore", "e2e-cp-deb", "before")
            #expect(restored.status == Exit.ok, "\(restored)")
            let root = "/var/lib/machines/e2e-cp-deb"
            #expect(try Testbed.mustSh("cmp /testbed/image/etc/motd \(root)/etc/motd && cmp /testbed/image/etc/debian_version \(root)/etc/debian_version && test ! -e \(root)/root/added && cat \(root)/root/from-host").stdout == "root file\n")
            #expect(try Testbed.mustSh("sha256sum /etc/systemd/nspawn/* 2>/dev/null; systemctl is-enabled systemd-nspawn@e2e-cp-deb.service || true").stdout == settings)
            #expect(try Testbed.sh("ls -A /var/lib/machines | grep nspawnctl-restore || true").trimmed == "")
            // It still boots.
            try Testbed.mustSh("machinectl start e2e-cp-deb && for i in $(seq 1 100); do systemd-run -M e2e-cp-deb --quiet --pipe --wait true 2>/dev/null && break; sleep 0.2; done")
            #expect(try Testbed.sh("systemd-run -M e2e-cp-deb --quiet --pipe --wait cat /root/from-host").stdout == "root file\n")
            try Testbed.mustSh("machinectl terminate e2e-cp-deb; for i in $(seq 1 100); do machinectl show e2e-cp-deb >/dev/null 2>&1 || break; sleep 0.1; done")

            // Rename carries the snapshots; remove takes them away.
            #expect(try Testbed.nspawnctl("rename", "e2e-cp-deb", "e2e-cp-deb2").status == Exit.ok)
            #expect(try Testbed.nspawnctl("snapshots", "e2e-cp-deb2").stdout.contains("before"))
            #expect(try Testbed.nspawnctl("remove", "e2e-cp-deb2").status == Exit.ok)
            #expect(try Testbed.sh("test -e \(CopyFixtures.snapshots)/e2e-cp-deb2 || test -e \(CopyFixtures.snapshots)/e2e-cp-deb").status != 0)
            try Testbed.sh("rm -f /var/tmp/e2e-host-root")
        }
    }

    @Test func snapshotsAreReadOnlyHiddenFromMachinedAndRestoreTheRoot() throws {
        try CopyFixtures.with(["e2e-snap"]) {
            try Fixture.busybox("e2e-snap")
            let root = "/var/lib/machines/e2e-snap"
            try Testbed.mustSh("printf v1 > \(root)/etc/version")
            let first = try Testbed.nspawnctl("snapshot", "e2e-snap", "v1")
            #expect(first.status == Exit.ok && first.stdout.contains("by copy"), "\(first)")
            // The default name is the UTC time.
            let stamped = try Testbed.nspawnctl("snapshot", "--json", "e2e-snap")
            #expect(stamped.status == Exit.ok, "\(stamped)")
            let stamp = try #require(stamped.stdout.firstMatch(of: /"name" : "(\d{8}-\d{6})"/)?.1)
            #expect(try Testbed.nspawnctl("snapshot", "e2e-snap", "v1").status == Exit.conflict)
            #expect(try Testbed.nspawnctl("snapshot", "e2e-snap", ".hidden").status == Exit.invalidInput)
            #expect(try Testbed.nspawnctl("snapshot", "e2e-snap", "../../etc").status == Exit.invalidInput)

            // Read-only: the top directory is immutable, as machined marks read-only images.
            let snapshot = "\(CopyFixtures.snapshots)/e2e-snap/v1"
            #expect(try Testbed.mustSh("lsattr -d \(snapshot)").stdout.prefix(20).contains("i"))
            #expect(try Testbed.sh("touch \(snapshot)/new").status != 0)
            // machined lists none of it, not even with --all.
            #expect(try Testbed.mustSh("machinectl list-images --all --no-legend").stdout.contains("snapshots") == false)
            #expect(try Fixture.imageNames().contains("e2e-snap"))

            let listed = try Testbed.nspawnctl("snapshots", "--json", "e2e-snap")
            struct Listed: Decodable { var name: String; var method: String; var created: Date? }
            let snapshots = try decodeJSON([Listed].self, from: listed.stdout)
            #expect(Set(snapshots.map(\.name)) == ["v1", String(stamp)] && snapshots.allSatisfy { $0.method == "copy" && $0.created != nil }, "\(listed)")
            let status = try Testbed.nspawnctl("status", "e2e-snap")
            #expect(status.stdout.contains("Snapshots: ") && status.stdout.contains("v1 ("), "\(status)")
            #expect(try Testbed.nspawnctl("status", "--json", "e2e-snap").stdout.contains("\"method\" : \"copy\""))

            try Testbed.mustSh("printf v2 > \(root)/etc/version && printf x > \(root)/etc/added && rm \(root)/bin/cat")
            #expect(try Testbed.nspawnctl("restore", "e2e-snap", "v1").status == Exit.ok)
            #expect(try Testbed.mustSh("cat \(root)/etc/version; test ! -e \(root)/etc/added && test -L \(root)/bin/cat && echo ok").stdout == "v1ok\n")
            let missing = try Testbed.nspawnctl("restore", "e2e-snap", "nope")
            #expect(missing.status == Exit.notFound && missing.stderr.contains("machine 'e2e-snap' has no snapshot 'nope'"), "\(missing)")
            #expect(try Testbed.nspawnctl("snapshot-remove", "e2e-snap", "nope").status == Exit.notFound)

            try Testbed.mustSh("machinectl start e2e-snap")
            #expect(try Testbed.nspawnctl("restore", "e2e-snap", "v1").status == Exit.conflict)
            // Until systemd-nspawn itself is gone too: it drops its image lock (.#e2e-snap.lck) last.
            try Testbed.mustSh("""
                machinectl terminate e2e-snap; for i in $(seq 1 100); do machinectl show e2e-snap >/dev/null 2>&1 || break; sleep 0.1; done
                for i in $(seq 1 100); do systemctl -q is-active systemd-nspawn@e2e-snap.service || break; sleep 0.1; done
                """)

            #expect(try Testbed.nspawnctl("snapshot-remove", "e2e-snap", "v1").status == Exit.ok)
            #expect(try Testbed.sh("test -e \(snapshot)").status != 0)
            #expect(try Testbed.nspawnctl("remove", "e2e-snap").status == Exit.ok)
            #expect(try Testbed.sh("test -e \(CopyFixtures.snapshots)/e2e-snap").status != 0)
            let leftovers = try ImageFixtures.leftovers()
            #expect(leftovers == "", "the shared snapshot directory goes with the last snapshot: \(leftovers)")
        }
    }
}
