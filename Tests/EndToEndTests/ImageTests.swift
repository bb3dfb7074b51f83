import Foundation
import Testing

/// Fixture tarballs made inside the testbed, once per run, under /var/tmp/fx:
/// - arch.tar.zst: "Arch-shaped": top directory root.x86_64/, zstd, the testbed's Debian root with
///   Debian's pacman-package-manager and archlinux-keyring, an Arch-like mirrorlist and securetty,
///   and a file carrying a security.capability xattr;
/// - small.tar.gz: a small root;
/// - keyring.gpg and *.sig: a throw-away gpg key and detached signatures made with it;
/// - a busybox httpd on 127.0.0.1:8088 serving them from /var/tmp/fx-www (the testbed has no other network).
enum ImageFixtures {
    nonisolated(unsafe) static var ready = false

    static func prepare() throws {
        if ready, try Testbed.sh("test -s /var/tmp/fx/arch.tar.zst && test -s /var/tmp/fx/keyring.gpg").status == 0 { return }
        try Testbed.mustSh(#"""
            set -e
            fx=/var/tmp/fx
            rm -rf $fx && mkdir -p $fx/extra/root.x86_64/usr/local/bin $fx/extra/root.x86_64/etc/pacman.d $fx/small/etc
            cp /bin/true $fx/extra/root.x86_64/usr/local/bin/capped
            setcap cap_net_raw+ep $fx/extra/root.x86_64/usr/local/bin/capped
            printf '## Arch Linux repository mirrorlist\n#Server = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n' \
                > $fx/extra/root.x86_64/etc/pacman.d/mirrorlist
            printf 'console\ntty1\n' > $fx/extra/root.x86_64/etc/securetty
            tar --xattrs --xattrs-include='*' --numeric-owner -C /testbed --transform 's,^image,root.x86_64,' -cf - image \
                -C $fx/extra root.x86_64/usr/local/bin/capped root.x86_64/etc/pacman.d/mirrorlist root.x86_64/etc/securetty \
                | zstd -q -T0 -3 > $fx/arch.tar.zst
            printf 'ID=small\n' > $fx/small/etc/os-release
            tar -C $fx/small -czf $fx/small.tar.gz .
            export GNUPGHOME=$(mktemp -d)
            gpg --batch -q --passphrase '' --quick-gen-key 'nspawnctl test <test@invalid>' ed25519 sign never 2>/dev/null
            gpg --batch -q --export > $fx/keyring.gpg
            for f in arch.tar.zst small.tar.gz; do gpg --batch -q --detach-sign -o $fx/$f.sig $fx/$f; done
            gpg --batch -q --detach-sign -o $fx/wrong-data.sig $fx/keyring.gpg
            other=$(mktemp -d); GNUPGHOME=$other gpg --batch -q --passphrase '' --quick-gen-key 'other <o@invalid>' ed25519 sign never 2>/dev/null
            GNUPGHOME=$other gpg --batch -q --detach-sign -o $fx/unknown-key.sig $fx/small.tar.gz
            # gpg's agents would otherwise outlive the script, holding descriptors the harness waits on.
            gpgconf --homedir "$GNUPGHOME" --kill gpg-agent; gpgconf --homedir "$other" --kill gpg-agent
            rm -rf "$GNUPGHOME" "$other"
            # The served directory is never replaced, so a server left by an earlier run still serves it.
            www=/var/tmp/fx-www
            mkdir -p $www && rm -rf $www/* && mkdir -p $www/arch/iso/latest
            ln $fx/arch.tar.zst $www/arch/iso/latest/archlinux-bootstrap-x86_64.tar.zst
            ln $fx/arch.tar.zst.sig $www/arch/iso/latest/archlinux-bootstrap-x86_64.tar.zst.sig
            for f in small.tar.gz small.tar.gz.sig wrong-data.sig unknown-key.sig; do ln $fx/$f $www/$f; done
            if ! busybox wget -q -O /dev/null http://127.0.0.1:8088/small.tar.gz; then
                # As a service: a child of ours would inherit the descriptor by which the harness
                # (Foundation's Process) learns that this script ended, and keep it waiting.
                systemd-run --quiet --collect --unit=nspawnctl-fx-httpd busybox httpd -f -p 127.0.0.1:8088 -h $www
                for i in $(seq 1 50); do busybox wget -q -O /dev/null http://127.0.0.1:8088/small.tar.gz && break; sleep 0.1; done
            fi
            """#)
        ready = true
    }

    static func leftovers() throws -> String {
        try Testbed.sh("ls -A /var/lib/machines | grep '^\\.#' || true").trimmed
    }
}

extension EndToEndTests {
    @Test func importedArchShapedImageIsListedKeepsCapabilitiesAndBoots() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["imp1"]) {
            let result = try Testbed.nspawnctl("import", "--json", "imp1", "/var/tmp/fx/arch.tar.zst")
            #expect(result.status == 0, "\(result)")
            struct Imported: Decodable {
                var strippedDirectory: String?
                var compression: [String]
                var entries: Int
            }
            let json = try decodeJSON(Imported.self, from: result.stdout)
            #expect(json.strippedDirectory == "root.x86_64")
            #expect(json.compression == ["zstd"])
            #expect(json.entries > 5000)
            #expect(try Fixture.imageNames().contains("imp1"))
            let caps = try Testbed.sh("getfattr --absolute-names -n security.capability -e hex /var/lib/machines/imp1/usr/local/bin/capped; getcap /var/lib/machines/imp1/usr/local/bin/capped")
            #expect(caps.stdout.contains("security.capability=0x"))
            #expect(caps.stdout.contains("cap_net_raw=ep"))
            #expect(try Testbed.nspawnctl("start", "imp1").status == 0)
            #expect(try Fixture.machinedState("imp1") == "running")
            #expect(try Testbed.nspawnctl("stop", "imp1").status == 0)
        }
        #expect(try ImageFixtures.leftovers().isEmpty)
    }

    @Test func downloadsAreVerifiedBeforeTheImageIsVisible() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["dl1", "dl2"]) {
            let url = "http://127.0.0.1:8088/small.tar.gz"
            let sha = try Testbed.sh("sha256sum /var/tmp/fx/small.tar.gz | cut -c1-64").trimmed
            let good = try Testbed.nspawnctl("import", "--json", "dl1", url, "--signature", url + ".sig",
                                             "--keyring", "/var/tmp/fx/keyring.gpg", "--checksum", "sha256:" + sha)
            #expect(good.status == 0, "\(good)")
            #expect(good.stdout.contains("\"signature\"") && good.stdout.contains("\"sha256\""))
            #expect(try Fixture.imageNames().contains("dl1"))

            for signature in ["wrong-data.sig", "unknown-key.sig"] {
                let bad = try Testbed.nspawnctl("import", "dl2", url, "--signature", "http://127.0.0.1:8088/" + signature,
                                                "--keyring", "/var/tmp/fx/keyring.gpg")
                #expect(bad.status == 6, "\(signature): \(bad)")
                #expect(bad.stderr.contains("signature check of '\(url)'"), "\(bad)")
            }
            let wrongSum = try Testbed.nspawnctl("import", "dl2", url, "--checksum", "sha256:" + String(repeating: "0", count: 64))
            #expect(wrongSum.status == 6 && wrongSum.stderr.contains("checksum mismatch"), "\(wrongSum)")
            let missing = try Testbed.nspawnctl("import", "dl2", "http://127.0.0.1:8088/nope.tar.gz")
            #expect(missing.status == 1 && missing.stderr.contains("nope.tar.gz") && missing.stderr.contains("404"), "\(missing)")
            let refused = try Testbed.nspawnctl("import", "dl2", "http://127.0.0.1:1/x.tar")
            #expect(refused.status == 1, "\(refused)")
            #expect(!(try Fixture.imageNames().contains("dl2")))
        }
        #expect(try ImageFixtures.leftovers().isEmpty)
    }

    @Test func bootstrapRunsTheArchPostStepsWithTheRealPacmanKey() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["arch1", "child01"]) {
            let result = try Testbed.nspawnctl("bootstrap", "archlinux", "arch1", "--mirror", "http://127.0.0.1:8088/arch",
                                               "--keyring", "/var/tmp/fx/keyring.gpg", "--quiet")
            #expect(result.status == 0, "\(result)")
            let root = "/var/lib/machines/arch1"
            #expect(try Testbed.sh("head -n1 \(root)/etc/pacman.d/mirrorlist").trimmed == "Server = http://127.0.0.1:8088/arch/$repo/os/$arch")
            #expect(try Testbed.sh("grep -x '#CheckSpace' \(root)/etc/pacman.conf").status == 0)
            #expect(try Testbed.sh("grep -x 'pts/0' \(root)/etc/securetty").status == 0)
            #expect(try Testbed.sh("cat \(root)/etc/hostname").trimmed == "arch1")
            #expect(try Testbed.sh("stat -c %s \(root)/etc/machine-id").trimmed == "0")
            // pacman-key --init made a keyring with a local key; --populate imported Arch's keys into it.
            let keys = try Testbed.sh("gpg --homedir \(root)/etc/pacman.d/gnupg --list-keys 2>/dev/null | grep -c '^pub'")
            #expect((Int(keys.trimmed) ?? 0) > 50, "\(keys)")

            // The classic name with no NAME takes the next free childNN; offline with a local tarball.
            let unverified = try Testbed.run(["/usr/local/bin/nspawn-arch", "--tarball", "/var/tmp/fx/arch.tar.zst"])
            #expect(unverified.status == 2 && unverified.stderr.contains("--no-verify"), "\(unverified)")
            let classic = try Testbed.run(["/usr/local/bin/nspawn-arch", "--tarball", "/var/tmp/fx/arch.tar.zst",
                                           "--signature", "/var/tmp/fx/arch.tar.zst.sig", "--keyring", "/var/tmp/fx/keyring.gpg", "-q"])
            #expect(classic.status == 0, "\(classic)")
            #expect(try Fixture.imageNames().contains("child01"))
        }
        #expect(try ImageFixtures.leftovers().isEmpty)
    }

    @Test func killedImportsLeaveNothingVisibleAndTheNextOneSucceeds() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["killed"]) {
            // Feed 20 MB, then stall (for at most 6 s), so the kill lands mid-extraction.
            let feed = "timeout 6 sh -c 'dd bs=1M count=20 iflag=fullblock status=none; sleep 60' < /var/tmp/fx/arch.tar.zst"
            let leftover = "ls -A /var/lib/machines | grep -c '^\\.#import\\..*\\.killed$'"
            // kill -9 of nspawnctl: its nspawnctl-images child gets SIGTERM as its parent dies,
            // and cancels, removing what it wrote.
            let parentKilled = try Testbed.sh("""
                \(feed) | nspawnctl import killed - &
                sleep 2
                pkill -KILL -x nspawnctl
                wait || true
                for i in $(seq 1 50); do pgrep -f '^/usr/local/bin/nspawnctl-images import' >/dev/null || break; sleep 0.1; done
                \(leftover)
                """)
            #expect(parentKilled.trimmed == "0", "\(parentKilled)")
            // kill -9 of the child that does the work: a crash. Its directory stays, hidden.
            let childKilled = try Testbed.sh("""
                \(feed) | nspawnctl import killed - 2>/tmp/e2e-killed.err &
                sleep 2
                pkill -KILL -f '^/usr/local/bin/nspawnctl-images import'
                wait $!; echo "status=$?"; cat /tmp/e2e-killed.err
                \(leftover)
                """)
            #expect(childKilled.stdout.contains("status=1") && childKilled.stdout.contains("signal 9"), "\(childKilled)")
            #expect(childKilled.stdout.hasSuffix("1\n"), "\(childKilled)")
            #expect(!(try Fixture.imageNames().contains("killed")))
            #expect(!(try Testbed.nspawnctl("ls", "--json").stdout.contains("\"killed\"")))

            // SIGTERM cancels cleanly: exit 130 and nothing at all is left of this attempt.
            let terminated = try Testbed.sh("""
                timeout 6 sh -c 'dd bs=1M count=20 iflag=fullblock status=none; sleep 60' < /var/tmp/fx/arch.tar.zst | nspawnctl import killed - &
                sleep 2
                pkill -TERM -x nspawnctl
                wait $!; echo "status=$?"
                """)
            #expect(terminated.stdout.contains("status=130"), "\(terminated)")
            // The cancelled attempt held the name lock, so it also removed the kill -9 leftover.
            #expect(try ImageFixtures.leftovers().isEmpty)

            let again = try Testbed.nspawnctl("import", "--json", "killed", "/var/tmp/fx/small.tar.gz")
            #expect(again.status == 0, "\(again)")
            #expect(try ImageFixtures.leftovers().isEmpty)
        }
    }

    @Test func concurrentImportsOfOneNameHaveExactlyOneWinner() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["same"]) {
            let result = try Testbed.sh("""
                { dd bs=1M count=5 iflag=fullblock status=none; sleep 2; cat; } < /var/tmp/fx/arch.tar.zst | nspawnctl import -q same - &
                first=$!
                sleep 0.5
                nspawnctl import -q same /var/tmp/fx/small.tar.gz; echo "second=$?"
                wait $first; echo "first=$?"
                """)
            #expect(result.stdout.contains("second=5"), "\(result)")
            #expect(result.stdout.contains("first=0"), "\(result)")
            #expect(result.stderr.contains("busy"), "\(result)")
            #expect(try Testbed.sh("test -d /var/lib/machines/same/usr").status == 0)

            // --force replaces atomically; a running machine's image is never replaced.
            #expect(try Testbed.nspawnctl("import", "-q", "--force", "same", "/var/tmp/fx/small.tar.gz").status == 0)
            #expect(try Testbed.sh("cat /var/lib/machines/same/etc/os-release").trimmed == "ID=small")
        }
        #expect(try ImageFixtures.leftovers().isEmpty)
    }

    @Test func progressFollowsTheOutputMode() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["prog1", "prog2", "prog3", "prog4"]) {
            let size = try Testbed.sh("stat -c %s /var/tmp/fx/arch.tar.zst").trimmed
            // --json: progress as JSON lines on stderr, the result alone on stdout.
            let json = try Testbed.nspawnctl("import", "--json", "prog1", "/var/tmp/fx/arch.tar.zst")
            #expect(json.status == 0, "\(json)")
            let lines = json.stderr.split(separator: "\n")
            #expect(lines.count >= 2, "\(json.stderr)")
            #expect(lines.allSatisfy { $0.hasPrefix("{\"event\":\"progress\"") }, "\(json.stderr)")
            #expect(lines.last?.contains("\"bytes\":\(size),") == true && lines.last?.contains("\"phase\":\"install\"") == true)
            #expect(json.stdout.contains("\"name\" : \"prog1\""))

            // Not a terminal: one summary line, no bar.
            let plain = try Testbed.nspawnctl("import", "prog2", "/var/tmp/fx/arch.tar.zst")
            #expect(plain.status == 0 && plain.stdout.isEmpty)
            #expect(plain.stderr.hasPrefix("imported 'prog2'") && !plain.stderr.contains("\r"), "\(plain)")

            // A terminal (script(1) gives it one): a redrawn bar with phase, percentage and ETA.
            let tty = try Testbed.sh("script -qec 'nspawnctl import prog3 /var/tmp/fx/arch.tar.zst' /dev/null")
            #expect(tty.status == 0, "\(tty)")
            #expect(tty.stdout.contains("\r") && tty.stdout.contains("extract") && tty.stdout.contains("%")
                    && tty.stdout.contains("ETA"), "\(tty)")

            let quiet = try Testbed.sh("script -qec 'nspawnctl import -q prog4 /var/tmp/fx/small.tar.gz' /dev/null")
            #expect(quiet.status == 0 && quiet.trimmed.isEmpty, "\(quiet)")
        }
    }
}