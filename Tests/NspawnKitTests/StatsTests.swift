import Testing
@testable import NspawnKit

@Suite struct StatsTests {
    @Test func theUnitsCgroupIsThePrefixUpToTheUnit() {
        let file = "0::/machine.slice/systemd-nspawn@web.service/payload\n"
        #expect(CgroupStats.unitCgroup(file, unit: "systemd-nspawn@web.service") == "/machine.slice/systemd-nspawn@web.service")
        #expect(CgroupStats.unitCgroup(file, unit: "systemd-nspawn@db.service") == nil)
        #expect(CgroupStats.unitCgroup("12:pids:/machine.slice/systemd-nspawn@web.service\n", unit: "systemd-nspawn@web.service") == nil, "v1 lines are not read")
    }

    @Test func kernelFilesAreSummed() {
        let io = "8:0 rbytes=1000 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=7 rios=1 wios=1\n"
        #expect(CgroupStats.ioTotals(io) == (1005, 27))
        let dev = """
            Inter-|   Receive                                                |  Transmit
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
                lo:  999999      10    0    0    0     0          0         0   999999      10    0    0    0     0       0          0
             host0:    1500      12    0    0    0     0          0         0     2500      20    0    0    0     0       0          0
              eth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
            """
        #expect(CgroupStats.networkTotals(dev) == (1600, 2550))
        #expect(CgroupStats.keyed("usage_usec 2500000\nuser_usec 1\nnr_periods x\n") == ["usage_usec": 2_500_000, "user_usec": 1])
    }

    @Test func cpuPercentIsUseOverWallTime() {
        var before = MachineStats(name: "web", sampledUsec: 1_000_000)
        before.cpuSeconds = 10
        var after = MachineStats(name: "web", sampledUsec: 3_000_000)
        after.cpuSeconds = 13
        #expect(after.withCPUPercent(since: before).cpuPercent == 150)
        #expect(after.withCPUPercent(since: nil).cpuPercent == nil)
        var other = before
        other.name = "db"
        #expect(after.withCPUPercent(since: other).cpuPercent == nil, "another machine's sample")
        var restarted = after
        restarted.cpuSeconds = 1
        #expect(restarted.withCPUPercent(since: before).cpuPercent == nil, "a counter that went back (a restart)")
    }
}
