import FoundationEssentials
import SystemPackage
import Testing
@testable import NspawnKit
@testable import NspawnImages
#if canImport(Glibc)
import Glibc
#endif

/// What the parallel writer adds to an import: archive order kept although files are written by
/// several threads, links made only when no writer runs, and bounded memory for large files.
/// Archives are built with Python's tarfile (it writes whatever order and duplicates we ask for);
/// results are checked with stat, sha256sum and readlink.
@Suite(.serialized) struct ParallelExtractionTests {
    let scratch: String
    let store: ImageStore

    init() throws {
        scratch = "/var/tmp/nspawnctl-parallel-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"
        store = ImageStore(directory: scratch + "/machines", lockDirectory: scratch + "/locks")
        try shell("mkdir -p \(scratch)/machines \(scratch)/locks")
    }

    var importer: ImageImporter { ImageImporter(store: store, machineIsRunning: { _ in false }) }

    func cleanUp() { _ = try? shell("rm -rf --one-file-system \(scratch)") }

    /// Writes `tarball` from a Python body that calls add(name, kind, data=b"", link="", mode=None, mtime=0).
    func makeArchive(_ tarball: String, _ body: String) throws {
        let script = """
            import io, os, sys, tarfile
            tar = tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT)
            def add(name, kind=tarfile.REGTYPE, data=b"", link="", mode=None, mtime=0):
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = link
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                info.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
                info.mtime = mtime
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
            DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
            \(body)
            tar.close()
            """
        try shell("cat > \(scratch)/make.py <<'PY'\n\(script)\nPY\npython3 \(scratch)/make.py \(tarball)")
    }

    @Test func aDirectoryReplacedByASymlinkIsNeverWrittenThrough() async throws {
        defer { cleanUp() }
        let sentinel = "\(scratch)/sentinel"
        try shell("mkdir -p \(sentinel) && echo secret > \(sentinel)/secret")
        // Files under d/ are with the writers when the symlink d arrives; the file after it must not
        // follow it. The empty e/ is replaced, as one-by-one extraction would, and e/evil refused.
        for (archive, offending) in [("nonempty", nil as String?), ("empty", "e/evil")] {
            let tarball = "\(scratch)/\(archive).tar"
            let replaced = archive == "nonempty" ? "d" : "e"
            try makeArchive(tarball, """
                add("d", DIR)
                add("e", DIR)
                for i in range(200): add("d/f%03d" % i, data=os.urandom(65536))
                add("\(replaced)", SYM, link="\(sentinel)")
                add("d/evil", data=b"escaped\\n")
                add("e/evil", data=b"escaped\\n")
                """)
            do {
                _ = try await importer.importImage(try MachineName("replaced"), from: .file(tarball))
                Issue.record("\(archive): imported")
            } catch {
                if let offending {
                    #expect(error.category == .invalidInput, "\(error)")
                    #expect(error.description.contains("entry '\(offending)'"), "\(error)")
                }
            }
            #expect(try shell("ls -A \(sentinel)") == "secret", "\(archive) wrote next to the sentinel")
            #expect(try shell("ls -A \(store.directory)") == "", "\(archive) left something")
        }
    }

    @Test func aNameMetTwiceKeepsTheLastMember() async throws {
        defer { cleanUp() }
        let tarball = "\(scratch)/twice.tar"
        try makeArchive(tarball, """
            add("etc", DIR)
            add("etc/a", data=b"one\\n")
            add("etc/b", data=b"file\\n")
            add("etc/c", SYM, link="a")
            for i in range(100): add("etc/f%03d" % i, data=os.urandom(32768))
            add("etc/a", data=b"two\\n")
            add("etc/b", SYM, link="a")
            add("etc/c", data=b"file now\\n")
            add("etc/./a", data=b"three\\n")
            """)
        let result = try await importer.importImage(try MachineName("twice"), from: .file(tarball))
        #expect(result.entries == 108)
        let etc = "\(store.directory)/twice/etc"
        #expect(try shell("cat \(etc)/a") == "three")
        #expect(try shell("stat -c %F \(etc)/b && readlink \(etc)/b") == "symbolic link\na")
        #expect(try shell("stat -c %F \(etc)/c && cat \(etc)/c") == "regular file\nfile now")
    }

