import Testing
import SystemPackage
@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// The copier on real files in a scratch directory, cross-checked with stat, getfattr and cmp.
/// Owners, devices, trusted.* and security.* attributes need root; the rest runs as anyone.
@Suite(.serialized) struct TreeCopierTests {
    static let isRoot = getuid() == 0

    /// A fresh scratch directory (on disk, not tmpfs) removed after `body`.
    func withScratch(_ body: (String) throws -> Void) throws {
        let path = "/var/tmp/nspawnctl-copier-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"
        try shell("mkdir -p \(path)")
        defer { _ = try? shell("chattr -R -i \(path) 2>/dev/null; rm -rf \(path)") }
        try body(path)
    }

    /// One line per entry: path, type and mode, owner, size, mtime, link count, symlink target.
    func listing(_ root: String) throws -> String {
        try shell("cd \(root) && find . -printf '%p %M %U:%G %s %T@ %n %l\\n' | sort")
    }

    /// A command's output (stdout and stderr, without the last newline) for an expectation; a
    /// failure shows as its message.
    func output(_ script: String) -> String {
        do { return try shell(script) } catch { return "\(error)" }
    }

    func attributes(_ root: String) throws -> String {
        try shell("cd \(root) && getfattr -R -h -d -m - -e hex . 2>/dev/null | grep -v '^$' || true")
    }

    @discardableResult
    func copy(_ name: String, from source: String, to destinationName: String, in destination: String,
              _ copier: TreeCopier = TreeCopier()) throws -> TreeCopier.Summary {
        try copier.copy(name, in: try Directory(path: source), to: destinationName, in: try Directory(path: destination),
                        sourceLabel: "\(source)/\(name)", destinationLabel: "\(destination)/\(destinationName)")
    }

    /// Modes, symlinks (never followed), hardlinks, user xattrs, fifos, sockets and times.
    @Test func aTreeKeepsEverythingThatMakesItARootFileSystem() throws {
        try withScratch { scratch in
            try shell("""
                set -e
                cd \(scratch) && mkdir -p src/sub/deeper out
                printf 'hello\\n' > src/file && chmod 0640 src/file
                head -c 300000 /dev/urandom > src/sub/big && chmod 4755 src/sub/big
                ln src/sub/big src/sub/deeper/big-again
                ln -s /etc src/etc-link && ln -s ../file src/sub/relative && ln -s /nonexistent src/dangling
                mkfifo -m 0620 src/sub/fifo
                setfattr -n user.origin -v copied src/file
                setfattr -n user.dir -v yes src/sub
                chmod 0751 src/sub && chmod 1777 src/sub/deeper
                touch -h -d '2001-02-03 04:05:06.789' src/etc-link
                touch -d '2002-03-04 05:06:07' src/file src/sub/deeper src/sub src
                """)
            // A socket, as a running service leaves one.
            let socket = try UnixSocket.listen(path: "\(scratch)/src/sub/socket", mode: 0o660)
            defer { try? socket.close() }
            try shell("touch -d '2002-03-04 05:06:07' \(scratch)/src/sub")
            let summary = try copy("src", from: scratch, to: "copy", in: "\(scratch)/out")
            #expect(try listing("\(scratch)/src") == (try listing("\(scratch)/out/copy")))
            #expect(try attributes("\(scratch)/src") == (try attributes("\(scratch)/out/copy")))
            #expect(try attributes("\(scratch)/out/copy").contains("user.origin=0x636f70696564"))
            try shell("cmp \(scratch)/src/sub/big \(scratch)/out/copy/sub/big")
            // The hardlink is one inode in the copy too, and the symlink to /etc is a link, not /etc's files.
            #expect(output("stat -c %i \(scratch)/out/copy/sub/big \(scratch)/out/copy/sub/deeper/big-again | uniq | wc -l").trimmedWhitespace == "1")
            #expect(output("readlink \(scratch)/out/copy/etc-link").trimmedWhitespace == "/etc")
            #expect(output("stat -c %F \(scratch)/out/copy/sub/socket \(scratch)/out/copy/sub/fifo") == "socket\nfifo")
            #expect(summary.directories == 3)
            #expect(summary.files == 2)
            #expect(summary.hardlinks == 1)
            #expect(summary.symlinks == 3)
            #expect(summary.specialFiles == 2)
            #expect(summary.bytes == 300_006)
            // ext4 has no reflinks: the copier fell back and says so.
            #expect(summary.method != nil)
        }
    }

