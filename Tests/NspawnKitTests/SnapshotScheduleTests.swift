import FoundationEssentials
import Testing
@testable import NspawnKit

@Suite struct SnapshotScheduleTests {
    static let now = Date(timeIntervalSince1970: 2_000_000_000)
    typealias Candidate = SnapshotSchedule.Candidate

    /// A scheduled snapshot `hours` before now, named by its age.
    static func scheduled(_ hours: Double) -> Candidate {
        Candidate(name: "auto-\(Int(hours))h", created: now.addingTimeInterval(-hours * 3600), scheduled: true)
    }

    /// Days and weeks in UTC, so the test does not depend on the host's zone.
    static func utc(_ date: Date) -> (day: Int, week: Int) {
        let seconds = Int(date.timeIntervalSince1970)
        // 1970-01-01 was a Thursday: weeks here start on Monday as ISO weeks do.
        return (seconds / 86_400, (seconds / 86_400 + 3) / 7)
    }

    static func doomed(_ snapshots: [Candidate], _ schedule: SnapshotSchedule?) -> [String] {
        SnapshotSchedule.doomed(snapshots, schedule: schedule, now: now, calendar: utc)
    }

    @Test func keepLeavesTheNewestAndRemovesTheRestOldestFirst() {
        let snapshots = [1, 2, 3, 4, 5].map { Self.scheduled(Double($0)) }
        #expect(Self.doomed(snapshots, SnapshotSchedule(everySeconds: 3600, keep: 3)) == ["auto-5h", "auto-4h"])
        #expect(Self.doomed(snapshots, SnapshotSchedule(everySeconds: 3600, keep: 5)).isEmpty)
        #expect(Self.doomed(snapshots.shuffled(), SnapshotSchedule(everySeconds: 3600, keep: 1)) == ["auto-5h", "auto-4h", "auto-3h", "auto-2h"])
    }

    @Test func dailyAndWeeklyKeepTheNewestOfEachPeriod() {
        // Every 6 hours over 20 days: 80 snapshots.
        let snapshots = stride(from: 0.0, to: 480, by: 6).map { Self.scheduled($0) }
        let daily = SnapshotSchedule(everySeconds: 21_600, keepDaily: 7)
        let keptDaily = Set(snapshots.map(\.name)).subtracting(Self.doomed(snapshots, daily))
        #expect(keptDaily.count == 7)
        // One per day, each the newest of its day.
        let days = keptDaily.compactMap { name in snapshots.first { $0.name == name } }.map { Self.utc($0.created).day }
        #expect(Set(days).count == 7)
        for name in keptDaily {
            let kept = snapshots.first { $0.name == name }!
            #expect(!snapshots.contains { Self.utc($0.created).day == Self.utc(kept.created).day && $0.created > kept.created })
        }
        let both = SnapshotSchedule(everySeconds: 21_600, keep: 2, keepDaily: 2, keepWeekly: 3)
        let keptBoth = Set(snapshots.map(\.name)).subtracting(Self.doomed(snapshots, both))
        // The newest is kept by all three rules; the union is at most 2 + 2 + 3 and at least 3 weeks' worth.
        #expect(keptBoth.contains("auto-0h") && keptBoth.contains("auto-6h"))
        #expect(keptBoth.count >= 4 && keptBoth.count <= 7, "\(keptBoth.sorted())")
        let weeks = Set(keptBoth.compactMap { name in snapshots.first { $0.name == name } }.map { Self.utc($0.created).week })
        #expect(weeks.count == 3, "\(keptBoth.sorted())")
    }

