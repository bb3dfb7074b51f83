import FoundationEssentials
import Testing
@testable import NspawnKit
@testable import NspawnImages
#if canImport(Glibc)
import Glibc
#endif

/// Imports on this machine's disk into a throw-away store. No machined is involved: these check the
/// extraction and the store, and run as root (CI does) because they create devices and set owners.
@Suite(.serialized) struct ImportTests {
    let scratch: String
    let store: ImageStore

    init() throws {
        scratch = "/var/tmp/nspawnctl-import-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"
        store = ImageStore(directory: scratch + "/machines", lockDirectory: scratch + "/locks")
        try shell("mkdir -p \(scratch)/machines \(scratch)/locks")
    }

    var importer: ImageImporter {
        ImageImporter(store: store, machineIsRunning: { _ in false })
    }

    func cleanUp() { _ = try? shell("rm -rf --one-file-system \(scratch)") }

    func storeEntries() throws -> [String] {
        try Directory(path: store.directory).entries().sorted()
    }

    /// A root with every kind of file, wrapped in root.x86_64/ as Arch's tarball is.
    func makeRichTree() throws -> String {
        let root = "\(scratch)/src/root.x86_64"
        try shell("""
            set -e
            mkdir -p \(root)/etc \(root)/usr/bin \(root)/dev \(root)/srv/data
            printf 'ID=fixture\\n' > \(root)/etc/os-release
            cp /bin/true \(root)/usr/bin/capped
            setcap cap_net_raw+ep \(root)/usr/bin/capped
            setfattr -n user.origin -v fixture \(root)/etc/os-release
            ln -s usr/bin \(root)/bin
            ln \(root)/etc/os-release \(root)/etc/os-release.hardlink
            mknod \(root)/dev/null c 1 3
            mkfifo \(root)/srv/fifo
            echo owned > \(root)/srv/data/owned
            chown 12345:23456 \(root)/srv/data/owned
            chmod 4751 \(root)/usr/bin/capped
            chmod 0700 \(root)/srv/data
            """)
        return "\(scratch)/src"
    }

