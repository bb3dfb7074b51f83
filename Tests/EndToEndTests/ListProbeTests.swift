import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ls` and `status` learn os-release and addresses of running containers from the leader
/// (its root, its network namespace) instead of machined's fork per machine and question.
/// Every answer is held against machined's own, asked with busctl.
@Suite("ListProbe", .serialized, .usesDaemon, .enabled(if: Testbed.isConfigured, "needs the testbed: run scripts/test"))
struct ListProbeTests {
    struct Listed: Decodable {
        var name: String
        var os: String?
        var addresses: [String]
    }

    struct Status: Decodable {
        var os: String?
        var addresses: [String]
    }

    /// machined's GetMachineOSRelease PRETTY_NAME; nil when it answers with an error.
    static func machinedOS(_ name: String) throws -> String? {
        let reply = try Testbed.run(["busctl", "--json=short", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                                     "org.freedesktop.machine1.Manager", "GetMachineOSRelease", "s", name])
        guard reply.status == 0 else { return nil }
        let object = try JSONSerialization.jsonObject(with: Data(reply.stdout.utf8)) as? [String: Any]
        let pairs = (object?["data"] as? [Any])?.first as? [String: String]
        return pairs?["PRETTY_NAME"]
    }

    /// machined's GetMachineAddresses, formatted with inet_ntop; [] when it refuses (no private network).
    static func machinedAddresses(_ name: String) throws -> [String] {
        let reply = try Testbed.run(["busctl", "--json=short", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                                     "org.freedesktop.machine1.Manager", "GetMachineAddresses", "s", name])
        guard reply.status == 0 else { return [] }
        let object = try JSONSerialization.jsonObject(with: Data(reply.stdout.utf8)) as? [String: Any]
        let rows = ((object?["data"] as? [Any])?.first as? [[Any]]) ?? []
        return rows.compactMap { row in
            guard row.count == 2, let family = row[0] as? Int, let bytes = (row[1] as? [Int])?.map(UInt8.init) else { return nil }
            var text = [CChar](repeating: 0, count: 64)
            guard inet_ntop(Int32(family), bytes, &text, 64) != nil else { return nil }
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    static func listed() throws -> [String: Listed] {
        let list = try decodeJSON([Listed].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
        return Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0) })
    }

    static func status(_ name: String) throws -> Status {
        try decodeJSON(Status.self, from: try Testbed.nspawnctl("status", name, "--json").stdout)
    }

    static func startAndWait(_ names: [String]) throws {
        try Testbed.mustSh("""
            machinectl start \(names.joined(separator: " "))
            for name in \(names.joined(separator: " ")); do
                for i in $(seq 1 300); do [ "$(machinectl show $name -p State --value 2>/dev/null)" = running ] && continue 2; sleep 0.1; done
                echo "$name is not running after 30 s" >&2; exit 1
            done
            """)
    }

    @Test func aGuestSymlinkCannotPointTheOSReleaseReadAtTheHost() throws {
        let names = ["e2e-probe-rel", "e2e-probe-abs", "e2e-probe-gone"]
        try Fixture.with(names) {
            for name in names { try Fixture.busybox(name) }
            try Testbed.mustSh("""
                set -e
                test -e /usr/lib/os-release  # the host file a naive read would find
                cd /var/lib/machines
                mkdir -p e2e-probe-rel/usr/lib e2e-probe-abs/usr/share
                printf 'PRETTY_NAME="Guest inside"\\n' > e2e-probe-rel/usr/lib/os-release
                ln -sfn ../../../../../../../usr/lib/os-release e2e-probe-rel/etc/os-release
                printf 'PRETTY_NAME="Guest absolute"\\n' > e2e-probe-abs/usr/share/guest-os-release
                ln -sfn /usr/share/guest-os-release e2e-probe-abs/etc/os-release
                ln -sfn /usr/lib/os-release e2e-probe-gone/etc/os-release
                """)
            try Self.startAndWait(names)
            let listed = try Self.listed()
            let expected = ["e2e-probe-rel": "Guest inside", "e2e-probe-abs": "Guest absolute", "e2e-probe-gone": nil]
            for (name, os) in expected {
                #expect(listed[name]?.os == os, "\(name): \(String(describing: listed[name]))")
                #expect(try Self.machinedOS(name) == os, "machined agrees on \(name)")
                #expect(try Self.status(name).os == os, "status of \(name)")
            }
            // Only this test's rows: other suites run Debian guests at the same time.
            let rows = try Testbed.nspawnctl("ls").stdout.split(separator: "\n").filter { $0.hasPrefix("e2e-probe-") }
            #expect(rows.count == names.count && !rows.contains { $0.contains("Debian") }, "nothing shows the host's os-release: \(rows)")
        }
    }

    @Test func privateNetworkAddressesAreMachinedsInMachinedsOrder() throws {
        let name = "e2e-probe-net"
        try Fixture.with([name]) {
            try Fixture.busybox(name)  // the unit's default --network-veth gives it host0
            try Self.startAndWait([name])
            // A secondary, a peer address (IFA_LOCAL differs from IFA_ADDRESS), a deprecated one and
            // loopback, which machined leaves out; no link-local address, which would come and go.
            try Testbed.mustSh("""
                set -e
                leader=$(machinectl show \(name) -p Leader --value)
                nsenter -t $leader -n sh -c '
                    ip link set lo up
                    ip link set host0 addrgenmode none
                    ip link set host0 up
                    ip addr add 10.231.7.3/24 dev host0
                    ip addr add 10.231.7.2/24 dev host0
                    ip addr add 10.231.8.9 peer 10.231.8.1 dev host0
                    ip -6 addr add fd00:e2e::9/64 dev host0 nodad preferred_lft 0
                    ip -6 addr add fd00:e2e::2/64 dev host0 nodad'
                """)
            let machined = try Self.machinedAddresses(name)
            #expect(machined == ["10.231.7.2", "10.231.7.3", "10.231.8.9", "fd00:e2e::2"], "the fixture as machined sees it")
            #expect(try Self.listed()[name]?.addresses == machined)
            #expect(try Self.status(name).addresses == machined)
            let table = try Testbed.run(["machinectl", "status", name, "--no-pager"]).stdout
            #expect(machined.allSatisfy { table.contains($0) }, "machinectl status shows the same: \(table)")
        }
    }

    /// Runs `command` in the testbed while busctl monitors machined's bus traffic; returns both outputs.
    static func monitored(_ command: String) throws -> (traffic: String, output: String) {
        let result = try Testbed.mustSh("""
            busctl monitor --json=short org.freedesktop.machine1 > /tmp/e2e-probe-monitor 2>/dev/null & monitor=$!
            sleep 1
            \(command) > /tmp/e2e-probe-out
            sleep 0.5
            kill -KILL $monitor; wait $monitor 2>/dev/null  # busctl monitor outlived TERM here
            cat /tmp/e2e-probe-monitor; echo '=== output'; cat /tmp/e2e-probe-out
            """).stdout
        let parts = result.components(separatedBy: "=== output\n")
        return (parts[0], parts.count > 1 ? parts[1] : "")
    }

    /// The calls in `traffic` (busctl monitor JSON lines) made by nspawnctl's own connections:
    /// those that asked for both ListMachines and ListImages. A `machinectl list` run by a parallel
    /// suite asks GetMachineOSRelease of every machine, this test's too, but never ListImages.
    static func nspawnctlCalls(_ traffic: String) -> [BusCall] {
        let calls: [BusCall] = traffic.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  object["type"] as? String == "method_call",
                  let sender = object["sender"] as? String, let member = object["member"] as? String else { return nil }
            let payload = object["payload"] as? [String: Any]
            return BusCall(sender: sender, member: member, arguments: (payload?["data"] as? [Any])?.compactMap { $0 as? String } ?? [])
        }
        let senders = Set(calls.map(\.sender)).filter { sender in
            let members = Set(calls.filter { $0.sender == sender }.map(\.member))
            return members.contains("ListMachines") && members.contains("ListImages")
        }
        return calls.filter { senders.contains($0.sender) }
    }

    struct BusCall: Sendable {
        var sender: String
        var member: String
        var arguments: [String]
    }

    @Test func machinedIsNotAskedWhatTheProbeLearnsButIsWhenItCannot() throws {
        let name = "e2e-probe-fast"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Self.startAndWait([name])
            let machinedAddresses = try Self.machinedAddresses(name)

            let root = try Self.monitored("nspawnctl ls --json")
            let calls = Self.nspawnctlCalls(root.traffic)
            let sawList = calls.contains { $0.member == "ListMachines" }
            #expect(sawList, "the monitor sees nspawnctl's calls: \(root.traffic.prefix(2000))")
            let asked = calls.filter { ["GetMachineOSRelease", "GetMachineAddresses"].contains($0.member) && $0.arguments == [name] }.map(\.member)
            #expect(asked.isEmpty, "root reads the leader's root and namespace itself: \(asked)")
            let rows = try decodeJSON([Listed].self, from: root.output)
            #expect(rows.first { $0.name == name }?.os == "BusyBox sleeper")
            #expect(rows.first { $0.name == name }?.addresses == machinedAddresses)

            // A VM's leader is no container's: machined is asked (and says it cannot tell).
            let vm = "e2e-probe-vm"
            try Fixture.with([vm]) {
                try Testbed.mustSh("""
                    set -e
                    systemd-run --quiet --collect --unit=\(vm)-leader sleep 1000000
                    leader=$(systemctl show -p MainPID --value \(vm)-leader.service)
                    busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager \\
                        CreateMachine 'sayssusa(sv)' \(vm) 0 e2e vm $leader '' 0
                    """)
                let fallback = try Self.monitored("nspawnctl ls --json")
                let vmCalls = Self.nspawnctlCalls(fallback.traffic).filter { $0.arguments == [vm] }.map(\.member)
                let askedMachined = vmCalls.contains("GetMachineOSRelease") && vmCalls.contains("GetMachineAddresses")
                #expect(askedMachined,
                        "the VM's details are machined's to tell")
                let rows = try decodeJSON([Listed].self, from: fallback.output)
                #expect(rows.first { $0.name == vm }.map { $0.os == nil && $0.addresses.isEmpty } == true, "\(rows.map(\.name))")
                #expect(rows.first { $0.name == name }?.os == "BusyBox sleeper")
                #expect(try Self.machinedOS(vm) == nil)
            }
        }
    }
}
