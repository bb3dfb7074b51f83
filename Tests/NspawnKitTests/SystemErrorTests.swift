import Testing
import SystemPackage
@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SystemErrorTests {
    @Test func aSystemErrorNamesWhatFailedAndWhy() {
        let error = NspawnError.system("cannot write '/etc/systemd/nspawn/web.nspawn'", .noSpace)
        #expect(error.description == "cannot write '/etc/systemd/nspawn/web.nspawn': No space left on device")
        #expect(error.category == .failure)
    }

    @Test(arguments: [
        (Errno.permissionDenied, NspawnError.Category.permissionDenied),
        (.notPermitted, .permissionDenied),
        (.fileExists, .conflict),
        (.resourceBusy, .conflict),
        (.readOnlyFileSystem, .failure),
        (.noSpace, .failure),
        (.noSuchFileOrDirectory, .failure),
    ])
    func errnoDecidesTheCategory(_ errno: Errno, _ category: NspawnError.Category) {
        #expect(NspawnError.system("cannot lock image name 'web' in /run/systemd/nspawn/locks", errno).category == category)
    }

    @Test func aPathTheCallerNamedIsBadInputOnlyWhenItLeadsNowhere() {
        let missing = NspawnError.unusableInput("cannot read '/tmp/a.tar'", .noSuchFileOrDirectory)
        #expect(missing.category == .invalidInput)
        #expect(missing.description == "cannot read '/tmp/a.tar': No such file or directory")
        let unreadable = NspawnError.unusableInput("cannot read '/tmp/a.tar'", .permissionDenied)
        #expect(unreadable == .system("cannot read '/tmp/a.tar'", .permissionDenied))
        #expect(unreadable.category == .permissionDenied)
    }

    @Test func anOuterStepKeepsTheErrno() {
        let inner = NspawnError.system("cannot write /etc/hostname", .readOnlyFileSystem)
        let outer = inner.within("setting up 'web': set the hostname")
        #expect(outer == .system("setting up 'web': set the hostname: cannot write /etc/hostname", .readOnlyFileSystem))
        #expect(outer.description.hasSuffix(": Read-only file system"))
        #expect(NspawnError.failed("gone").within("step") == .failed("step: gone"))
    }
}

/// Real failures of real system calls, on small file systems mounted for the test. Mounting
/// needs root, as the import tests do; without it they are skipped.
@Suite(.serialized, .enabled(if: getuid() == 0, "mounts a tmpfs, which needs root"))
struct SystemFailureTests {
    let scratch = "/var/tmp/nspawnctl-errno-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"

    /// Runs `body` on a fresh 64 KiB tmpfs holding empty etc/ and locks/ directories.
    func withTmpfs(readOnly: Bool = false, _ body: (String) throws(NspawnError) -> Void) throws(NspawnError) {
        let mount = try ScratchMount(at: "\(scratch)/mnt")
        defer {
            mount.unmount()
            _ = try? shell("rm -rf \(scratch)")
        }
        try shell("mkdir -p \(mount.path)/etc \(mount.path)/locks")
        if readOnly { try mount.makeReadOnly() }
        try body(mount.path)
    }

    @Test func aFullDiskSaysSoAndLeavesNoTemporaryFile() throws {
        try withTmpfs { (root: String) throws(NspawnError) in
            let path = "\(root)/etc/web.nspawn"
            do throws(NspawnError) {
                try AtomicFile.write(path, String(repeating: "x", count: 256 * 1024))
                Issue.record("wrote 256 KiB into 64 KiB")
            } catch {
                #expect(error == .system("cannot write '\(path)'", .noSpace))
                #expect(error.description == "cannot write '\(path)': No space left on device")
            }
            #expect(try shell("ls -A \(root)/etc") == "", "the temporary file is gone")
        }
    }

    @Test func aReadOnlyFileSystemSaysSo() throws {
        try withTmpfs(readOnly: true) { (root: String) throws(NspawnError) in
            let path = "\(root)/etc/web.nspawn"
            do throws(NspawnError) {
                try AtomicFile.write(path, "[Exec]\nBoot=yes\n")
                Issue.record("wrote onto a read-only file system")
            } catch {
                #expect(error.description == "cannot write '\(path)': Read-only file system")
                #expect(error.category == .failure)
            }
            do throws(NspawnError) {
                _ = try ImageStore(directory: "\(root)/machines", lockDirectory: "\(root)/locks").lockName(try MachineName("web"))
                Issue.record("locked a name on a read-only file system")
            } catch {
                #expect(error.description == "cannot lock image name 'web' in \(root)/locks: Read-only file system")
            }
        }
    }

    /// Root passes permission checks, but not an immutable directory: creating the lock file
    /// there fails with EPERM, as it fails with EACCES for a user without root.
    @Test func aLockTheKernelRefusesIsPermissionDenied() throws {
        try withTmpfs { (root: String) throws(NspawnError) in
            guard (try? shell("chattr +i \(root)/locks")) != nil else { return }
            defer { _ = try? shell("chattr -i \(root)/locks") }
            let store = ImageStore(directory: "\(root)/machines", lockDirectory: "\(root)/locks")
            do throws(NspawnError) {
                _ = try store.lockName(try MachineName("web"))
                Issue.record("locked a name in an immutable directory")
            } catch {
                #expect(error == .system("cannot lock image name 'web' in \(root)/locks", .notPermitted))
                #expect(error.category == .permissionDenied)
                #expect(error.description.hasSuffix(": Operation not permitted"))
            }
        }
    }
}

@Suite struct AtomicFileLeftoverTests {
    /// What a writer killed between creating its temporary and renaming it leaves is removed by
    /// the next write of the same file; a live writer's temporary, and other files' ones, stay.
    @Test func theNextWriteRemovesADeadWritersTemporaryOnly() throws {
        let directory = "/tmp/nspawnctl-atomic-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"
        try shell("mkdir -p \(directory)")
        defer { _ = try? shell("rm -rf \(directory)") }
        // A PID that is gone: a child that has exited and been reaped.
        let (_, deadPID) = try ChildProcess.run(["/bin/sh", "-c", "echo $$"])
        let dead = ".#nspawnctl.web.nspawn.\(deadPID.trimmedWhitespace).1a2b"
        let live = ".#nspawnctl.web.nspawn.\(getpid()).3c4d"
        let other = ".#nspawnctl.db.nspawn.\(deadPID.trimmedWhitespace).5e6f"
        try shell("cd \(directory) && touch \(dead) \(live) \(other)")
        try AtomicFile.write("\(directory)/web.nspawn", "[Exec]\nBoot=yes\n")
        #expect(try shell("ls -A \(directory) | sort") == [live, other, "web.nspawn"].sorted().joined(separator: "\n"))
    }
}
