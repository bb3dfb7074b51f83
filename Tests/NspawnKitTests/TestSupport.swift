@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// Runs a shell script to set up a test or to cross-check its result with standard tools.
@discardableResult
func shell(_ script: String) throws(NspawnError) -> String {
    let (termination, output) = try ChildProcess.run(["/bin/sh", "-c", script])
    guard termination.succeeded else { throw NspawnError.failed("'\(script)' \(termination): \(output)") }
    return output
}

/// A fresh 320 MiB file system of `type` (btrfs, xfs, ext4) loop-mounted for `body`, removed after.
/// Mounting needs root.
func withLoopFileSystem(_ type: String, _ body: (String) throws -> Void) throws {
    let scratch = "/var/tmp/nspawnctl-loop-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"
    try shell("mkdir -p \(scratch)/mnt && truncate -s 320M \(scratch)/fs.img && mkfs.\(type) -q \(scratch)/fs.img && mount -o loop \(scratch)/fs.img \(scratch)/mnt")
    defer { _ = try? shell("umount -l \(scratch)/mnt; rm -rf \(scratch)") }
    try body("\(scratch)/mnt")
}

/// A small tmpfs for tests that fill or freeze a file system, so the host's own stay untouched.
/// Mounting needs root.
struct ScratchMount {
    let path: String

    init(at path: String, size: String = "64k") throws(NspawnError) {
        self.path = path
        try shell("mkdir -p \(path) && mount -t tmpfs -o size=\(size),mode=0755 tmpfs \(path)")
    }

    func makeReadOnly() throws(NspawnError) {
        try shell("mount -o remount,ro \(path)")
    }

    /// Lazily, so a descriptor a failed test left open cannot keep it mounted.
    func unmount() {
        _ = try? shell("umount -l \(path)")
    }
}
