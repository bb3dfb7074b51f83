import SystemPackage
import Testing
@testable import NspawnKit

@Suite struct GuestAccountsTests {
    static let passwd = """
        root:x:0:0:root:/root:/bin/bash
        # a comment
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
        alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh
        broken:x:notanumber:1:::/bin/sh
        short:x:5
        +nisuser::::::
        nobody:x:65534:65534:nobody:/nonexistent:
        minus:x:4294967295:1::/:/bin/sh

        """
    static let group = """
        root:x:0:
        adm:x:4:alice
        sudo:x:27:bob,alice
        alice:x:1000:
        users:x:100: bob , alice
        broken:x:nope:alice
        """

    @Test func passwdKeepsOnlyWellFormedLines() {
        let entries = GuestAccounts.parsePasswd(Self.passwd)
        #expect(entries.map(\.name) == ["root", "daemon", "alice", "nobody"])
        #expect(entries[2] == .init(name: "alice", uid: 1000, gid: 1000, home: "/home/alice", shell: "/bin/zsh"))
    }

    @Test func groupMembersAreTrimmed() {
        let groups = GuestAccounts.parseGroup(Self.group)
        #expect(groups.map(\.name) == ["root", "adm", "sudo", "alice", "users"])
        #expect(groups.first { $0.name == "users" }?.members == ["bob", "alice"])
    }

    func resolve(_ user: String?, passwd: String = passwd) throws -> GuestUser {
        try GuestAccounts.resolve(user, passwd: GuestAccounts.parsePasswd(passwd),
                                  groups: GuestAccounts.parseGroup(Self.group), machine: "m")
    }

    @Test func aNameGetsItsGroupsPrimaryFirst() throws {
        let alice = try resolve("alice")
        #expect(alice.uid == 1000 && alice.gid == 1000)
        #expect(alice.groups == [1000, 4, 27, 100])
        #expect(alice.home == "/home/alice" && alice.loginShell == "/bin/zsh")
    }

    @Test func aNumericUidFindsItsEntry() throws {
        #expect(try resolve("1000").name == "alice")
        #expect(try resolve(nil).name == "root")
        #expect(try resolve("0").groups == [0])
    }

    @Test func aListedUidWithoutAnEntryRunsWithItsOwnGroup() throws {
        let user = try resolve("4242")
        #expect(user == GuestUser(name: nil, uid: 4242, gid: 4242, groups: [4242], home: "/", shell: "/bin/sh"))
    }

    @Test func anUnknownNameIsAnError() {
        #expect(throws: NspawnError.invalidArgument("no user 'mallory' in machine 'm'")) { try resolve("mallory") }
        // -1 means "no id" to the kernel.
        #expect(throws: NspawnError.self) { try resolve("4294967295") }
    }

    @Test func rootExistsWithoutAPasswdFile() throws {
        let root = try resolve(nil, passwd: "")
        #expect(root.uid == 0 && root.gid == 0 && root.home == "/root" && root.loginShell == "/bin/sh")
        #expect(try resolve("root", passwd: "").uid == 0)
    }

    @Test func anEmptyOrRelativeShellFallsBackToSh() throws {
        #expect(try resolve("nobody").loginShell == "/bin/sh")
    }
}

@Suite struct ExecEnvironmentTests {
    let alice = GuestUser(name: "alice", uid: 1000, gid: 1000, groups: [1000], home: "/home/alice", shell: "/bin/zsh")

    @Test func theGuestsOwnEnvironmentComesFirstWithTheUserOnTop() {
        let leader = ["container=systemd-nspawn", "HOME=/root", "NOTIFY_SOCKET=/run/host/notify", "LANG=C.UTF-8", "LISTEN_FDS=1"]
        let env = ExecEnvironment.build(leader: leader, user: alice, terminal: nil, extra: [])
        #expect(env == ["container=systemd-nspawn", "HOME=/home/alice", "LANG=C.UTF-8", "PATH=\(ExecEnvironment.defaultPath)",
                        "SHELL=/bin/zsh", "USER=alice", "LOGNAME=alice"])
    }

    @Test func theCallersEntriesWinAndKeepTheirPlace() {
        let env = ExecEnvironment.build(leader: ["PATH=/bin", "A=1"], user: alice, terminal: "xterm-256color",
                                        extra: ["A=2", "B=x=y", "TERM=vt100", "EMPTY="])
        #expect(env == ["PATH=/bin", "A=2", "HOME=/home/alice", "SHELL=/bin/zsh", "USER=alice", "LOGNAME=alice",
                        "TERM=vt100", "B=x=y", "EMPTY="])
    }

    @Test func aUserWithoutANameSetsNoUser() {
        let anonymous = GuestUser(name: nil, uid: 5, gid: 5, groups: [5], home: "/", shell: "/bin/sh")
        let env = ExecEnvironment.build(leader: [], user: anonymous, terminal: nil, extra: [])
        #expect(!env.contains { $0.hasPrefix("USER=") || $0.hasPrefix("LOGNAME=") })
        #expect(env.contains("HOME=/"))
    }

    @Test func environParsesNulSeparatedEntries() {
        #expect(ExecEnvironment.parseEnviron(Array("A=1\0B=2\0\0".utf8)) == ["A=1", "B=2"])
    }

    static let badEntries = ["NOEQUALS", "=value", "1A=x", "A-B=x", "A B=x", "É=x", "A=\0"]

    @Test(arguments: badEntries)
    func badEntriesAreRejected(_ entry: String) {
        #expect(throws: NspawnError.self) { try ExecEnvironment.check(entry) }
    }

    @Test(arguments: ["A=", "_x=1", "PATH=/usr/bin:/bin", "a9_Z=with spaces and = signs"])
    func goodEntriesPass(_ entry: String) throws {
        try ExecEnvironment.check(entry)
    }
}