    @Test(.enabled(if: isRoot, "owners, device nodes, trusted.* and security.* need root"))
    func ownersDevicesAndPrivilegedAttributesAsRoot() throws {
        try withScratch { scratch in
            try shell("""
                set -e
                cd \(scratch) && mkdir -p src out
                mknod src/null c 1 3 && chmod 0666 src/null && chown 7:8 src/null
                mknod src/loop b 7 200 && chmod 0600 src/loop
                printf x > src/tool && chown 1234:5678 src/tool && chmod 2755 src/tool
                setfattr -n trusted.overlay.opaque -v y src
                setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 src/tool
                setfattr -n trusted.on-link -v 1 -h src 2>/dev/null || true
                ln -s tool src/tool-link && chown -h 99:98 src/tool-link && setfattr -h -n trusted.link -v yes src/tool-link
                touch -d '2003-01-01' src
                """)
            try copy("src", from: scratch, to: "copy", in: "\(scratch)/out")
            #expect(try listing("\(scratch)/src") == (try listing("\(scratch)/out/copy")))
            #expect(try attributes("\(scratch)/src") == (try attributes("\(scratch)/out/copy")))
            #expect(output("stat -c '%t:%T %u:%g' \(scratch)/out/copy/null") == "1:3 7:8")
            #expect(output("cd \(scratch)/out/copy && getfattr -h -n trusted.link --only-values tool-link") == "yes")
            // chown clears set-id bits and capabilities; the copier sets them after it.
            #expect(output("stat -c %a \(scratch)/out/copy/tool") == "2755")
            #expect(try attributes("\(scratch)/out/copy").contains("security.capability=0x01000002002"))
        }
    }

    /// POSIX ACLs and their ids, written as the kernel's xattr blob (no setfacl needed).
    @Test(.enabled(if: isRoot, "an ACL naming another user's id is set as root here"))
    func posixACLsAreCopiedAndShifted() throws {
        try withScratch { scratch in
            try shell("mkdir -p \(scratch)/src \(scratch)/out && printf x > \(scratch)/src/f && chmod 0640 \(scratch)/src/f")
            // version 2; USER_OBJ rw-, USER 1000 r--, GROUP_OBJ r--, MASK r--, OTHER ---
            let acl = aclBlob([(0x01, 6, 0xFFFF_FFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFF_FFFF), (0x10, 4, 0xFFFF_FFFF), (0x20, 0, 0xFFFF_FFFF)])
            let file = try FileDescriptor.open("\(scratch)/src/f", .readOnly)
            defer { try? file.close() }
            try ExtendedAttributes.descriptor(file).set(ExtendedAttributes.accessACL, acl)
            try copy("src", from: scratch, to: "plain", in: "\(scratch)/out")
            let shift = TreeCopier.IDShift(uidBase: 0x50000, gidBase: 0x50000, direction: .intoMachine)
            try copy("src", from: scratch, to: "shifted", in: "\(scratch)/out", TreeCopier(idShift: shift))
            let plain = try FileDescriptor.open("\(scratch)/out/plain/f", .readOnly)
            defer { try? plain.close() }
            #expect(try ExtendedAttributes.descriptor(plain).value(ExtendedAttributes.accessACL) == acl)
            let shifted = try FileDescriptor.open("\(scratch)/out/shifted/f", .readOnly)
            defer { try? shifted.close() }
            let expected = aclBlob([(0x01, 6, 0xFFFF_FFFF), (0x02, 4, 0x50000 + 1000), (0x04, 4, 0xFFFF_FFFF), (0x10, 4, 0xFFFF_FFFF), (0x20, 0, 0xFFFF_FFFF)])
            #expect(try ExtendedAttributes.descriptor(shifted).value(ExtendedAttributes.accessACL) == expected)
            #expect(output("stat -c %u:%g \(scratch)/out/shifted/f") == "327680:327680")
        }
    }

