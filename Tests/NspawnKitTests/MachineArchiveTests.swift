import FoundationEssentials
import SystemPackage
import Testing
@testable import NspawnKit
@testable import NspawnImages
#if canImport(Glibc)
import Glibc
#endif

/// The part digest of machine archives against GNU tar: a tree archived by `writeTree` and
/// unpacked by tar (a tool we did not write) digests the same, and every kind of change shows.
/// Runs as root (CI does): it sets owners.
@Suite(.serialized) struct MachineArchiveTests {
    let scratch = "/var/tmp/nspawnctl-archive-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"

    func makeTree(_ root: String) throws {
        _ = try shell("""
            set -e
            mkdir -p \(root)/etc \(root)/srv/deep
            printf 'secret\\n' > \(root)/etc/shadow && chmod 0640 \(root)/etc/shadow && chown 1234:5678 \(root)/etc/shadow
            head -c 300000 /dev/urandom > \(root)/srv/data
            ln \(root)/srv/data \(root)/srv/deep/data-link
            ln -s ../etc/shadow \(root)/srv/to-shadow
            setfattr -n user.origin -v test \(root)/etc/shadow
            touch -d '2003-04-05 06:07:08.123456789' \(root)/srv/data
            """)
    }

    @Test func aTreeUnpackedByGNUTarDigestsTheSameAndEveryChangeShows() throws {
        defer { _ = try? shell("rm -rf --one-file-system \(scratch)") }
        let tree = "\(scratch)/tree"
        try makeTree(tree)
        let archive = "\(scratch)/tree.tar.zst"
        let fd = try FileDescriptor.open(archive, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        let part: ExportPart
        do {
            defer { try? fd.close() }
            let writer = try ArchiveFileWriter(descriptor: fd, compression: .zstd, label: archive)
            part = try MachineArchive.writeTree(tree, as: "rootfs", part: "rootfs", to: writer, isCancelled: { false })
            try writer.close()
        }
        #expect(part.sha256 == (try TreeDigest.of(tree)).finalize())
        #expect(part.files == 8, "the root, 3 directories, 2 files, a hard link and a symlink")
        #expect(part.bytes == 300_007, "the hard-linked data once")

        _ = try shell("mkdir \(scratch)/out && tar --zstd --xattrs --xattrs-include='*' --numeric-owner -xpf \(archive) -C \(scratch)/out")
        let unpacked = "\(scratch)/out/rootfs"
        #expect((try TreeDigest.of(unpacked)).finalize() == part.sha256, "GNU tar's unpacking digests the same")
        let kept = try shell("stat -c '%h' \(unpacked)/srv/deep/data-link; stat -c '%u:%g %a' \(unpacked)/etc/shadow")
        #expect(kept == "2\n1234:5678 640", "the hard link and the owner and mode: \(kept)")

        // A faithful copy (cp -a) digests the same, so each change below is what shows.
        _ = try shell("cp -a \(unpacked) \(scratch)/copy")
        #expect((try TreeDigest.of("\(scratch)/copy")).finalize() == part.sha256)
        for change in ["printf x >> \(unpacked)/srv/data", "chmod 0600 \(unpacked)/etc/shadow", "chown 1:1 \(unpacked)/etc/shadow",
                       "setfattr -n user.origin -v other \(unpacked)/etc/shadow", "touch -d '2004-01-01' \(unpacked)/srv/deep",
                       "ln -sf ../etc \(unpacked)/srv/to-shadow", "touch \(unpacked)/srv/new"] {
            _ = try shell("rm -rf \(scratch)/changed && cp -a \(unpacked) \(scratch)/changed && \(change.replacingOccurrences(of: unpacked, with: "\(scratch)/changed"))")
            #expect((try TreeDigest.of("\(scratch)/changed")).finalize() != part.sha256, "\(change) shows in the digest")
        }
    }
}
