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

@Suite struct HandledSignalTests {
    /// systemd as a container's PID 1 (read in the testbed): it blocks its signals and reads them
    /// from a signalfd, so RTMIN+4 shows in SigBlk, not SigCgt.
    static let systemd = "Name:\tsystemd\nSigBlk:\t7fe3c0fe28014a03\nSigIgn:\t0000000000001000\nSigCgt:\t00000000000004ec\n"

    @Test func handlersAndBlockedSignalsBothCount() throws {
        let handled = try #require(MachineManager.handledSignals(procStatus: Self.systemd))
        #expect(handled.contains(UnixSignal.powerOff.number))
        #expect(handled.contains(SIGTERM))
        #expect(handled.contains(SIGSEGV), "caught with a handler (SigCgt)")
        #expect(!handled.contains(SIGKILL))
    }

    @Test func aPayloadWithNoHandlersHandlesNothing() throws {
        let handled = try #require(MachineManager.handledSignals(procStatus: "Name:\tsleep\nSigBlk:\t0000000000000000\nSigCgt:\t0000000000000000\n"))
        #expect(handled.isEmpty)
    }

    @Test func anUnreadableStatusSaysNothing() {
        #expect(MachineManager.handledSignals(procStatus: "Name:\tx\nSigBlk:\t0\n") == nil)
        #expect(MachineManager.handledSignals(procStatus: "SigBlk:\t0\nSigCgt:\tzz\n") == nil)
    }

    @Test func aLeaderThatCannotBeReadIsAssumedToCatch() {
        #expect(MachineManager.leaderCatches(nil, .term))
        #expect(MachineManager.leaderCatches(UInt32(Int32.max), .term))
    }
}