@Suite struct ExecSpecValidationTests {
    static let bad: [ExecSpec] = [
        ExecSpec(command: [""]),
        ExecSpec(command: ["ls", "a\0b"]),
        ExecSpec(command: ["ls"], environment: ["NOPE"]),
        ExecSpec(command: ["ls"], user: ""),
        ExecSpec(command: ["ls"], user: "a:b"),
        ExecSpec(command: ["ls"], user: "../root"),
        ExecSpec(command: ["ls"], workingDirectory: "relative"),
        ExecSpec(command: ["ls"], workingDirectory: "/tmp\0x"),
        ExecSpec(command: ["ls"], tty: true, terminal: "a=b"),
    ]

    @Test(arguments: bad)
    func badSpecsAreRejected(_ spec: ExecSpec) {
        #expect(throws: NspawnError.self) { try spec.validate() }
    }

    @Test func goodSpecsPass() throws {
        try ExecSpec(command: ["ls", "-la"], user: "1000", environment: ["A=1"], workingDirectory: "/tmp").validate()
        // The login shell: no command at all.
        try ExecSpec(command: [], interactive: true, tty: true, terminal: "xterm").validate()
    }

    @Test func messagesSayWhatIsWrong() {
        #expect(throws: NspawnError.invalidArgument("working directory 'tmp' is not an absolute path")) {
            try ExecSpec(command: ["ls"], workingDirectory: "tmp").validate()
        }
        #expect(throws: NspawnError.invalidArgument("invalid environment entry 'X': expected NAME=VALUE")) {
            try ExecSpec(command: ["ls"], environment: ["X"]).validate()
        }
    }
}

@Suite struct ExitOutcomeTests {
    @Test func waitStatusesBecomeOutcomes() {
        #expect(ExitOutcome(waitStatus: 0) == .exited(0))
        #expect(ExitOutcome(waitStatus: 3 << 8) == .exited(3))
        #expect(ExitOutcome(waitStatus: 9) == .signaled(9))
        // A core dump sets 0x80 on top of the signal.
        #expect(ExitOutcome(waitStatus: 0x80 | 11) == .signaled(11))
    }

    @Test func shellStatusesFollowTheShell() {
        #expect(ExitOutcome.exited(3).shellStatus == 3)
        #expect(ExitOutcome.signaled(9).shellStatus == 137)
    }

    @Test func startFailuresAreTheShellsCodes() {
        #expect(ExitOutcome.startFailure(.noSuchFileOrDirectory) == .exited(127))
        #expect(ExitOutcome.startFailure(.permissionDenied) == .exited(126))
        #expect(ExitOutcome.startFailure(.execFormatError) == .exited(126))
        #expect(ExitOutcome.startFailure(.isDirectory) == .exited(126))
        // Anything else is nspawnctl's own failure, not a status.
        #expect(ExitOutcome.startFailure(.noMemory) == nil)
        #expect(ExitOutcome.startFailure(.ioError) == nil)
    }

    @Test func aStartFailureSaysWhyOnTheErrorStream() throws {
        let process = try FailedStart(message: "nspawnctl: cannot run 'x' in machine 'm': command not found", tty: false,
                                      outcome: .exited(127), machine: "m")
        defer { process.close() }
        #expect(process.input == nil)
        let error = try #require(process.errorOutput)
        #expect(String(decoding: try error.readAll(limit: 4096), as: UTF8.self)
                == "nspawnctl: cannot run 'x' in machine 'm': command not found\n")
        #expect(try process.output.readAll(limit: 4096).isEmpty)
        #expect(try process.wait() == .exited(127))
    }

    @Test func onATerminalTheStartFailureIsTheOutput() throws {
        let process = try FailedStart(message: "no", tty: true, outcome: .exited(126), machine: "m")
        defer { process.close() }
        #expect(process.errorOutput == nil)
        #expect(try process.output.readAll(limit: 4096) == Array("no\r\n".utf8))
    }
}

