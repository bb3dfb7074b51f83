import Testing
@testable import NspawnKit

@Suite struct MachineNameTests {
    @Test(arguments: ["a", "arch", "child01", "web.example-1", "A_B", String(repeating: "x", count: 64), "a.b.c"])
    func acceptsValidNames(_ name: String) throws {
        #expect(try MachineName(name).rawValue == name)
    }

    @Test(arguments: [
        ("", "empty"),
        (String(repeating: "x", count: 65), "longer than 64"),
        (".hidden", "begin with a dot"),
        ("a..b", "'..'"),
        ("..", "begin with a dot"),
        ("a/b", "'/'"),
        ("../etc", "'/'"),
        ("a b", "' '"),
        ("naïve", "'ï'"),
        ("tab\there", "\\x09"),
        ("new\nline", "\\x0a"),
        ("semi;colon", "';'"),
        ("$(reboot)", "'$'"),
    ])
    func rejectsInvalidNames(_ name: String, _ reasonFragment: String) {
        do {
            _ = try MachineName(name)
            Issue.record("accepted \(name.debugDescription)")
        } catch {
            #expect(error.category == .invalidInput)
            #expect(error.description.contains(reasonFragment), "\(error.description)")
            #expect(!error.description.contains("\n"), "control characters must be escaped")
        }
    }

    @Test func serviceUnitNamesTheTemplateInstance() throws {
        #expect(try MachineName("web").serviceUnit == "systemd-nspawn@web.service")
    }

    @Test func unitsAndPathsOfAMachineComeFromOnePlace() throws {
        let name = try MachineName("web")
        #expect(name.socketUnit == "systemd-nspawn@web.socket")
        #expect(name.socketUnitPath == "/etc/systemd/system/systemd-nspawn@web.socket")
        #expect(name.settingsPath == "/etc/systemd/nspawn/web.nspawn")
        #expect(name.runtimeSettingsPath == "/run/systemd/nspawn/web.nspawn")
        #expect(name.adjacentSettingsPath(imagePath: "/var/lib/machines/web") == "/var/lib/machines/web.nspawn")
        #expect(name.flavorDropInPath == "/etc/systemd/system/systemd-nspawn@web.service.d/50-flavor.conf")
        #expect(name.controlDropIns.first == "/run/systemd/system.control/systemd-nspawn@web.service.d/50-MemoryMax.conf")
        #expect(MachineUnits.machineName(ofUnit: name.serviceUnit, suffix: ".service") == "web")
        #expect(MachineUnits.machineName(ofUnit: name.socketUnit, suffix: ".socket") == "web")
        #expect(MachineUnits.machineName(ofUnit: "systemd-nspawn@.service", suffix: ".service") == nil)
        #expect(MachineUnits.machineName(ofUnit: "other@web.service", suffix: ".service") == nil)
    }
}
