import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import NspawnKit

@Suite("Machine probe: os-release parsing")
struct EnvironmentFileTests {
    private func pairs(_ text: String) -> [String: String]? { EnvironmentFile.pairs(Array(text.utf8)) }

    @Test func readsDebiansOSReleaseAsMachinedDoes() {
        let debian = """
            PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
            NAME="Debian GNU/Linux"
            VERSION_ID="12"
            ID=debian
            HOME_URL="https://www.debian.org/"

            """
        let parsed = pairs(debian)
        #expect(parsed?["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)")
        #expect(parsed?["ID"] == "debian")
        #expect(parsed?.count == 5)
        #expect(parsed.flatMap(osDisplayName) == "Debian GNU/Linux 12 (bookworm)")
    }

    @Test func quotingEscapesAndCommentsFollowSystemd() {
        let text = "# comment \"x\n; also a comment\n  A = plain value   \nB='single  # kept'\nC=\"a\\\"b\\$c\\qd\"\n"
            + "D=one\\\ntwo\nE=\"multi\nline\"\nF=x 'y' \"z\"\nG=\nH\nI=first\nI=second\nJ='x' \n K=end"
        let parsed = pairs(text)
        #expect(parsed?["A"] == "plain value")
        #expect(parsed?["B"] == "single  # kept")
        #expect(parsed?["C"] == "a\"b$c\\qd", "known escapes lose the backslash, others keep it")
        #expect(parsed?["D"] == "onetwo", "an escaped newline is eaten")
        #expect(parsed?["E"] == "multi\nline")
        #expect(parsed?["F"] == "x 'y' \"z\"", "quotes are literal after an unquoted start")
        #expect(parsed?["G"] == "")
        #expect(parsed?["H"] == nil, "a line without '=' is dropped")
        #expect(parsed?["I"] == "second")
        #expect(parsed?["J"] == "x")
        #expect(parsed?["K"] == "end", "the last line needs no newline")
        #expect(parsed?.count == 10)
    }

    @Test func invalidUTF8FailsAsInMachinedAndNULEndsTheText() {
        #expect(EnvironmentFile.pairs(Array("ID=a\nNAME=".utf8) + [0xC3, 0x28] + Array("\n".utf8)) == nil)
        #expect(EnvironmentFile.pairs(Array("ID=".utf8) + [0xEF, 0xB7, 0x90] + Array("\n".utf8)) == nil, "noncharacters are invalid to systemd")
        #expect(EnvironmentFile.pairs(Array("# ".utf8) + [0xEF, 0xBF, 0xBF, 0xFF] + Array("\nID=ok\n".utf8)) == ["ID": "ok"],
                "a comment is never checked")
        #expect(EnvironmentFile.pairs(Array("ID=a\n".utf8) + [0] + Array("NAME=b\n".utf8)) == ["ID": "a"])
        #expect(pairs("NAME=Überall\n") == ["NAME": "Überall"])
    }
}

@Suite("Machine probe: netlink addresses")
struct LocalAddressesTests {
    /// One RTM_NEWADDR message as the kernel writes it (little-endian host).
    private func newaddr(family: UInt8, flags: UInt8 = 0, scope: UInt8, ifindex: UInt32,
                         local: [UInt8]? = nil, address: [UInt8]? = nil, sequence: UInt32 = 1) -> [UInt8] {
        var attributes: [UInt8] = []
        func attribute(_ type: UInt16, _ payload: [UInt8]) {
            attributes += le(UInt16(4 + payload.count)) + le(type) + payload
            while attributes.count % 4 != 0 { attributes.append(0) }
        }
        if let address { attribute(1, address) }  // IFA_ADDRESS
        if let local { attribute(2, local) }  // IFA_LOCAL
        attribute(3, Array("eth0\0".utf8))  // IFA_LABEL, ignored
        let body: [UInt8] = [family, 24, flags, scope] + le(ifindex) + attributes
        return le(UInt32(16 + body.count)) + le(UInt16(20)) + le(UInt16(2)) + le(sequence) + le(UInt32(0)) + body
    }

    private func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private var done: [UInt8] { le(UInt32(20)) + le(UInt16(3)) + le(UInt16(2)) + le(UInt32(1)) + le(UInt32(0)) + le(Int32(0)) }

    @Test func theRequestIsADumpOfEveryFamily() {
        let request = LocalAddresses.dumpRequest(sequence: 7)
        #expect(request == le(UInt32(24)) + le(UInt16(22)) + le(UInt16(0x301)) + le(UInt32(7)) + le(UInt32(0)) + [UInt8](repeating: 0, count: 8))
    }