@Suite struct MachineLeaderParsingTests {
    static let hybridMounts = """
        76 129 0:51 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:16 - tmpfs tmpfs ro,size=4096k,mode=755
        83 76 0:33 / /sys/fs/cgroup/devices ro,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,devices
        89 76 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:23 - cgroup cgroup rw,cpu,cpuacct
        91 76 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:25 - cgroup2 cgroup rw
        92 76 0:37 /inner /sys/fs/cgroup/sys\\040temd rw,nosuid,nodev,noexec,relatime shared:26 - cgroup cgroup rw,xattr,name=systemd
        """

    @Test func everyWritableHierarchyTheLeaderIsBelowTheRootOfIsJoined() {
        let mounts = CgroupMount.parse(Self.hybridMounts)
        #expect(mounts.count == 4)
        #expect(mounts.last == CgroupMount(controllers: ["name=systemd"], root: "/inner", mountPoint: "/sys/fs/cgroup/sys temd", readOnly: false))
        let leader = """
            12:devices:/machine.slice/m
            11:cpu,cpuacct:/machine.slice/m
            10:pids:/machine.slice/m
            9:name=systemd:/inner/machine.slice/systemd-nspawn@m.service/payload
            8:memory:/
            0::/machine.slice/systemd-nspawn@m.service/payload
            """
        #expect(CgroupMount.directories(of: leader, in: mounts) == [
            "/sys/fs/cgroup/cpu,cpuacct/machine.slice/m",
            "/sys/fs/cgroup/sys temd/machine.slice/systemd-nspawn@m.service/payload",
            "/sys/fs/cgroup/unified/machine.slice/systemd-nspawn@m.service/payload",
        ], "read-only devices, unmounted pids and memory at the root are left alone")
    }

    @Test func aPurelyUnifiedSystemJoinsOneCgroup() {
        let mounts = CgroupMount.parse("30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
        #expect(CgroupMount.directories(of: "0::/machine.slice/x/payload/init.scope\n", in: mounts)
                == ["/sys/fs/cgroup/machine.slice/x/payload/init.scope"])
        #expect(CgroupMount.directories(of: "0::/\n", in: mounts).isEmpty)
        #expect(CgroupMount.directories(of: "0::/a/../../etc\n", in: mounts).isEmpty)
        #expect(CgroupMount.directories(of: "0::/../..\n", in: mounts).isEmpty)
    }

    @Test func theBoundingSetIsHex() {
        #expect(MachineLeader.capabilityBounding(status: "Name:\tsleep\nCapBnd:\t000001ffffffffff\nCapAmb:\t0\n") == 0x1ff_ffff_ffff)
        #expect(MachineLeader.capabilityBounding(status: "Name:\tx\n") == nil)
    }
}

@Suite struct MachinedShellTests {
    @Test func unitPathsAreEscapedAsSystemdDoes() {
        #expect(MachinedShellProcess.objectPath("container-shell@1.service")
                == "/org/freedesktop/systemd1/unit/container_2dshell_401_2eservice")
    }

    static func changed(_ properties: [String: BusValue], interface: String = "org.freedesktop.systemd1.Service") -> [BusValue] {
        [.string(interface),
         .array(elementSignature: "{sv}", properties.map { .dictEntry(.string($0.key), .variant($0.value)) }),
         .strings([])]
    }

    @Test func theShellsStatusComesFromItsUnitsProperties() {
        #expect(MachinedShellProcess.outcome(from: Self.changed(["ExecMainCode": .int32(1), "ExecMainStatus": .int32(3)])) == .exited(3))
        #expect(MachinedShellProcess.outcome(from: Self.changed(["ExecMainCode": .int32(2), "ExecMainStatus": .int32(9)])) == .signaled(9))
        #expect(MachinedShellProcess.outcome(from: Self.changed(["ExecMainCode": .int32(3), "ExecMainStatus": .int32(11)])) == .signaled(11))
    }

    @Test func aRunningShellHasNoStatusYet() {
        #expect(MachinedShellProcess.outcome(from: Self.changed(["ExecMainCode": .int32(0), "ExecMainStatus": .int32(0)])) == nil)
        #expect(MachinedShellProcess.outcome(from: Self.changed(["MainPID": .uint32(40)])) == nil)
        #expect(MachinedShellProcess.outcome(from: Self.changed(["ExecMainCode": .int32(1), "ExecMainStatus": .int32(3)],
                                                               interface: "org.freedesktop.systemd1.Unit")) == nil)
    }
}
