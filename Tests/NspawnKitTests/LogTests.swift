import Foundation
import SystemPackage
import Testing
@testable import NspawnKit

@Suite struct LogTimeTests {
    static let now: UInt64 = 1_765_000_000_123_456

    @Test func relativeAndAbsoluteForms() throws {
        #expect(try LogTime.parse("now", now: Self.now) == Self.now)
        #expect(try LogTime.parse("-1h", now: Self.now) == Self.now - 3_600_000_000)
        #expect(try LogTime.parse("-1h30min", now: Self.now) == Self.now - 5_400_000_000)
        #expect(try LogTime.parse("+90s", now: Self.now) == Self.now + 90_000_000)
        #expect(try LogTime.parse("5 min ago", now: Self.now) == Self.now - 300_000_000)
        #expect(try LogTime.parse("@1765000000", now: Self.now) == 1_765_000_000_000_000)
        #expect(try LogTime.parse("@1765000000.5", now: Self.now) == 1_765_000_000_500_000)
        #expect(try LogTime.parse("2026-12-06T10:00:00Z", now: Self.now) == 1_796_551_200_000_000)
        #expect(try LogTime.parse("2026-12-06 10:00:00 UTC", now: Self.now) == 1_796_551_200_000_000)
        #expect(try LogTime.parse("2026-12-06T10:00:00.000042Z", now: Self.now) == 1_796_551_200_000_042)
        #expect(try LogTime.parse("today", now: Self.now) <= Self.now)
        #expect(try LogTime.parse("yesterday", now: Self.now) < LogTime.parse("today", now: Self.now))
    }

    /// What `time` says is read back to the same microsecond, so a client can page on it.
    @Test func formattedTimesReadBack() throws {
        for usec: UInt64 in [0, 1, 999_999, 1_765_000_000_123_456, 4_102_444_799_999_999] {
            #expect(try LogTime.parse(LogTime.format(usec), now: Self.now) == usec, "\(LogTime.format(usec))")
        }
        #expect(LogTime.format(1_765_000_000_000_042) == "2025-12-06T05:46:40.000042Z")
    }

    @Test(arguments: ["", " ", "yesterdayish", "-", "-1parsec", "2026-13-01", "2026-12-32", "2026-12-06 25:00", "12/06/2026",
                      "@-5", "@abc", "2026-12-06 10:00:00.1234567", "1h", String(repeating: "9", count: 80), "now\u{1b}[31m",
                      "-999999999w999999999w999999999w", "+999999999w999999999w"])
    func unreadableTimesAreRefused(_ text: String) {
        #expect(throws: NspawnError.self) { try LogTime.parse(text, now: Self.now) }
    }

    @Test func priorities() throws {
        #expect(try LogPriority.parse("err") == 3)
        #expect(try LogPriority.parse("WARNING") == 4)
        #expect(try LogPriority.parse("7") == 7)
        for bad in ["8", "-1", "error", "", "info,err"] {
            #expect(throws: NspawnError.self) { try LogPriority.parse(bad) }
        }
    }

    @Test func windows() throws {
        let follow = try LogRequest(follow: true).window(now: Self.now)
        #expect(follow.lines == 10 && follow.follow)
        #expect(try LogRequest().window(now: Self.now).lines == nil)
        let window = try LogRequest(lines: 5, since: "-1h", priority: "err").window(now: Self.now)
        #expect(window.lines == 5 && window.since == Self.now - 3_600_000_000 && window.maximumPriority == 3)
        #expect(window.contains(Self.now) && !window.contains(Self.now - 3_600_000_001))
        #expect(try LogRequest(since: "now", until: "-1h").window(now: Self.now).isEmpty)
        #expect(try !LogRequest(since: "-1h", until: "now").window(now: Self.now).isEmpty)
        for bad in [LogRequest(lines: -1), LogRequest(lines: LogRequest.maximumLines + 1), LogRequest(priority: "loud")] {
            #expect(throws: NspawnError.self) { try bad.window(now: Self.now) }
        }
    }
}

/// Journal files are found inside a machine's root without following its symlinks out.
@Suite struct MachineJournalTests {
    let id = "0123456789abcdef0123456789abcdef"

    private func tree() throws -> (root: String, outside: String) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-journal-\(UUID().uuidString)").path
        let root = base + "/root", outside = base + "/host"
        for directory in [root + "/var/log/journal/\(id)", root + "/run/log", outside + "/\(id)"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try Data("host secret".utf8).write(to: URL(fileURLWithPath: outside + "/\(id)/system.journal"))
        return (root, outside)
    }

    private func names(_ files: [FileDescriptor]) -> [String] {
        defer { for file in files { try? file.close() } }
        return files.map { file in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(file.rawValue)")) ?? "?"
        }
    }

    @Test func regularFilesInsideTheRootAreFound() throws {
        let (root, outside) = try tree()
        defer { try? FileManager.default.removeItem(atPath: (root as NSString).deletingLastPathComponent) }
        try Data("guest".utf8).write(to: URL(fileURLWithPath: root + "/var/log/journal/\(id)/system.journal"))
        try Data("guest".utf8).write(to: URL(fileURLWithPath: root + "/var/log/journal/\(id)/system@0001-0002.journal~"))
        try Data("other".utf8).write(to: URL(fileURLWithPath: root + "/var/log/journal/\(id)/notes.txt"))
        // A file that is a symlink to the host's journal, and one that is a FIFO, are skipped.
        try FileManager.default.createSymbolicLink(atPath: root + "/var/log/journal/\(id)/user-0.journal", withDestinationPath: outside + "/\(id)/system.journal")
        #expect(mkfifo(root + "/var/log/journal/\(id)/fifo.journal", 0o600) == 0)
        let found = names(MachineJournal.journalFiles(root: try Directory(path: root), linkedIDs: []))
        #expect(found.sorted() == [root + "/var/log/journal/\(id)/system.journal", root + "/var/log/journal/\(id)/system@0001-0002.journal~"].sorted())
    }

    @Test(arguments: ["absolute", "relative"])
    func aJournalDirectoryLinkedOutOfTheRootShowsNothingFromTheHost(_ kind: String) throws {
        let (root, outside) = try tree()
        defer { try? FileManager.default.removeItem(atPath: (root as NSString).deletingLastPathComponent) }
        try FileManager.default.removeItem(atPath: root + "/run/log")
        try FileManager.default.createSymbolicLink(atPath: root + "/run/log", withDestinationPath: kind == "absolute" ? outside : "../../host")
        let found = names(MachineJournal.journalFiles(root: try Directory(path: root), linkedIDs: []))
        #expect(found.isEmpty, "\(found)")
    }

    @Test func machineIDsAreThirtyTwoLowercaseHexDigits() {
        #expect(MachineJournal.machineID(id) == id)
        for bad in ["", String(repeating: "0", count: 32), id.uppercased(), id + "0", "../" + id.dropFirst(3), String(id.dropLast()) + "g"] {
            #expect(MachineJournal.machineID(bad) == nil, "\(bad)")
        }
    }
}