    @Test func hardLinksReachFilesTheWritersWrote() async throws {
        defer { cleanUp() }
        let tarball = "\(scratch)/links.tar"
        try makeArchive(tarball, """
            add("usr", DIR)
            add("usr/bin", DIR)
            for i in range(150):
                add("usr/bin/t%03d" % i, data=(b"%03d" % i) * 10000, mode=0o4755)
                add("usr/bin/h%03d" % i, LNK, link="usr/bin/t%03d" % i)
            """)
        _ = try await importer.importImage(try MachineName("links"), from: .file(tarball))
        let bin = "\(store.directory)/links/usr/bin"
        for i in [0, 77, 149] {
            let name = String(format: "%03d", i)
            let status = try shell("stat -c '%i %h %a %s' \(bin)/t\(name) \(bin)/h\(name)").split(separator: "\n")
            #expect(status.count == 2 && status[0] == status[1] && status[0].hasSuffix(" 2 4755 30000"), "\(status)")
        }
        #expect(try shell("find \(bin) -type f -links 2 | wc -l") == "300")
    }

    @Test func directoriesKeepTheirModesAndTimesAfterTheirFilesAreWritten() async throws {
        defer { cleanUp() }
        let tarball = "\(scratch)/times.tar"
        try makeArchive(tarball, """
            add(".", DIR, mtime=1000000001)
            add("srv", DIR, mtime=1000000002)
            add("srv/locked", DIR, mode=0o555, mtime=1000000003)
            for i in range(100): add("srv/locked/f%03d" % i, data=os.urandom(20000), mtime=1000000100 + i)
            add("srv/late", DIR, mode=0o700, mtime=1000000004)
            add("srv/late/x", data=b"x", mtime=1000000005)
            """)
        _ = try await importer.importImage(try MachineName("times"), from: .file(tarball))
        let image = "\(store.directory)/times"
        // The root's own time is not kept (libarchive leaves "." alone), as before the writers.
        let stats = try shell("stat -c '%a %Y' \(image)/srv \(image)/srv/locked \(image)/srv/late \(image)/srv/late/x \(image)/srv/locked/f042")
        #expect(stats == "755 1000000002\n555 1000000003\n700 1000000004\n644 1000000005\n644 1000000142")
    }

    @Test func aFileLargerThanTheMemoryBoundIsWrittenWhole() async throws {
        defer { cleanUp() }
        let src = "\(scratch)/src"
        // 40 MB is over the 8 MB held in flight; the sparse file (holes kept) goes to a writer in blocks.
        try shell("""
            set -e
            mkdir -p \(src)/var
            head -c 41943040 /dev/urandom > \(src)/var/big
            for i in $(seq 1 50); do head -c 100000 /dev/urandom > \(src)/var/small$i; done
            truncate -s 1M \(src)/var/sparse && printf start | dd of=\(src)/var/sparse conv=notrunc status=none
            printf end | dd of=\(src)/var/sparse bs=1 seek=900000 conv=notrunc status=none
            tar -S -C \(src) -cf - . | gzip -1 > \(scratch)/big.tar.gz
            """)
        _ = try await importer.importImage(try MachineName("big"), from: .file("\(scratch)/big.tar.gz"))
        let image = "\(store.directory)/big"
        #expect(try shell("cd \(src) && sha256sum var/* | sort") == shell("cd \(image) && sha256sum var/* | sort"))
        #expect(try Int(shell("stat -c %b \(image)/var/sparse"))! < 256, "the holes stay holes")
    }

    /// Small limits: the reader waits for room in the ring, forgets names and directories and
    /// settles often, and the result is still the tree, entry for entry.
    @Test func tinyLimitsStillWriteEverything() async throws {
        defer { cleanUp() }
        let src = "\(scratch)/src"
        try shell("""
            set -e
            mkdir -p \(src)/a/b \(src)/c
            for i in $(seq 1 200); do head -c $((i * 997)) /dev/urandom > \(src)/a/b/f$i; ln -s b/f$i \(src)/a/s$i; done
            for i in $(seq 1 20); do mkdir -p \(src)/d$i/e; echo $i > \(src)/d$i/e/f; ln \(src)/d$i/e/f \(src)/c/h$i; done
            head -c 300000 /dev/urandom > \(src)/c/over
            tar -C \(src) -cf \(scratch)/tiny.tar .
            mkdir \(scratch)/out
            """)
        let target = try Directory(path: "\(scratch)/out")
        let input = try FileDescriptor.open("\(scratch)/tiny.tar", .readOnly)
        defer { try? input.close() }
        let extractor = UncheckedSendable(ParallelExtractor(
            source: "tiny.tar", target: target, counters: ImportCounters(), writerCount: 3,
            budget: 64 << 10, bufferedFileLimit: 32 << 10, windowLimit: 7, directoryLimit: 2))
        let entries = try await OSThread.run { () throws(NspawnError) -> Int in try extractor.value.run(from: input) }
        #expect(entries == 485)
        #expect(try shell("cd \(src) && find . -printf '%p %y %l %n\\n' | sort && find . -type f | sort | xargs sha256sum")
            == shell("cd \(scratch)/out && find . -printf '%p %y %l %n\\n' | sort && find . -type f | sort | xargs sha256sum"))
    }
}
