import FoundationEssentials
import SystemPackage
import Testing
@testable import NspawnKit
@testable import NspawnImages
#if canImport(Glibc)
import Glibc
#endif

/// The records `copy-machine --refresh` compares: what the walk sees is what GNU stat and
/// getfattr see, every record survives its line, and a sender's list that is no tree is refused.
/// Runs as root (CI does): it sets owners.
@Suite(.serialized) struct TreeRecordTests {
    let scratch = "/var/tmp/nspawnctl-record-tests.\(getpid()).\(UInt32.random(in: 0 ... .max))"

    @Test func theWalkSeesWhatStatSeesAndEveryRecordSurvivesItsLine() throws {
        defer { _ = try? shell("rm -rf --one-file-system \(scratch)") }
        let root = "\(scratch)/root"
        _ = try shell("""
            set -e
            mkdir -p \(root)/srv/deep '\(root)/odd\\tname' "\(root)/new
            line"
            printf 'secret\\n' > \(root)/srv/shadow && chown 1234:5678 \(root)/srv/shadow && chmod 4640 \(root)/srv/shadow
            ln \(root)/srv/shadow \(root)/srv/deep/shadow-link
            ln -s '../a=b\\\\c' \(root)/srv/link
            mkfifo \(root)/srv/fifo
            setfattr -n user.origin -v 'x=y' \(root)/srv/shadow
            setfattr -n 'user.with=equals' -v 1 \(root)/srv
            touch -d '2003-04-05 06:07:08.123456789' \(root)/srv/shadow
            """)
        let records = try TreeRecords.walk(try Directory(path: root), label: root)
        #expect(records.map(\.path) == ["", "new\nline", "odd\\tname", "srv", "srv/deep", "srv/deep/shadow-link", "srv/fifo", "srv/link", "srv/shadow"])
        for record in records {
            let line = record.line
            #expect(line.filter { $0 == UInt8(ascii: "\n") }.count == 1 && line.last == UInt8(ascii: "\n"), "one line: \(record.path)")
            #expect(TreeRecord(line: Array(line.dropLast())) == record, "\(record.path) survives its line")
        }
        // GNU stat's view of the same entries: mode, owner, size, modification time in nanoseconds.
        for path in ["srv/shadow", "srv/link", "srv/deep"] {
            let stat = try shell("stat -c '%a %u %g %Y' \(root)/\(path); stat -c '%y' \(root)/\(path) | sed 's/.*\\.\\([0-9]*\\) .*/\\1/'")
            let record = try #require(records.first { $0.path == path })
            let expected = "\(String(record.mode, radix: 8)) \(record.uid) \(record.gid) \(record.seconds)\n\(nineDigits(record.nanoseconds))"
            #expect(stat == expected, "\(path): stat says \(stat)")
        }
        let shadow = try #require(records.first { $0.path == "srv/shadow" })
        #expect(shadow.mode == 0o4640 && shadow.size == 7 && shadow.links == 2)
        let first = try #require(records.firstIndex { $0.path == "srv/deep/shadow-link" })
        #expect(records[first].linkOf == nil && shadow.linkOf == first, "the second name in walk order points at the first")
        #expect(records.first { $0.path == "srv/link" }?.target == "../a=b\\\\c")
        #expect(records.first { $0.path == "srv/fifo" }?.kind == .fifo)
        let getfattr = try shell("getfattr --absolute-names --only-values -n user.origin \(root)/srv/shadow")
        #expect(shadow.xattrs?["user.origin"].flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } == getfattr)
        #expect(records.first { $0.path == "srv" }?.xattrs?["user.with=equals"] != nil)
        // The quick check sees a change of time and nothing else.
        var touched = shadow
        touched.nanoseconds += 1
        #expect(!touched.sameFile(as: shadow) && shadow.sameFile(as: shadow))
    }

    /// Swift reads such a name changed, so it could not be copied as it is: refused, not skipped.
    @Test func aNameThatIsNotUTF8IsRefusedNotLeftOut() throws {
        defer { _ = try? shell("rm -rf --one-file-system \(scratch)") }
        _ = try shell("mkdir -p \(scratch)/root/srv && touch \"\(scratch)/root/srv/bad$(printf '\\377')name\"")
        do {
            _ = try TreeRecords.walk(try Directory(path: "\(scratch)/root"), label: "\(scratch)/root")
            Issue.record("a name that is not UTF-8 was walked")
        } catch let error as NspawnError {
            #expect(error.description.contains("not UTF-8") && error.description.contains("\(scratch)/root/srv/"), "\(error)")
        }
        _ = try shell("rm -rf \(scratch)/root/srv/* && ln -s \"../bad$(printf '\\377')\" \(scratch)/root/srv/link")
        #expect(throws: NspawnError.self) { try TreeRecords.walk(try Directory(path: "\(scratch)/root"), label: "\(scratch)/root") }
    }

    @Test func aListThatIsNoTreeIsRefused() throws {
        func file(_ path: String, linkOf: Int? = nil) -> TreeRecord {
            TreeRecord(path: path, kind: .file, mode: 0o644, uid: 0, gid: 0, size: 1, seconds: 0, nanoseconds: 0, links: 1, linkOf: linkOf)
        }
        func directory(_ path: String) -> TreeRecord {
            TreeRecord(path: path, kind: .directory, mode: 0o755, uid: 0, gid: 0, size: 0, seconds: 0, nanoseconds: 0)
        }
        try RefreshReceiver.check([directory(""), directory("etc"), file("etc/a"), file("etc/b", linkOf: 2)])
        let refused: [[TreeRecord]] = [
            [file("etc")],
            [directory(""), file("../etc/passwd")],
            [directory(""), file("/etc/passwd")],
            [directory(""), file("a//b")],
            [directory(""), file("a/./b")],
            [directory(""), file("a"), file("a")],
            [directory(""), file("missing/a")],
            [directory(""), file("a"), file("a/b")],
            [directory(""), file("a", linkOf: 1)],
            [directory(""), file("a", linkOf: 5)],
            [directory(""), directory("d"), file("a", linkOf: 1)],
            [directory(""), TreeRecord(path: "l", kind: .symlink, mode: 0o777, uid: 0, gid: 0, size: 0, seconds: 0, nanoseconds: 0)],
        ]
        for records in refused {
            #expect(throws: NspawnError.self, "\(records.map(\.path))") { try RefreshReceiver.check(records) }
        }
        for line in ["", "f\t644", "x\t644\t0\t0\t1\t0\t0\t\t\t\ta\t", "f\t99999\t0\t0\t1\t0\t0\t\t\t\ta\t",
                     "f\t644\t0\t0\t-1\t0\t0\t\t\t\ta\t", "f\t644\t0\t0\t1\t0\t1000000000\t\t\t\ta\t", "f\t644\t0\t0\t1\t0\t0\t\t\t\ta\\q\t"] {
            #expect(TreeRecord(line: Array(line.utf8)) == nil, "\(line.debugDescription)")
        }
    }
}

/// Nanoseconds as the nine digits GNU stat prints.
private func nineDigits(_ value: Int64) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, 9 - digits.count)) + digits
}