    func aclBlob(_ entries: [(tag: UInt16, permissions: UInt16, id: UInt32)]) -> [UInt8] {
        var bytes: [UInt8] = [2, 0, 0, 0]
        for entry in entries {
            bytes += [UInt8(entry.tag & 0xFF), UInt8(entry.tag >> 8), UInt8(entry.permissions & 0xFF), UInt8(entry.permissions >> 8)]
            bytes += (0..<4).map { UInt8(truncatingIfNeeded: entry.id >> (8 * UInt32($0))) }
        }
        return bytes
    }

    @Test func anIDShiftMovesIdsIntoAndOutOfTheMachinesRange() {
        let into = TreeCopier.IDShift(uidBase: 0x1_0000 * 7, gidBase: 0x1_0000 * 7, direction: .intoMachine)
        #expect(into.uid(0) == 458_752)
        #expect(into.gid(1000) == 459_752)
        #expect(into.uid(70_000) == 458_752 + 65534, "an id the guest cannot have becomes its nobody")
        let out = TreeCopier.IDShift(uidBase: 458_752, gidBase: 458_752, direction: .outOfMachine)
        #expect(out.uid(458_752) == 0)
        #expect(out.uid(459_752) == 1000)
        #expect(out.uid(0) == 65534, "a host id outside the machine's range is nobody inside it")
        #expect(out.uid(458_752 + 65536) == 65534)
        // A v3 file capability names its namespace's root; it moves with the owners.
        var cap: [UInt8] = [0, 0, 0, 3] + [UInt8](repeating: 0, count: 16) + [0, 0, 0, 0]
        cap[4] = 0x20
        let moved = ExtendedAttributes.shifted("security.capability", cap, by: into)
        #expect(Array(moved[20...]) == [0x00, 0x00, 0x07, 0x00])
        #expect(Array(moved[..<20]) == Array(cap[..<20]))
    }

    @Test func aSingleFileAndASymlinkAtTheTopAreCopiedAsThemselves() throws {
        try withScratch { scratch in
            try shell("cd \(scratch) && mkdir out && printf data > f && chmod 0604 f && ln -s /etc/shadow link")
            let file = try copy("f", from: scratch, to: "g", in: "\(scratch)/out")
            #expect(file.files == 1 && file.directories == 0)
            #expect(output("cat \(scratch)/out/g; stat -c ' %a' \(scratch)/out/g") == "data 604")
            let link = try copy("link", from: scratch, to: "link", in: "\(scratch)/out")
            #expect(link.symlinks == 1 && link.bytes == 0)
            #expect(output("stat -c %F \(scratch)/out/link; readlink \(scratch)/out/link") == "symbolic link\n/etc/shadow")
        }
    }

