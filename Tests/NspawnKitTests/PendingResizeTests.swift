import FoundationEssentials
import Testing
@testable import NspawnKit

@Suite("Pending resizes")
struct PendingResizeTests {
    static let pending = PendingResize(from: "small", to: "medium", since: Date(timeIntervalSince1970: 1_796_000_000),
                                       confirmsAt: Date(timeIntervalSince1970: 1_796_086_400))

    @Test func theTimerUnitIsTheRecordAndReadsBackTheSame() throws {
        let name = try MachineName("web")
        let text = Self.pending.timerText(machine: name)
        #expect(PendingResize(timerText: text) == Self.pending)
        #expect(text.contains("OnCalendar=2026-12-01 00:53:20 UTC\n"), "\(text)")
        #expect(text.contains("Persistent=yes\n") && text.contains("WantedBy=timers.target\n"))
        // No flavor before: the key is empty and reads back as nil.
        var none = Self.pending
        none.from = nil
        #expect(PendingResize(timerText: none.timerText(machine: name)) == none)
        #expect(PendingResize(timerText: "[Timer]\nOnCalendar=daily\n") == nil, "a timer we did not write is no pending resize")
    }

    @Test func theServiceConfirmsThroughNspawnctl() throws {
        let text = PendingResize.serviceText(machine: try MachineName("web.1"), nspawnctl: "/usr/local/bin/nspawnctl")
        #expect(text.contains("\nExecStart=/usr/local/bin/nspawnctl resize --confirm web.1\n"), "\(text)")
        #expect(text.contains("\nType=oneshot\n"))
    }

    @Test func calendarTimesAreUTCAndRoundUpToTheSecond() {
        #expect(PendingResize.calendarTime(Date(timeIntervalSince1970: 0.2)) == "1970-01-01 00:00:01 UTC")
        #expect(PendingResize.calendarTime(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29 00:00:00 UTC")
    }

    @Test func aFlavorReadsBackFromItsDropIn() {
        let flavor = Flavor(name: "small", memoryMax: 512 << 20, cpuQuotaPercent: 50, tasksMax: 512, ioWeight: 100)
        #expect(Flavor(dropIn: flavor.dropIn()) == flavor)
        #expect(Flavor(dropIn: "[Service]\nMemoryMax=1\n") == nil)
    }

    @Test func theMessageNamesBothFlavorsAndBothTimes() {
        #expect(Self.pending.text == "small → medium since 2026-11-30 00:53:20 UTC, confirms automatically at 2026-12-01 00:53:20 UTC")
        let error = NspawnError.resizePending("web", Self.pending)
        #expect(error.category == .conflict)
        #expect(error.description.contains("'nspawnctl resize --confirm web'") && error.description.contains("small → medium"))
    }
}
