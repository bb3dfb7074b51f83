import Foundation
import Testing

/// `status --json` as far as a disk limit shows in it.
private struct DiskStatusJSON: Decodable {
    struct Disk: Decodable {
        var used: UInt64?
        var limit: UInt64?
        var method: String
    }
    var disk: Disk?
    var pendingResize: PendingName?
    struct PendingName: Decodable { var to: String }
}

/// A flavor's DiskMax= on the file systems that can hold a machine to it (each its own testbed,
/// with /var/lib/machines loop-mounted), and the refusal on those that cannot.
extension EndToEndTests {
    private static let diskFlavors = [("e2e-disk16", "DiskMax=16M"), ("e2e-disk64", "DiskMax=64M"), ("e2e-disk256", "DiskMax=256M\nMemoryMax=1G")]

    /// A busybox base with the tools a guest needs to fill its disk, and the test's flavors.
    private static func diskFixtures(base: String) throws {
        try Fixture.busybox(base)
        try Testbed.mustSh("""
            set -e
            for tool in dd rm sync; do ln -sf busybox /var/lib/machines/\(base)/bin/$tool; done
            mkdir -p /etc/nspawnctl/flavors
            """ + diskFlavors.map { "\nprintf '[Flavor]\\n\($0.1)\\n' > /etc/nspawnctl/flavors/\($0.0).flavor" }.joined())
    }

    private static func removeDiskFlavors() {
        _ = try? Testbed.sh("rm -f " + diskFlavors.map { "/etc/nspawnctl/flavors/\($0.0).flavor" }.joined(separator: " "))
    }

    /// On the testbed for `fileSystem`: a base and the flavors, then `create PREFIX-a --image
    /// PREFIX-base --flavor e2e-disk64`, whose result `body` gets with the names (PREFIX-b is free
    /// for a second machine). Everything goes again afterwards.
    private static func withLimitedMachine(on fileSystem: String, prefix: String,
                                           _ body: (_ base: String, _ limited: String, _ other: String, _ created: CommandResult) throws -> Void) throws {
        let (base, limited, other) = ("\(prefix)-base", "\(prefix)-a", "\(prefix)-b")
        try Testbed.withMachinesOn(fileSystem) {
            defer { removeDiskFlavors() }
            try Fixture.with([base, limited, other]) {
                try diskFixtures(base: base)
                try body(base, limited, other, try Testbed.nspawnctl("create", limited, "--image", base, "--flavor", "e2e-disk64"))
            }
        }
    }

    private static func imageLimit(_ name: String) throws -> String {
        try Testbed.run(["machinectl", "show-image", name, "-p", "Limit", "--value"]).trimmed
    }

    private static func diskStatus(_ name: String) throws -> DiskStatusJSON {
        try Testbed.mustSh("sync")
        return try decodeJSON(DiskStatusJSON.self, from: try Testbed.nspawnctl("status", name, "--json").stdout)
    }

