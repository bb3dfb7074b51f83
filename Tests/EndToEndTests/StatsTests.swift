import Foundation
import Testing

/// `nspawnctl stats` against machines doing known work, held against the kernel's other views
/// through tools we did not write: ps for CPU time, systemd-cgtop and `systemctl show` where
/// this host's cgroups let systemd account, iproute2 for the network counters.
@Suite("Stats", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct StatsEndToEndTests {
    struct Sample: Decodable {
        var name: String
        var cpuSeconds: Double?
        var cpuPercent: Double?
        var memoryBytes: UInt64?
        var tasks: UInt64?
        var networkReceiveBytes: UInt64?
        var networkTransmitBytes: UInt64?
        var uptimeSeconds: Double?
    }

    static func samples(_ arguments: String) throws -> [Sample] {
        try decodeJSON([Sample].self, from: try Testbed.mustSh("nspawnctl stats --json \(arguments)").stdout)
    }

    /// A busybox machine whose payload fills 100 MB of its /tmp (tmpfs, charged to it), then
    /// keeps one CPU busy.
    static func busyMachine(_ name: String) throws {
        try Fixture.busybox(name)
        try Testbed.mustSh("""
            set -e
            cd /var/lib/machines/\(name)/bin
            for tool in dd ip; do ln -sf busybox $tool; done
            printf '[Exec]\\nBoot=no\\nParameters=/bin/sh -c "ip link set host0 up; dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>/dev/null; while :; do :; done"\\n' \
                > /etc/systemd/nspawn/\(name).nspawn
            machinectl start \(name)
            for i in $(seq 1 100); do [ "$(machinectl show \(name) -p State --value 2>/dev/null)" = running ] && exit 0; sleep 0.1; done
            exit 1
            """)
        sleep(2)
    }

    @Test func cpuMemoryAndTasksAgreeWithTheKernelsOtherViews() throws {
        let name = "statsbusy"
        try Fixture.with([name]) {
            try Self.busyMachine(name)
            // The kernel's CPU time of the busy payload (/proc/PID/stat) and ours, over the same three seconds.
            let result = try Testbed.mustSh("""
                leader=$(machinectl show \(name) -p Leader --value)
                out=$(mktemp)
                nspawnctl stats \(name) --watch --interval 1 --json > "$out" &
                watcher=$!
                # utime + stime in clock ticks, as ps reads them, but finer than ps's whole seconds.
                ticks() { awk '{print $14 + $15}' /proc/"$leader"/stat; }
                hz=$(getconf CLK_TCK)
                t0=$(date +%s%N); c0=$(ticks)
                sleep 3.2
                t1=$(date +%s%N); c1=$(ticks)
                kill $watcher; wait $watcher 2>/dev/null
                echo "ps=$(( (c1 - c0) * 100000000000 / hz / (t1 - t0) ))"
                cat "$out"; rm -f "$out"
                """)
            let lines = result.stdout.split(separator: "\n")
            let psPercent = try #require(lines.first.flatMap { Double($0.dropFirst(3)) }, "\(result)")
            let watched = try lines.dropFirst().map { try decodeJSON([Sample].self, from: String($0)) }
            #expect(watched.count >= 3, "\(result)")
            #expect(watched.first?.first?.cpuPercent == nil, "a first sample has no CPU %")
            let percents = watched.dropFirst().compactMap { $0.first?.cpuPercent }
            #expect(percents.count >= 2 && percents.allSatisfy { abs($0 - psPercent) <= 15 }, "ours \(percents), ps \(psPercent)")
            #expect(psPercent > 50, "the payload was not busy: \(psPercent)")

            // systemd-cgtop's reading where systemd accounts CPU here (a cgroup v1 host leaves it '-').
            let cgtop = try Testbed.mustSh("systemd-cgtop -b -n 2 -d 2 --raw -P machine.slice/systemd-nspawn@\(name).service | tail -1").stdout
            let cgtopFields = cgtop.split(separator: " ", omittingEmptySubsequences: true)
            if cgtopFields.count >= 3, let cgtopPercent = Double(cgtopFields[2]) {
                let ours = try Testbed.mustSh("nspawnctl stats \(name) --watch --interval 2 --json & p=$!; sleep 2.5; kill $p").stdout
                    .split(separator: "\n").compactMap { try? decodeJSON([Sample].self, from: String($0)).first?.cpuPercent }
                #expect(ours.contains { abs($0 - cgtopPercent) <= 15 }, "ours \(ours), cgtop \(cgtopPercent)")
            }

            let sample = try #require(try Self.samples(name).first)
            // Memory: within 10 % of systemd's, or unknown to both (cgroup v1 memory controller).
            let memoryCurrent = try Testbed.mustSh("systemctl show systemd-nspawn@\(name).service -p MemoryCurrent --value").trimmed
            if let systemd = Double(memoryCurrent) {
                let ours = Double(try #require(sample.memoryBytes))
                #expect(abs(ours - systemd) <= systemd * 0.1 && ours >= 100 * 1024 * 1024, "ours \(ours), systemd \(systemd)")
            } else {
                #expect(sample.memoryBytes == nil, "systemd does not account memory here (\(memoryCurrent)), yet we report \(String(describing: sample.memoryBytes))")
            }
            // Tasks: every thread in the unit's cgroup tree, as the shell counts cgroup.threads.
            let threads = try Testbed.mustSh("""
                cg=$(awk -F: '$1 == 0 {print $3}' /proc/$(machinectl show \(name) -p Leader --value)/cgroup | sed 's|/payload$||')
                for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do [ -e "$root/cgroup.controllers" ] && break; done
                find "$root$cg" -name cgroup.threads -exec cat {} + | wc -l
                """).trimmed
            #expect(sample.tasks.map(String.init) == threads, "ours \(String(describing: sample.tasks)), cgroup.threads \(threads)")
            #expect((sample.cpuSeconds ?? 0) > 1 && (sample.uptimeSeconds ?? 0) > 2)

            // status shows the same numbers.
            let status = try Testbed.mustSh("nspawnctl status \(name)").stdout
            #expect(status.contains("Use: CPU ") && status.contains("tasks"), "\(status)")
        }
    }

    @Test func networkBytesMoveAfterATransferAcrossTheVeth() throws {
        let name = "statsnet"
        try Fixture.with([name]) {
            try Self.busyMachine(name)
            let before = try #require(try Self.samples(name).first)
            // Link-local addresses come after duplicate address detection: ping until the guest answers.
            try Testbed.mustSh("""
                ip link set ve-\(name) up
                for i in $(seq 1 50); do busybox ping -6 -c 1 -W 1 -I ve-\(name) ff02::1 >/dev/null 2>&1 && break; sleep 0.2; done
                busybox ping -6 -c 5 -i 0.2 -s 1000 -I ve-\(name) ff02::1 >/dev/null
                """)
            let after = try #require(try Self.samples(name).first)
            let received = (after.networkReceiveBytes ?? 0) - (before.networkReceiveBytes ?? 0)
            #expect(received >= 5 * 1000, "the machine received \(received) bytes from five 1000-byte pings")
            // iproute2's view of the same interfaces, read through netlink inside the namespace.
            let ip = try Testbed.mustSh("""
                nsenter -t $(machinectl show \(name) -p Leader --value) -n ip -s -j link show | \
                python3 -c 'import json,sys; links=[l for l in json.load(sys.stdin) if l["ifname"] != "lo"]; print(sum(l["stats64"]["rx"]["bytes"] for l in links), sum(l["stats64"]["tx"]["bytes"] for l in links))'
                """).stdout.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            // Read after ours: the kernel's own traffic (router and multicast listener messages) may add a little.
            let (rx, tx) = (after.networkReceiveBytes ?? .max, after.networkTransmitBytes ?? .max)
            #expect(ip.count == 2 && ip[0] >= rx && ip[0] - rx <= 1024 && ip[1] >= tx && ip[1] - tx <= 1024,
                    "ip \(ip), ours \(rx) \(tx)")
        }
    }

    @Test func aHundredRunningMachinesInOneCall() throws {
        let names = (1...100).map { String(format: "stats%03d", $0) }
        // One script for all hundred: Fixture.remove's per-machine round trips would take minutes.
        let cleanup = """
            machinectl terminate \(names.joined(separator: " ")) 2>/dev/null
            for i in $(seq 1 300); do [ $(machinectl list --no-legend | grep -c '^stats[0-9]') -eq 0 ] && break; sleep 0.2; done
            for name in \(names.joined(separator: " ")); do
                systemctl reset-failed systemd-nspawn@$name.service 2>/dev/null
                rm -rf /var/lib/machines/$name /etc/systemd/nspawn/$name.nspawn
            done
            true
            """
        try Testbed.sh(cleanup)
        defer { _ = try? Testbed.sh(cleanup) }
        do {
            try Testbed.mustSh("""
                set -e
                mkdir -p /etc/systemd/nspawn
                for name in \(names.joined(separator: " ")); do
                    root=/var/lib/machines/$name
                    mkdir -p $root/bin $root/usr $root/etc $root/proc $root/sys $root/dev $root/run $root/tmp $root/var
                    ln /bin/busybox $root/bin/busybox 2>/dev/null || cp /bin/busybox $root/bin/busybox
                    ln -s busybox $root/bin/sleep
                    printf 'ID=busybox\\n' > $root/etc/os-release
                    printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1000000\\n[Network]\\nPrivate=no\\nVirtualEthernet=no\\n' > /etc/systemd/nspawn/$name.nspawn
                done
                machinectl start \(names.joined(separator: " "))
                """)
            try Testbed.mustSh("for i in $(seq 1 300); do [ $(machinectl list --no-legend | grep -c '^stats[0-9]') -ge 100 ] && exit 0; sleep 0.2; done; exit 1")
            let timed = try Testbed.mustSh("s=$(date +%s%N); nspawnctl stats --json > /tmp/stats100.json; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); cat /tmp/stats100.json")
            let lines = timed.stdout.split(separator: "\n", maxSplits: 1)
            let sampled = try decodeJSON([Sample].self, from: String(lines[1]))
            let ours = sampled.filter { $0.name.hasPrefix("stats") }
            #expect(Set(ours.map(\.name)) == Set(names), "\(ours.count) of 100 in one call")
            #expect(ours.allSatisfy { $0.tasks != nil && $0.cpuSeconds != nil && $0.uptimeSeconds != nil })
            #expect(ours.allSatisfy { $0.networkReceiveBytes == nil }, "host-network machines have no counters of their own")
            print("stats of \(sampled.count) machines: \(lines[0]) ms")
            let served = try decodeJSON([Sample].self, from: try Testbed.mustSh("nspawnctl --api stats --json").stdout)
            #expect(Set(served.map(\.name)).isSuperset(of: names))
        }
    }

    @Test func badRequestsAreRefusedWithTheirCause() throws {
        let name = "statsstopped"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            for (arguments, code, words) in [
                ("stats nosuchmachine", 3, "no machine or image 'nosuchmachine'"),
                ("stats \(name)", 5, "machine '\(name)' is not running"),
                ("--api stats \(name)", 5, "machine '\(name)' is not running"),
                ("stats ../x", 2, "invalid machine name"),
                ("stats --interval 1", 2, "--interval needs --watch"),
            ] as [(String, Int32, String)] {
                let result = try Testbed.sh("nspawnctl \(arguments)")
                #expect(result.status == code, "\(arguments): \(result)")
                #expect(result.stderr.contains(words), "\(arguments): \(result.stderr)")
            }
        }
    }
}