    @Test func expiryRemovesAnySnapshotAndOnlyTheScheduleOwnsItsRetention() {
        let byHand = Candidate(name: "before-upgrade", created: Self.now.addingTimeInterval(-86_400 * 30), scheduled: false)
        let expired = Candidate(name: "temp", created: Self.now.addingTimeInterval(-10), scheduled: false, expires: Self.now.addingTimeInterval(-1))
        let notYet = Candidate(name: "later", created: Self.now.addingTimeInterval(-10), scheduled: false, expires: Self.now.addingTimeInterval(60))
        let snapshots = [byHand, expired, notYet, Self.scheduled(1), Self.scheduled(2)]
        #expect(Self.doomed(snapshots, SnapshotSchedule(everySeconds: 3600, keep: 1)) == ["temp", "auto-2h"])
        // Without a schedule (only expiring snapshots), only expiry removes anything.
        #expect(Self.doomed(snapshots, nil) == ["temp"])
        // An expiry exactly now has passed.
        let due = Candidate(name: "due", created: Self.now, scheduled: false, expires: Self.now)
        #expect(Self.doomed([due], nil) == ["due"])
    }

    @Test func aScheduleMustKeepSomethingBoundedAndRunAtMostEverySecond() throws {
        #expect(throws: NspawnError.self) { try SnapshotSchedule(everySeconds: 3600).validate(machine: "web") }
        #expect(throws: NspawnError.self) { try SnapshotSchedule(everySeconds: 0.5, keep: 1).validate(machine: "web") }
        #expect(throws: NspawnError.self) { try SnapshotSchedule(everySeconds: 60, keep: 0).validate(machine: "web") }
        #expect(throws: NspawnError.self) { try SnapshotSchedule(everySeconds: 60, keepWeekly: 10_001).validate(machine: "web") }
        try SnapshotSchedule(everySeconds: 2, keep: 3).validate(machine: "web")
        do {
            try SnapshotSchedule(everySeconds: 3600).validate(machine: "web")
        } catch {
            #expect(error.description.contains("machine 'web'") && error.description.contains("keep"), "\(error)")
        }
        #expect(throws: NspawnError.self) { _ = try SnapshotSchedule.span(parsing: "soon", what: "interval") }
        #expect(try SnapshotSchedule.span(parsing: "7d", what: "expiry") == 604_800)
        #expect(SnapshotSchedule(everySeconds: 3600, keep: 24, keepDaily: 7).text == "every 1h, keep 24, 7 daily")
        #expect(SnapshotSchedule.spanText(90) == "90s" && SnapshotSchedule.spanText(1_209_600) == "2w")
    }

    @Test func theUnitsRecordTheScheduleAndTriggerOnTimeAndExpiry() throws {
        let name = try MachineName("web")
        let schedule = SnapshotSchedule(everySeconds: 2, keep: 3)
        let service = try SnapshotSchedule.serviceText(schedule, machine: name, nspawnctl: "/usr/local/bin/nspawnctl")
        #expect(SnapshotSchedule.recorded(inServiceText: service) == .some(schedule))
        #expect(service.contains("ExecStart=/usr/local/bin/nspawnctl snapshot-schedule --run web"))
        let expiryOnly = try SnapshotSchedule.serviceText(nil, machine: name, nspawnctl: "/usr/local/bin/nspawnctl")
        #expect(SnapshotSchedule.recorded(inServiceText: expiryOnly) == .some(nil))
        #expect(SnapshotSchedule.recorded(inServiceText: "[Unit]\nDescription=x\n") == nil)

        let timer = UnitFileDocument(parsing: SnapshotSchedule.timerText(schedule, nextExpiry: Date(timeIntervalSince1970: 1_796_644_800), machine: name))
        #expect(timer.value("Timer", "OnUnitActiveSec") == "2s" && timer.value("Timer", "OnActiveSec") == "2s")
        #expect(timer.value("Timer", "OnCalendar") == "2026-12-07 12:00:00 UTC")
        #expect(timer.value("Install", "WantedBy") == "timers.target")
        let plain = UnitFileDocument(parsing: SnapshotSchedule.timerText(schedule, nextExpiry: nil, machine: name))
        #expect(plain.value("Timer", "OnCalendar") == nil)
    }
}
