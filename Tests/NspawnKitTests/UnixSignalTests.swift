import Testing
@testable import NspawnKit

@Suite struct UnixSignalTests {
    @Test(arguments: [("TERM", 15), ("SIGTERM", 15), ("sigkill", 9), ("9", 9), ("HUP", 1), ("INT", 2)])
    func parsesNamesAndNumbers(_ text: String, _ number: Int32) throws {
        #expect(try UnixSignal(parsing: text).number == number)
    }

    @Test func realtimeSignalsAreRelativeToRTMIN() throws {
        let rtmin = try UnixSignal(parsing: "RTMIN").number
        #expect(try UnixSignal(parsing: "SIGRTMIN+4").number == rtmin + 4)
        #expect(UnixSignal.powerOff.number == rtmin + 4)
        #expect(UnixSignal.powerOff.name == "SIGRTMIN+4")
        #expect(try UnixSignal(parsing: "RTMAX-1").number == UnixSignal(parsing: "RTMAX").number - 1)
    }

    @Test(arguments: ["", "0", "-9", "65", "FOO", "SIG", "RTMIN+99", "RTMIN-1", "RTMIN+", "TERM;ls", "1e3"])
    func rejectsNonsense(_ text: String) {
        #expect(throws: NspawnError.self) { try UnixSignal(parsing: text) }
    }
}
