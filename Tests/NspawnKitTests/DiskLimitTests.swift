import Testing
@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct DiskMaxFlavorTests {
    @Test func diskMaxIsASizeAndRidesInTheDropIn() throws {
        let flavor = try Flavor.parse("[Flavor]\nMemoryMax=1G\nDiskMax=10G\n", name: "big", origin: "big.flavor")
        #expect(flavor.diskMax == 10 << 30)
        #expect(flavor.dropIn().contains("X-NspawnctlDiskMax=\(10 << 30)\n"))
        #expect(Flavor(dropIn: flavor.dropIn()) == flavor)
    }

    @Test func aFlavorWithOnlyADiskLimitIsAFlavor() throws {
        let flavor = try Flavor.parse("[Flavor]\nDiskMax=64M\n", name: "disk", origin: "disk.flavor")
        #expect(flavor.diskMax == 64 << 20 && flavor.unitProperties.isEmpty)
        let service = UnitFileDocument(parsing: flavor.dropIn()).entries.filter { $0.section == "Service" }
        #expect(service.isEmpty, "no unit property carries the disk limit: \(flavor.dropIn())")
    }

    @Test(arguments: ["10", "0", "ten", "10X", "-1G", "", "99999999999999T"])
    func badOrTinyDiskLimitsAreRefusedByName(_ value: String) {
        #expect {
            try Flavor.parse("[Flavor]\nDiskMax=\(value)\n", name: "f", origin: "f.flavor")
        } throws: { error in
            "\(error)".contains("f.flavor: invalid DiskMax=") && "\(error)".contains("at least 1M")
        }
    }

    @Test func sizesPrintAsSystemdPrintsThem() {
        #expect(humanSize(512) == "512B")
        #expect(humanSize(64 << 20) == "64.0M")
        #expect(humanSize(1536 << 20) == "1.5G")
    }
}

/// Which file system holds an image, and whether it can limit one directory, on file systems
/// made for the test.
@Suite(.serialized, .enabled(if: getuid() == 0, "mounts loop file systems, which needs root"))
struct DiskLimitFileSystemTests {
    @Test(.enabled(if: access("/usr/sbin/mkfs.xfs", X_OK) == 0, "needs mkfs.xfs (xfsprogs)"))
    func xfsWithoutProjectQuotasSaysSo() throws {
        try withLoopFileSystem("xfs") { mount in
            let root = try Directory(path: mount)
            #expect(try DiskLimit.fileSystem(of: root) == .xfs)
            let problem = DiskLimit.projectQuotaProblem(root)
            #expect(problem?.hasPrefix("project quotas are off") == true, "\(problem ?? "nil")")
        }
    }

    @Test func ext4AndOtherFileSystemsAreNamed() throws {
        try withLoopFileSystem("ext4") { mount in
            let root = try Directory(path: mount)
            #expect(try DiskLimit.fileSystem(of: root) == .ext4)
            #expect(DiskLimit.projectQuotaProblem(root) != nil)
        }
        #expect(try DiskLimit.fileSystem(of: Directory(path: "/proc")).name == "a file system of type 0x9fa0")
    }

    @Test(.enabled(if: access("/usr/sbin/mkfs.btrfs", X_OK) == 0, "needs mkfs.btrfs (btrfs-progs)"))
    func aRootCopiedOntoBtrfsIsASubvolumeSoItCanCarryAQuota() throws {
        try withLoopFileSystem("btrfs") { mount in
            try shell("mkdir -p \(mount)/web/etc \(mount)/store && printf v1 > \(mount)/web/etc/version")
            let store = try Directory(path: "\(mount)/store")
            #expect(try DiskLimit.fileSystem(of: store) == .btrfs)
            let (method, _) = try MachineManager.copyRoot(try Directory(path: "\(mount)/web"), label: "web", to: "copy", in: store,
                                                          label: "copy", readOnly: false)
            #expect(method == .reflink)
            #expect(SnapshotStore.isSubvolume(try store.openDirectory("copy")))
            #expect(try shell("cat \(mount)/store/copy/etc/version") == "v1")
            #expect(try shell("stat -c %a \(mount)/store/copy") == "755")
            try SnapshotStore.removeTree("copy", in: store, label: "copy")
            #expect(try shell("ls -A \(mount)/store") == "")
        }
    }
}