    /// The guest writes `megabytes` of zeros to /big.
    private static func fill(_ name: String, megabytes: Int) throws -> CommandResult {
        try Testbed.nspawnctl("exec", name, "--", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=\(megabytes)")
    }

    /// The limit in bytes that the kernel holds the subvolume at `path` (relative to the file
    /// system's top) to, from btrfs-progs on the host; nil when it has none or is gone.
    private static func quotaGroupLimit(_ path: String) throws -> String? {
        let table = try Testbed.runLocal(["/bin/sh", "-c", "btrfs qgroup show -re --raw \(Testbed.hostMachinesDirectory)"])
        let row = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            .first { $0.count >= 6 && $0[0].hasPrefix("0/") && $0[5] == path }
        return row.map { String($0[3]) }
    }

    @Test func onBtrfsAGuestIsHeldToItsDiskMaxAndResizeMovesTheLimit() throws {
        try Self.withLimitedMachine(on: "btrfs", prefix: "e2e-dl") { base, limited, free, created in
            #expect(created.status == Exit.ok, "\(created)")
            #expect(try Self.imageLimit(limited) == "67108864", "machinectl sees machined's limit")
            #expect(try Self.quotaGroupLimit(limited) == "67108864", "the kernel holds the subvolume to it")
            try Testbed.mustSh("nspawnctl create \(free) --image \(base) >/dev/null && nspawnctl start \(limited) \(free)")

            let past = try Self.fill(limited, megabytes: 100)
            #expect(past.status != 0 && past.stderr.contains("Disk quota exceeded"), "\(past)")
            let other = try Self.fill(free, megabytes: 100)
            #expect(other.status == 0, "the machine beside it does not notice: \(other)")
            let status = try Self.diskStatus(limited)
            #expect(status.disk?.method == "btrfs-qgroup" && status.disk?.limit == 64 << 20, "\(String(describing: status.disk))")
            #expect((status.disk?.used ?? 0) > 60 << 20, "\(String(describing: status.disk))")
            #expect(try Testbed.nspawnctl("status", limited).stdout.contains("of 64.0M (btrfs quota group)"))

            // Below what the machine holds, a resize is refused with both numbers and changes nothing.
            let shrink = try Testbed.nspawnctl("resize", limited, "--flavor", "e2e-disk16", "--confirm-after", "1h")
            #expect(shrink.status == Exit.conflict && shrink.stderr.contains("more than the limit of 16777216 bytes (16.0M)")
                    && shrink.stderr.contains("its image holds "), "\(shrink)")
            #expect(try Self.imageLimit(limited) == "67108864" && Self.diskStatus(limited).pendingResize == nil)

            // Up, then a revert that the machine has outgrown, then one that fits.
            try Testbed.mustSh("nspawnctl exec \(limited) -- rm /big")
            let grow = try Testbed.nspawnctl("resize", limited, "--flavor", "e2e-disk256", "--confirm-after", "1h")
            #expect(try grow.status == Exit.ok && Self.imageLimit(limited) == "268435456", "\(grow)")
            #expect(try Self.fill(limited, megabytes: 100).status == 0, "room up to the new limit")
            let outgrown = try Testbed.nspawnctl("resize", "--revert", limited)
            #expect(outgrown.status == Exit.conflict && outgrown.stderr.contains("(64.0M)"), "\(outgrown)")
            #expect(try Self.imageLimit(limited) == "268435456" && Self.diskStatus(limited).pendingResize?.to == "e2e-disk256")
            try Testbed.mustSh("nspawnctl exec \(limited) -- rm /big")
            let revert = try Testbed.nspawnctl("resize", "--revert", limited)
            #expect(try revert.status == Exit.ok && Self.imageLimit(limited) == "67108864", "\(revert)")

            // A rebuilt root is a new subvolume; the limit goes with the machine.
            try Testbed.mustSh("nspawnctl stop \(limited) >/dev/null && nspawnctl rebuild \(limited) >/dev/null")
            #expect(try Self.imageLimit(limited) == "67108864" && Self.quotaGroupLimit(limited) == "67108864")
            let removed = try Testbed.nspawnctl("remove", limited)
            #expect(try removed.status == Exit.ok && Self.quotaGroupLimit(limited) == nil, "its quota group goes with it: \(removed)")

            // With quota groups off, a new limit is refused, naming the fix; nothing is left.
            _ = try Testbed.runLocal(["/bin/sh", "-c", "btrfs quota disable \(Testbed.hostMachinesDirectory)"])
            defer { _ = try? Testbed.runLocal(["/bin/sh", "-c", "btrfs quota enable \(Testbed.hostMachinesDirectory)"]) }
            let off = try Testbed.nspawnctl("config", free, "--flavor", "e2e-disk64")
            #expect(off.status == Exit.conflict && off.stderr.contains("quota groups are off")
                    && off.stderr.contains("'btrfs quota enable /var/lib/machines'"), "\(off)")
            #expect(try Testbed.sh("ls /etc/systemd/system/systemd-nspawn@\(free).service.d 2>&1").status != 0, "no flavor drop-in")
        }
    }

    @Test func onXFSTheLimitIsAProjectQuotaOrRefusedNamingPrjquota() throws {
        try Self.withLimitedMachine(on: "xfs", prefix: "e2e-dlx") { base, limited, free, created in
            let options = try Testbed.runLocal(["/usr/bin/findmnt", "-n", "-o", "OPTIONS", Testbed.hostMachinesDirectory]).trimmed
            guard options.contains("prjquota") else {
                // This kernel cannot (CONFIG_XFS_QUOTA unset): the refusal is the behaviour to check.
                #expect(created.status == Exit.conflict
                        && created.stderr.contains("'/var/lib/machines' is xfs and project quotas are off")
                        && created.stderr.contains("prjquota"), "\(created)")
                try Self.expectNothingLeft(of: limited)
                return
            }
            #expect(created.status == Exit.ok, "\(created)")
            try Testbed.mustSh("nspawnctl create \(free) --image \(base) >/dev/null && nspawnctl start \(limited) \(free)")
            let past = try Self.fill(limited, megabytes: 100)
            #expect(past.status != 0 && (past.stderr.contains("Disk quota exceeded") || past.stderr.contains("No space left")), "\(past)")
            #expect(try Self.fill(free, megabytes: 100).status == 0, "the machine beside it does not notice")
            let status = try Self.diskStatus(limited)
            #expect(status.disk?.method == "project-quota" && status.disk?.limit == 64 << 20, "\(String(describing: status.disk))")
            let report = { try Testbed.runLocal(["/bin/sh", "-c", "xfs_quota -x -c 'report -p -n -b' \(Testbed.hostMachinesDirectory)"]) }
            #expect(try report().stdout.contains("65536"), "xfs_quota shows the 64 MiB hard limit in KiB")
            #expect(try Testbed.nspawnctl("remove", "--force", limited).status == Exit.ok)
            #expect(try !report().stdout.contains("65536"), "the project's limit went with the machine")
        }
    }

    @Test func onPlainExt4ADiskLimitIsRefusedAndNothingChanges() throws {
        try Self.withLimitedMachine(on: "ext4", prefix: "e2e-dle") { base, name, other, created in
            #expect(created.status == Exit.conflict
                    && created.stderr.contains("cannot limit the disk space of machine '\(name)': '/var/lib/machines' is ext4 and project quotas are off")
                    && created.stderr.contains("tune2fs -O project,quota"), "\(created)")
            try Self.expectNothingLeft(of: name)

            // config with settings and a refused flavor writes neither.
            try Testbed.mustSh("nspawnctl create \(other) --image \(base) >/dev/null")
            let before = try Testbed.mustSh("sha256sum /etc/systemd/nspawn/\(other).nspawn").stdout
            let config = try Testbed.nspawnctl("config", other, "--set", "Exec.Hostname=changed", "--flavor", "e2e-disk64")
            #expect(config.status == Exit.conflict && config.stderr.contains("is ext4"), "\(config)")
            #expect(try Testbed.mustSh("sha256sum /etc/systemd/nspawn/\(other).nspawn").stdout == before)
            #expect(try Testbed.sh("ls /etc/systemd/system/systemd-nspawn@\(other).service.d 2>&1").status != 0, "no flavor drop-in")
            // A flavor without DiskMax= works here as anywhere.
            #expect(try Testbed.nspawnctl("config", other, "--flavor", "small").status == Exit.ok)
        }
    }

    private static func expectNothingLeft(of name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try Testbed.run(["machinectl", "show-image", name]).status != 0, "no image", sourceLocation: sourceLocation)
        let files = try Testbed.sh("ls -d /etc/systemd/nspawn/\(name).nspawn /etc/systemd/system/systemd-nspawn@\(name).service.d /var/lib/machines/.#*\(name)* 2>/dev/null; true").trimmed
        #expect(files.isEmpty, "left behind: \(files)", sourceLocation: sourceLocation)
    }
}