    @Test(arguments: [("plain", "cat", [String]()), ("gz", "gzip -c", ["gzip"]), ("xz", "xz -c", ["xz"]),
                      ("bz2", "bzip2 -c", ["bzip2"]), ("zst", "zstd -q -c", ["zstd"])])
    func keepsEverythingInEveryCompression(_ suffix: String, _ compressor: String, _ filters: [String]) async throws {
        defer { cleanUp() }
        let src = try makeRichTree()
        let tarball = "\(scratch)/rich.tar.\(suffix)"
        try shell("tar --xattrs --xattrs-include='*' --numeric-owner -C \(src) -cf - root.x86_64 | \(compressor) > \(tarball)")

        let result = try await importer.importImage(try MachineName("rich"), from: .file(tarball))
        #expect(result.compression == filters)
        #expect(result.strippedDirectory == "root.x86_64")
        #expect(result.entries >= 11)
        let image = "\(store.directory)/rich"
        // Cross-checked with getcap/getfattr/stat, not with our own code.
        #expect(try shell("getcap \(image)/usr/bin/capped").contains("cap_net_raw=ep"))
        #expect(try shell("getfattr --absolute-names -n user.origin --only-values \(image)/etc/os-release") == "fixture")
        #expect(try shell("stat -c '%a %u:%g' \(image)/usr/bin/capped \(image)/srv/data \(image)/srv/data/owned")
            == "4751 0:0\n700 0:0\n644 12345:23456")
        #expect(try shell("stat -c %F:%t:%T \(image)/dev/null") == "character special file:1:3")
        #expect(try shell("stat -c %F \(image)/srv/fifo") == "fifo")
        #expect(try shell("readlink \(image)/bin") == "usr/bin")
        let inodes = try shell("stat -c %i \(image)/etc/os-release \(image)/etc/os-release.hardlink").split(separator: "\n")
        #expect(inodes.count == 2 && inodes[0] == inodes[1])
        #expect(try storeEntries() == ["rich"])
    }

    @Test func hostileCorpusIsRefusedWholeAndLeavesNothing() async throws {
        defer { cleanUp() }
        let sentinel = "\(scratch)/sentinel"
        try shell("mkdir -p \(sentinel) && echo secret > \(sentinel)/secret")
        let corpus = "\(scratch)/hostile"
        let listing = try shell("\(repositoryRoot)/Tests/Fixtures/make-hostile-archives \(corpus) \(sentinel)")
        let cases = listing.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        #expect(cases.count >= 17)
        for fields in cases {
            let (file, offending) = (fields[0], fields.count > 1 ? fields[1] : "")
            do {
                _ = try await importer.importImage(try MachineName("hostile"), from: .file("\(corpus)/\(file)"))
                Issue.record("\(file) was imported")
            } catch let error {
                #expect(error.category == .invalidInput, "\(file): \(error)")
                if !offending.isEmpty {
                    #expect(error.description.contains("entry '\(offending)'"), "\(file): \(error)")
                }
            }
            let left = try storeEntries()
            #expect(left.isEmpty, "\(file) left \(left)")
            #expect(try shell("ls -A \(sentinel)") == "secret", "\(file) wrote next to the sentinel")
            #expect(try shell("cat \(sentinel)/secret") == "secret")
        }
    }

    @Test func existingNameIsAConflictAndForceReplacesAtomically() async throws {
        defer { cleanUp() }
        try shell("mkdir -p \(scratch)/v1/etc \(scratch)/v2/etc && echo one > \(scratch)/v1/etc/version && echo two > \(scratch)/v2/etc/version")
        try shell("tar -C \(scratch)/v1 -cf \(scratch)/v1.tar . && tar -C \(scratch)/v2 -cf \(scratch)/v2.tar .")
        let name = try MachineName("box")
        let first = try await importer.importImage(name, from: .file("\(scratch)/v1.tar"))
        #expect(first.replaced == false && first.strippedDirectory == nil)
        await #expect(throws: NspawnError.alreadyExists("box")) {
            try await importer.importImage(name, from: .file("\(scratch)/v2.tar"))
        }
        #expect(try shell("cat \(store.directory)/box/etc/version") == "one")
        let second = try await importer.importImage(name, from: .file("\(scratch)/v2.tar"), options: ImportOptions(force: true))
        #expect(second.replaced)
        #expect(try shell("cat \(store.directory)/box/etc/version") == "two")
        #expect(try storeEntries() == ["box"])

        let running = ImageImporter(store: store, machineIsRunning: { _ in true })
        await #expect(throws: NspawnError.self) {
            try await running.importImage(name, from: .file("\(scratch)/v1.tar"), options: ImportOptions(force: true))
        }
        #expect(try shell("cat \(store.directory)/box/etc/version") == "two")
        #expect(try storeEntries() == ["box"])
    }

    @Test func leftoversOfTheSameNameAreRemovedAndOthersKept() async throws {
        defer { cleanUp() }
        try shell("mkdir -p \(scratch)/r/etc && tar -C \(scratch)/r -cf \(scratch)/r.tar .")
        let machines = store.directory
        try shell("mkdir -p '\(machines)/.#import.0123abcd.web/usr' '\(machines)/.#replaced.89abcdef.web' '\(machines)/.#import.0123abcd.web.old/usr'")
        let result = try await importer.importImage(try MachineName("web"), from: .file("\(scratch)/r.tar"))
        #expect(result.removedLeftovers.sorted() == [".#import.0123abcd.web", ".#replaced.89abcdef.web"])
        #expect(try storeEntries() == [".#import.0123abcd.web.old", "web"])
    }

    @Test func wrongChecksumFailsVerificationAndLeavesNothing() async throws {
        defer { cleanUp() }
        try shell("mkdir -p \(scratch)/r/etc && tar -C \(scratch)/r -cf \(scratch)/r.tar .")
        let digest = try shell("sha256sum \(scratch)/r.tar | cut -c1-64")
        let good = try await importer.importImage(try MachineName("good"), from: .file("\(scratch)/r.tar"),
                                                  options: ImportOptions(checksum: "sha256:" + digest))
        #expect(good.verified == ["sha256"] && good.sha256 == digest)
        let wrong = String(repeating: "0", count: 64)
        do {
            _ = try await importer.importImage(try MachineName("bad"), from: .file("\(scratch)/r.tar"),
                                               options: ImportOptions(checksum: "sha256:" + wrong))
            Issue.record("imported despite a wrong checksum")
        } catch {
            #expect(error.category == .verificationFailed)
            #expect(error.description.contains("got sha256:\(digest)"))
        }
        await #expect(throws: NspawnError.self) {
            try await importer.importImage(try MachineName("bad"), from: .file("\(scratch)/r.tar"),
                                           options: ImportOptions(checksum: "md5:abc"))
        }
        #expect(try storeEntries() == ["good"])
    }

    @Test(.enabled(if: getuid() == 0, "mounts a tmpfs")) func aFullDiskNamesTheEntryAndTheCause() async throws {
        defer { cleanUp() }
        let small = try ScratchMount(at: "\(scratch)/small")
        defer { small.unmount() }
        try shell("mkdir -p \(scratch)/r/etc && head -c 262144 /dev/urandom > \(scratch)/r/etc/big && tar -C \(scratch)/r -cf \(scratch)/r.tar .")
        let full = ImageImporter(store: ImageStore(directory: small.path, lockDirectory: scratch + "/locks"),
                                 machineIsRunning: { _ in false })
        do {
            _ = try await full.importImage(try MachineName("big"), from: .file("\(scratch)/r.tar"))
            Issue.record("imported 256 KiB into 64 KiB")
        } catch {
            #expect(error.description.contains("'./etc/big'") && error.description.hasSuffix(": No space left on device"), "\(error)")
            #expect(error.category == .failure)
        }
        #expect(try shell("ls -A \(small.path)") == "", "nothing is left behind")
    }

    @Test func aMissingSourceIsBadInputAndSaysWhy() async throws {
        defer { cleanUp() }
        do {
            _ = try await importer.importImage(try MachineName("x"), from: .file("\(scratch)/nope.tar"))
            Issue.record("imported a file that does not exist")
        } catch {
            #expect(error.category == .invalidInput)
            #expect(error.description == "cannot read '\(scratch)/nope.tar': No such file or directory")
        }
    }

    @Test func missingSourceOrSignatureWithoutKeyringWritesNothing() async throws {
        defer { cleanUp() }
        await #expect(throws: NspawnError.self) {
            try await importer.importImage(try MachineName("x"), from: .file("\(scratch)/nope.tar"))
        }
        await #expect(throws: NspawnError.self) {
            try await importer.importImage(try MachineName("x"), from: .file("\(scratch)/nope.tar"),
                                           options: ImportOptions(signature: "\(scratch)/sig"))
        }
        #expect(try storeEntries().isEmpty)
    }

    @Test func setupStepsStayInsideTheRoot() throws {
        defer { cleanUp() }
        let root = "\(scratch)/root"
        try shell("""
            set -e
            mkdir -p \(scratch)/outside \(root)/etc/pacman.d \(root)/usr/share/factory/etc
            echo 'keep' > \(scratch)/outside/pacman.conf
            ln -s \(scratch)/outside/pacman.conf \(root)/etc/pacman.conf
            printf '[options]\\nCheckSpace\\n#CheckSpace already\\nColor\\n' > \(root)/usr/share/factory/etc/pacman.conf
            printf '#Server = https://example.org/$repo/os/$arch\\n' > \(root)/etc/pacman.d/mirrorlist
            printf 'console\\ntty1\\n' > \(root)/etc/securetty
            echo 0123456789abcdef0123456789abcdef > \(root)/etc/machine-id
            """)
        let runner = SetupRunner(name: try MachineName("arch1"), root: try Directory(path: root), rootPath: root,
                                 counters: ImportCounters())
        // The symlink points at a host path; inside the root that path does not exist.
        #expect(throws: NspawnError.self) { try runner.run([.commentOut(path: "/etc/pacman.conf", key: "CheckSpace")]) }
        try runner.run([
            .commentOut(path: "/usr/share/factory/etc/pacman.conf", key: "CheckSpace"),
            .prependLine(path: "/etc/pacman.d/mirrorlist", line: "Server = http://127.0.0.1/$repo/os/$arch"),
            .prependLine(path: "/etc/pacman.d/mirrorlist", line: "Server = http://127.0.0.1/$repo/os/$arch"),
            .appendLineIfExists(path: "/etc/securetty", line: "pts/0"),
            .appendLineIfExists(path: "/etc/missing-securetty", line: "pts/0"),
            .setHostname, .emptyMachineID,
        ])
        #expect(try shell("cat \(scratch)/outside/pacman.conf") == "keep")
        #expect(try shell("cat \(root)/usr/share/factory/etc/pacman.conf") == "[options]\n#CheckSpace\n#CheckSpace already\nColor")
        #expect(try shell("cat \(root)/etc/pacman.d/mirrorlist")
            == "Server = http://127.0.0.1/$repo/os/$arch\n#Server = https://example.org/$repo/os/$arch")
        #expect(try shell("cat \(root)/etc/securetty") == "console\ntty1\npts/0")
        #expect(try shell("ls \(root)/etc") == "hostname\nmachine-id\npacman.conf\npacman.d\nsecuretty")
        #expect(try shell("cat \(root)/etc/hostname") == "arch1")
        #expect(try shell("stat -c %s \(root)/etc/machine-id") == "0")
    }
}

/// The checkout, found from this file's path.
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/").map(String.init)
    parts.removeLast(3)
    return "/" + parts.joined(separator: "/")
}()