    @Test func anExistingDestinationOrAMissingSourceIsAnErrorNamingTheFile() throws {
        try withScratch { scratch in
            try shell("cd \(scratch) && mkdir -p src out/taken && printf x > src/f")
            #expect(throws: NspawnError.system("cannot create directory '\(scratch)/out/taken'", .fileExists)) {
                try copy("src", from: scratch, to: "taken", in: "\(scratch)/out")
            }
            #expect(throws: NspawnError.system("cannot read '\(scratch)/missing'", .noSuchFileOrDirectory)) {
                try copy("missing", from: scratch, to: "x", in: "\(scratch)/out")
            }
            try shell("printf old > \(scratch)/out/f")
            #expect(throws: NspawnError.system("cannot create '\(scratch)/out/f'", .fileExists)) {
                try copy("f", from: "\(scratch)/src", to: "f", in: "\(scratch)/out")
            }
            #expect(output("cat \(scratch)/out/f") == "old")
        }
    }

    /// ext4 to tmpfs: no reflink, no copy_file_range across file systems; sendfile it is, and
    /// read and write when the kernel may not copy.
    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func theMethodActuallyUsedIsReported() throws {
        try withScratch { scratch in
            try shell("mkdir -p \(scratch)/src \(scratch)/ext4 && head -c 100000 /dev/urandom > \(scratch)/src/data")
            let onDisk = try copy("src", from: scratch, to: "copy", in: "\(scratch)/ext4")
            #expect(onDisk.method == .copyFileRange, "ext4 has no FICLONE; copy_file_range works within it")
            #expect(onDisk.filesByMethod == ["copy_file_range": 1])
            let noReflink = try copy("src", from: scratch, to: "copy2", in: "\(scratch)/ext4", TreeCopier(reflink: false))
            #expect(noReflink.method == .copyFileRange)
            let mount = try ScratchMount(at: "\(scratch)/tmpfs", size: "1m")
            defer { mount.unmount() }
            let toTmpfs = try copy("src", from: scratch, to: "copy", in: mount.path)
            #expect(toTmpfs.method == .sendfile)
            try shell("cmp \(scratch)/src/data \(mount.path)/copy/data")
            let buffered = try copy("src", from: scratch, to: "buffered", in: mount.path, TreeCopier(kernelCopy: false))
            #expect(buffered.method == .readWrite)
            try shell("cmp \(scratch)/src/data \(mount.path)/buffered/data")
        }
    }

    /// A reflink where the file system has them: XFS on a loop device, when mkfs.xfs is there.
    @Test(.enabled(if: isRoot && access("/usr/sbin/mkfs.xfs", X_OK) == 0, "needs root and mkfs.xfs (xfsprogs) for a reflink file system"))
    func aReflinkWhereTheFileSystemHasThem() throws {
        try withScratch { scratch in
            try shell("""
                set -e
                truncate -s 320M \(scratch)/xfs.img && mkfs.xfs -q -m reflink=1 \(scratch)/xfs.img
                mkdir \(scratch)/mnt && mount -o loop \(scratch)/xfs.img \(scratch)/mnt
                mkdir \(scratch)/mnt/src && head -c 1000000 /dev/urandom > \(scratch)/mnt/src/data
                """)
            defer { _ = try? shell("umount -l \(scratch)/mnt") }
            let summary = try copy("src", from: "\(scratch)/mnt", to: "copy", in: "\(scratch)/mnt")
            #expect(summary.method == .reflink)
            try shell("cmp \(scratch)/mnt/src/data \(scratch)/mnt/copy/data")
        }
    }

    /// The copy of a directory whose own mtime must survive its contents being written.
    @Test func aDirectoryKeepsItsTimesAfterItsContents() throws {
        try withScratch { scratch in
            try shell("cd \(scratch) && mkdir -p top/a/b out && printf x > top/a/b/f && touch -d '1999-12-31 23:59:59' top/a/b top/a top")
            let root = try Directory(path: "\(scratch)/top")
            _ = try TreeCopier().copyDirectory(root, to: "top", in: try Directory(path: "\(scratch)/out"),
                                           sourceLabel: "\(scratch)/top", destinationLabel: "\(scratch)/out/top")
            #expect(output("stat -c %Y \(scratch)/out/top \(scratch)/out/top/a \(scratch)/out/top/a/b | sort -u") == "946684799")
        }
    }
}

extension TreeCopierTests {
    /// A mount point inside the tree is copied as an empty directory, as `cp -x` does.
    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func anotherFileSystemInsideTheTreeIsNotEntered() throws {
        try withScratch { scratch in
            try shell("mkdir -p \(scratch)/src/mnt \(scratch)/out && printf x > \(scratch)/src/f")
            let mount = try ScratchMount(at: "\(scratch)/src/mnt")
            defer { mount.unmount() }
            try shell("printf secret > \(mount.path)/inside && chmod 0751 \(mount.path)")
            let summary = try copy("src", from: scratch, to: "copy", in: "\(scratch)/out")
            #expect(summary.mountPoints == 1 && summary.files == 1)
            #expect(output("ls -A \(scratch)/out/copy/mnt; stat -c %a \(scratch)/out/copy/mnt") == "751")
            let entered = try copy("src", from: scratch, to: "all", in: "\(scratch)/out", TreeCopier(oneFileSystem: false))
            #expect(entered.mountPoints == 0 && entered.files == 2)
        }
    }
}
