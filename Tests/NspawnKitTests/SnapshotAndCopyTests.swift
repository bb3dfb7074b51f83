import Testing
import SystemPackage
@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SnapshotNameTests {
    @Test(arguments: ["20261201-173000", "before-upgrade", "a", "v1.2+b@x:y", String(repeating: "s", count: 64)])
    func goodNamesPass(_ name: String) throws {
        try SnapshotInfo.check(name)
    }

    @Test(arguments: ["", ".hidden", "..", "a/b", "../x", "a b", "tab\there", String(repeating: "s", count: 65), "é"])
    func badNamesAreInvalidInputNamingTheName(_ name: String) {
        #expect(throws: NspawnError.self) { try SnapshotInfo.check(name) }
        do { try SnapshotInfo.check(name) } catch {
            #expect(error.category == .invalidInput)
            #expect(error.description.hasPrefix("invalid snapshot name '\(name.escapedForMessage)'"))
        }
    }

    @Test func theDefaultNameIsTheUTCTime() {
        // 2026-12-01 17:30:00 UTC
        #expect(MachineManager.defaultSnapshotName(now: 1_796_146_200) == "20261201-173000")
        #expect(MachineManager.defaultSnapshotName(now: 0) == "19700101-000000")
    }

    @Test func theIDBaseComesFromAChownedRootOnly() {
        #expect(MachineRoot.idBase(uid: 0, gid: 0) == nil, "an idmapped or unshifted root")
        #expect(MachineRoot.idBase(uid: 1000, gid: 1000) == nil, "a user's directory is no user namespace range")
        let base = MachineRoot.idBase(uid: 0x1_0000 * 0x5a, gid: 0x1_0000 * 0x5a)
        #expect(base?.uid == 5_898_240 && base?.gid == 5_898_240)
    }
}

/// The rename step of copy-to and copy-from on a scratch directory.
@Suite(.serialized) struct AtomicCopyTests {
    func withScratch(_ body: (String, Directory) throws -> Void) throws {
        let path = "/var/tmp/nspawnctl-atomic-copy.\(getpid()).\(UInt32.random(in: 0 ... .max))"
        try shell("mkdir -p \(path)/src/tree && printf new > \(path)/src/file && printf inner > \(path)/src/tree/inner")
        defer { _ = try? shell("rm -rf \(path)") }
        try body(path, try Directory(path: path))
    }

    func copying(_ scratch: String, _ name: String) -> (String, String) throws -> TreeCopier.Summary {
        { temporary, label in
            try TreeCopier().copy(name, in: try Directory(path: "\(scratch)/src"), to: temporary, in: try Directory(path: scratch),
                                  sourceLabel: name, destinationLabel: label)
        }
    }

    func leftovers(_ scratch: String) throws -> String {
        try shell("ls -A \(scratch) | grep '^\\.#' || true")
    }

    @Test func anExistingDestinationIsRefusedUnlessReplacing() throws {
        try withScratch { scratch, directory in
            try shell("printf old > \(scratch)/dst")
            #expect(throws: NspawnError.system("'web:/dst' exists; use --replace to replace it", .fileExists)) {
                _ = try MachineManager.copyAtomically(into: directory, as: "dst", label: "web:/dst", replace: false, copying(scratch, "file"))
            }
            #expect(try shell("cat \(scratch)/dst") == "old")
            let (_, replaced) = try MachineManager.copyAtomically(into: directory, as: "dst", label: "web:/dst", replace: true, copying(scratch, "file"))
            #expect(replaced)
            #expect(try shell("cat \(scratch)/dst") == "new")
            #expect(try leftovers(scratch) == "")
        }
    }

    @Test func aDirectoryIsSwappedInAndTheOldOneRemoved() throws {
        try withScratch { scratch, directory in
            try shell("mkdir -p \(scratch)/dst/old-sub && printf x > \(scratch)/dst/old-sub/f")
            _ = try MachineManager.copyAtomically(into: directory, as: "dst", label: "dst", replace: true, copying(scratch, "tree"))
            #expect(try shell("ls -A \(scratch)/dst") == "inner")
            #expect(try leftovers(scratch) == "")
            // A file over a directory, and a directory over a file.
            _ = try MachineManager.copyAtomically(into: directory, as: "dst", label: "dst", replace: true, copying(scratch, "file"))
            #expect(try shell("cat \(scratch)/dst") == "new")
            _ = try MachineManager.copyAtomically(into: directory, as: "dst", label: "dst", replace: true, copying(scratch, "tree"))
            #expect(try shell("cat \(scratch)/dst/inner") == "inner")
            #expect(try leftovers(scratch) == "")
        }
    }

    @Test func aFailedCopyLeavesNothingBehind() throws {
        try withScratch { scratch, directory throws in
            #expect(throws: NspawnError.self) {
                _ = try MachineManager.copyAtomically(into: directory, as: "dst", label: "dst", replace: false) { temporary, label in
                    _ = try copying(scratch, "tree")(temporary, label)
                    throw NspawnError.system("cannot read 'src/tree/second'", .ioError)
                }
            }
            #expect(try leftovers(scratch) == "")
            #expect(try shell("ls -A \(scratch)") == "src")
        }
    }
}