    @Test func selectsAndOrdersAsLocalAddressesDoes() throws {
        let v6link: [UInt8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0xff, 0xfe, 0, 0, 1]
        let v6global: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        let datagram = newaddr(family: 2, scope: 254, ifindex: 1, local: [127, 0, 0, 1], address: [127, 0, 0, 1])  // host scope
            + newaddr(family: 10, scope: 253, ifindex: 3, address: v6link)  // link
            + newaddr(family: 10, scope: 0, ifindex: 3, address: v6global)
            + newaddr(family: 2, scope: 0, ifindex: 3, local: [10, 0, 0, 9], address: [10, 0, 0, 1])  // peer: IFA_LOCAL wins
            + newaddr(family: 2, scope: 0, ifindex: 2, local: [192, 168, 1, 5], address: [192, 168, 1, 5])
            + newaddr(family: 2, flags: 0x20, scope: 0, ifindex: 2, local: [192, 168, 1, 6])  // deprecated
            + newaddr(family: 2, scope: 255, ifindex: 2, local: [192, 168, 1, 7])  // nowhere
            + newaddr(family: 2, scope: 0, ifindex: 2, local: [192, 168, 1, 5])  // duplicate
            + newaddr(family: 10, scope: 0, ifindex: 4, address: [1, 2, 3])  // too short: skipped
            + newaddr(family: 17, scope: 0, ifindex: 5, address: [1, 2, 3, 4])  // not IP
            + done
        let batch = try LocalAddresses.parse(datagram)
        #expect(batch.done)
        #expect(batch.messages.count == 10)
        let addresses = LocalAddresses.formatted(LocalAddresses.select(batch.messages))
        #expect(addresses == ["192.168.1.5", "10.0.0.9", "2001:db8::2", "fe80::1000:ff:fe00:1"])
    }

    @Test func aDumpSpreadOverDatagramsEndsAtDone() throws {
        let first = try LocalAddresses.parse(newaddr(family: 2, scope: 0, ifindex: 2, local: [10, 1, 1, 1]))
        #expect(!first.done && first.messages.count == 1)
        let last = try LocalAddresses.parse(done)
        #expect(last.done && last.messages.isEmpty)
    }

    @Test func kernelErrorsAndTruncationAreErrors() {
        let refusal = le(UInt32(36)) + le(UInt16(2)) + le(UInt16(0)) + le(UInt32(1)) + le(UInt32(0)) + le(Int32(-1)) + [UInt8](repeating: 0, count: 16)
        #expect(throws: LocalAddresses.ParseError.kernel(.notPermitted)) { try LocalAddresses.parse(refusal) }
        let message = newaddr(family: 2, scope: 0, ifindex: 2, local: [10, 1, 1, 1])
        #expect(throws: LocalAddresses.ParseError.malformed) { try LocalAddresses.parse(Array(message.dropLast(4))) }
        var badAttribute = message
        badAttribute[24] = 200  // the first attribute claims more than the message holds
        #expect(throws: LocalAddresses.ParseError.malformed) { try LocalAddresses.parse(badAttribute) }
    }
}

@Suite("Machine probe: leader checks")
struct MachineProbeLeaderTests {
    @Test func theLeadersCgroupMustLieInTheMachinesUnit() {
        let nspawn = "0::/machine.slice/systemd-nspawn@web.service/payload\n"
        #expect(MachineProbe.Leader.cgroups(nspawn, contain: "systemd-nspawn@web.service"))
        #expect(!MachineProbe.Leader.cgroups(nspawn, contain: "systemd-nspawn@we.service"))
        #expect(!MachineProbe.Leader.cgroups("0::/user.slice/session-1.scope\n", contain: "systemd-nspawn@web.service"))
        let hybrid = "12:cpu,cpuacct:/\n1:name=systemd:/machine.slice/machine-web.scope\n0::/\n"
        #expect(MachineProbe.Leader.cgroups(hybrid, contain: "machine-web.scope"))
    }

    @Test func aRequestThatIsNotAContainerIsLeftToMachined() {
        var properties = MachineProperties([:])
        properties.leader = 1
        properties.machineClass = "container"
        properties.unit = "machine-x.scope"
        #expect(MachineProbe.probe([.init(name: "init", properties: properties)]).isEmpty, "PID 1 is never a machine's leader")
        properties.leader = UInt32(getpid())
        properties.machineClass = "vm"
        #expect(MachineProbe.probe([.init(name: "vm", properties: properties)]).isEmpty)
        properties.machineClass = "container"
        #expect(MachineProbe.probe([.init(name: "us", properties: properties)]).isEmpty, "our cgroup is no machine's")
    }
}
