import Testing
#if canImport(Glibc)
import Glibc
#endif
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

@Suite struct CaughtSignalTests {
    @Test func readsTheSigCgtMask() throws {
        // systemd as PID 1 of a container catches, among others, INT (2), TERM (15) and RTMIN+4 (38).
        let status = "Name:\tsystemd\nSigIgn:\t0000000000001000\nSigCgt:\t00000020000144c2\n"
        let caught = try #require(MachineManager.caughtSignals(procStatus: status))
        #expect(caught.contains(SIGTERM))
        #expect(!caught.contains(SIGKILL))
        #expect(caught.contains(38))
        #expect(!caught.contains(SIGHUP))
    }

    @Test func aPayloadWithNoHandlersCatchesNothing() throws {
        let caught = try #require(MachineManager.caughtSignals(procStatus: "Name:\tsleep\nSigCgt:\t0000000000000000\n"))
        #expect(caught.isEmpty)
    }

    @Test func anUnreadableStatusSaysNothing() {
        #expect(MachineManager.caughtSignals(procStatus: "Name:\tx\n") == nil)
        #expect(MachineManager.caughtSignals(procStatus: "SigCgt:\tzz\n") == nil)
    }

    @Test func aLeaderThatCannotBeReadIsAssumedToCatch() {
        #expect(MachineManager.leaderCatches(nil, .term))
        #expect(MachineManager.leaderCatches(UInt32(Int32.max), .term))
    }
}