/// The snapshot methods on file systems made for the test: btrfs subvolume snapshots and
/// reflinks, each where the file system has them, and how they are removed.
@Suite(.serialized, .enabled(if: getuid() == 0, "mounts loop file systems, which needs root"))
struct SnapshotMethodTests {
    @Test(.enabled(if: access("/usr/sbin/mkfs.btrfs", X_OK) == 0, "needs mkfs.btrfs (btrfs-progs)"))
    func aSubvolumeRootIsSnapshottedReadOnlyAndDestroyedWhole() throws {
        try withLoopFileSystem("btrfs") { mount in
            try shell("btrfs -q subvolume create \(mount)/web && printf v1 > \(mount)/web/version && mkdir \(mount)/snaps")
            let root = try Directory(path: "\(mount)/web")
            let snaps = try Directory(path: "\(mount)/snaps")
            #expect(SnapshotStore.isSubvolume(root))
            let (method, size) = try MachineManager.copyRoot(root, label: "web", to: "s1", in: snaps, label: "s1", readOnly: true)
            #expect(method == .btrfs && size == nil)
            #expect(try shell("cat \(mount)/snaps/s1/version") == "v1")
            #expect(try shell("btrfs property get -ts \(mount)/snaps/s1 ro") == "ro=true")
            #expect(throws: NspawnError.self) { try shell("touch \(mount)/snaps/s1/new") }
            // Restoring makes a writable one.
            let (again, _) = try MachineManager.copyRoot(try snaps.openDirectory("s1"), label: "s1", to: "back", in: snaps, label: "back", readOnly: false)
            #expect(again == .btrfs)
            try shell("touch \(mount)/snaps/back/new")
            try SnapshotStore.removeTree("s1", in: snaps, label: "s1")
            try SnapshotStore.removeTree("back", in: snaps, label: "back")
            #expect(try shell("ls -A \(mount)/snaps") == "")
        }
    }

    @Test(.enabled(if: access("/usr/sbin/mkfs.xfs", X_OK) == 0, "needs mkfs.xfs (xfsprogs)"))
    func aReflinkCopyIsMarkedImmutableAndRemovedAfterClearingIt() throws {
        try withLoopFileSystem("xfs") { mount in
            try shell("mkdir -p \(mount)/web/etc \(mount)/snaps && head -c 100000 /dev/urandom > \(mount)/web/etc/data")
            let snaps = try Directory(path: "\(mount)/snaps")
            let (method, size) = try MachineManager.copyRoot(try Directory(path: "\(mount)/web"), label: "web", to: "s1", in: snaps, label: "s1", readOnly: true)
            #expect(method == .reflink && size == 100_000)
            try SnapshotStore.setImmutable(try snaps.openDirectory("s1"), true)
            #expect(throws: NspawnError.self) { try shell("touch \(mount)/snaps/s1/new") }
            try SnapshotStore.removeTree("s1", in: snaps, label: "s1")
            #expect(try shell("ls -A \(mount)/snaps") == "")
        }
    }
}
