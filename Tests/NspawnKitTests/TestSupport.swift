@testable import NspawnKit

/// Runs a shell script to set up a test or to cross-check its result with standard tools.
@discardableResult
func shell(_ script: String) throws(NspawnError) -> String {
    let (termination, output) = try ChildProcess.run(["/bin/sh", "-c", script])
    guard termination.succeeded else { throw NspawnError.failed("'\(script)' \(termination): \(output)") }
    return output
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
