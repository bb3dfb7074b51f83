import FoundationEssentials
import Glibc
import Testing
@testable import NspawnKit

/// The hook runner on hooks in a directory of the test's own (it runs as root here, as the
/// hooks do on a host).
@Suite("Hook runner", .serialized, .enabled(if: geteuid() == 0, "hooks must be root-owned"))
final class HookRunnerTests {
    let directory = "/tmp/nspawnctl-hooks-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"

    init() throws {
        mkdir(directory, 0o755)
        for event in ["pre-create", "post-create"] { mkdir("\(directory)/\(event).d", 0o755) }
    }

    deinit {
        _ = try? ChildProcess.run(["rm", "-rf", directory])
    }

    func hook(_ event: String, _ name: String, _ body: String, mode: mode_t = 0o755) throws {
        let path = "\(directory)/\(event).d/\(name)"
        try AtomicFile.write(path, "#!/bin/sh\n\(body)\n", mode: mode)
        chmod(path, mode)
    }

    var ran: String { (try? AtomicFile.read("\(directory)/ran")) ?? nil ?? "" }

    @Test func hooksRunInNameOrderWithACleanEnvironmentAndSkipWhatRunPartsSkips() throws {
        let record = "echo \"$(basename \"$0\") $1 $2 $NSPAWNCTL_IMAGE $(pwd) ${HOME-nohome} ${NSPAWNCTL_TEST-clean}\" >> \(directory)/ran"
        try hook("pre-create", "20-second", record)
        try hook("pre-create", "10-first", record)
        try hook("pre-create", ".hidden", record)
        try hook("pre-create", "30-backup~", record)
        try hook("pre-create", "40-not-executable", record, mode: 0o644)
        setenv("NSPAWNCTL_TEST", "leaked", 1)
        defer { unsetenv("NSPAWNCTL_TEST") }
        let failures = try Hooks(directory: directory, timeout: .seconds(10))
            .run(.preCreate, machine: try MachineName("web"), context: .init(image: "base"))
        #expect(failures.isEmpty)
        #expect(ran == "10-first web pre-create base / nohome clean\n20-second web pre-create base / nohome clean\n")
    }

    @Test func aFailingPreHookStopsTheRestAndAPostHookOnlyReports() throws {
        try hook("pre-create", "10-fails", "echo first line >&2; echo last words >&2; exit 4")
        try hook("pre-create", "20-never", "touch \(directory)/ran")
        try hook("post-create", "10-fails", "exit 5")
        try hook("post-create", "20-runs", "touch \(directory)/ran")
        let hooks = Hooks(directory: directory, timeout: .seconds(10))
        let name = try MachineName("web")
        #expect(throws: NspawnError.hookFailed("web", "pre-create hook '\(directory)/pre-create.d/10-fails' exited with status 4: first line / last words")) {
            try hooks.run(.preCreate, machine: name)
        }
        #expect(access("\(directory)/ran", F_OK) != 0, "no hook runs after a failed pre hook")
        let failures = try hooks.run(.postCreate, machine: name)
        #expect(failures.map(\.reason) == ["exited with status 5"])
        #expect(access("\(directory)/ran", F_OK) == 0, "post hooks all run")
    }

    @Test func writableHooksAreRefusedAndAHangingHookIsKilled() throws {
        try hook("post-create", "10-writable", "touch \(directory)/ran", mode: 0o775)
        let name = try MachineName("web")
        let refused = try Hooks(directory: directory, timeout: .seconds(10)).run(.postCreate, machine: name)
        #expect(refused.map(\.reason) == ["is refused: it is writable by group or others (mode 775)"])
        #expect(access("\(directory)/ran", F_OK) != 0)

        try hook("pre-create", "10-hangs", "sleep 30 & wait")
        let started = ContinuousClock.now
        #expect(throws: NspawnError.self) { try Hooks(directory: directory, timeout: .milliseconds(300)).run(.preCreate, machine: name) }
        #expect(ContinuousClock.now - started < .seconds(10), "killed with its process group, not waited for")
    }

    @Test func noDirectoryMeansNoHooks() throws {
        #expect(try Hooks(directory: directory + "/absent").run(.preStart, machine: try MachineName("web")).isEmpty)
    }
}
