import Testing
@testable import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ApplyLockTests {
    let directory = "/tmp/nspawnctl-apply-lock-test-\(getpid())"

    @Test func aSecondApplyOfTheSameMachineIsBusyAndNamesTheFirst() throws {
        defer { _ = try? shell("rm -rf \(directory)") }
        let web = try MachineName("web1")
        var first: ApplyLocks? = ApplyLocks(manifest: "site", directory: directory)
        try first?.acquire(web)
        // flock conflicts between open file descriptions, also within one process (nspawnd).
        let second = ApplyLocks(manifest: "other", directory: directory)
        let refusal = #expect(throws: NspawnError.self) { try second.acquire(web) }
        #expect(refusal?.category == .conflict)
        #expect("\(refusal.map { "\($0)" } ?? "")" == "machine 'web1' is busy: another apply is converging it (pid \(getpid()), manifest 'site'); run apply again when it has ended")
        // Another machine is not held by the first.
        try second.acquire(try MachineName("web2"))
        #expect(second.holds(try MachineName("web2")) && !second.holds(web))
        // Released with its holder (as the kernel releases a killed holder's): once every copy
        // of the descriptor is closed, so give a fork by a concurrent test the time to exec.
        first = nil
        for _ in 0..<200 where !second.holds(web) {
            if (try? second.acquire(web)) == nil { usleep(10_000) }
        }
        #expect(second.holds(web))
        #expect(try shell("stat -c %a \(directory)") == "700")
    }
}
