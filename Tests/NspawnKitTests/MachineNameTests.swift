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
}
