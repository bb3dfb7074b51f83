import CSystemd
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One journal entry with the fields `logs` shows.
public struct JournalRecord: Sendable, Equatable {
    /// Microseconds since the epoch (`__REALTIME_TIMESTAMP`).
    public var realtime: UInt64
    public var fields: [String: String]
}

/// A read handle on journal files, owning its `sd_journal`. Like sd-journal itself it belongs
/// to one thread; `MachineLogs` keeps each on the thread that reads it.
final class Journal {
    private let handle: OpaquePointer
    /// Descriptors handed to sd_journal_open_files_fd, which does not take ownership.
    private let files: [FileDescriptor]

    private init(handle: OpaquePointer, files: [FileDescriptor]) {
        self.handle = handle
        self.files = files
    }

    deinit {
        sd_journal_close(handle)
        for file in files { try? file.close() }
    }

    /// This host's own journals (system and runtime), never other machines' directories.
    static func localSystem() throws(Errno) -> Journal {
        var handle: OpaquePointer?
        let r = sd_journal_open(&handle, Int32(SD_JOURNAL_LOCAL_ONLY | SD_JOURNAL_SYSTEM))
        guard r >= 0, let handle else { throw Errno(rawValue: -r) }
        return Journal(handle: handle, files: [])
    }

    /// The journal files behind `files`; the journal owns and closes them.
    static func files(_ files: [FileDescriptor]) throws(Errno) -> Journal {
        var handle: OpaquePointer?
        var raw = files.map(\.rawValue)
        let r = raw.withUnsafeMutableBufferPointer { sd_journal_open_files_fd(&handle, $0.baseAddress, UInt32($0.count), 0) }
        guard r >= 0, let handle else {
            for file in files { try? file.close() }
            throw Errno(rawValue: -r)
        }
        return Journal(handle: handle, files: files)
    }

    /// `FIELD=value` terms: the same field ORs, different fields AND, up to the next
    /// `addDisjunction` or `addConjunction`, as sd_journal_add_match(3) says.
    func addMatch(_ term: String) throws(Errno) {
        let r = term.withCString { sd_journal_add_match(handle, $0, 0) }
        if r < 0 { throw Errno(rawValue: -r) }
    }

    func addDisjunction() throws(Errno) {
        let r = sd_journal_add_disjunction(handle)
        if r < 0 { throw Errno(rawValue: -r) }
    }

    func addConjunction() throws(Errno) {
        let r = sd_journal_add_conjunction(handle)
        if r < 0 { throw Errno(rawValue: -r) }
    }

    func seekHead() throws(Errno) {
        let r = sd_journal_seek_head(handle)
        if r < 0 { throw Errno(rawValue: -r) }
    }

    func seekTail() throws(Errno) {
        let r = sd_journal_seek_tail(handle)
        if r < 0 { throw Errno(rawValue: -r) }
    }

    func seek(realtime: UInt64) throws(Errno) {
        let r = sd_journal_seek_realtime_usec(handle, realtime)
        if r < 0 { throw Errno(rawValue: -r) }
    }

    /// Moves to the next entry; false at the end.
    func next() throws(Errno) -> Bool {
        let r = sd_journal_next(handle)
        if r < 0 { throw Errno(rawValue: -r) }
        return r > 0
    }

    func previous() throws(Errno) -> Bool {
        let r = sd_journal_previous(handle)
        if r < 0 { throw Errno(rawValue: -r) }
        return r > 0
    }

    /// The entry under the cursor, with the named fields it has.
    func record(fields names: [String]) throws(Errno) -> JournalRecord {
        var usec: UInt64 = 0
        let r = sd_journal_get_realtime_usec(handle, &usec)
        if r < 0 { throw Errno(rawValue: -r) }
        var fields: [String: String] = [:]
        for name in names {
            var data: UnsafeRawPointer?
            var length = 0
            let got = name.withCString { sd_journal_get_data(handle, $0, &data, &length) }
            guard got >= 0, let data else { continue }
            let bytes = UnsafeRawBufferPointer(start: data, count: length)
            // "FIELD=value"; binary values come out with replacement characters.
            guard let equals = bytes.firstIndex(of: UInt8(ascii: "=")) else { continue }
            fields[name] = String(decoding: bytes[(equals + 1)...], as: UTF8.self)
        }
        return JournalRecord(realtime: usec, fields: fields)
    }

    /// A descriptor that turns readable when the journal changes, for poll(2).
    func changeDescriptor() throws(Errno) -> (fd: Int32, events: Int16) {
        let fd = sd_journal_get_fd(handle)
        if fd < 0 { throw Errno(rawValue: -fd) }
        let events = sd_journal_get_events(handle)
        if events < 0 { throw Errno(rawValue: -events) }
        return (fd, Int16(events))
    }

    /// Takes in what changed after the descriptor woke; call before reading on.
    func processChanges() throws(Errno) {
        let r = sd_journal_process(handle)
        if r < 0 { throw Errno(rawValue: -r) }
    }
}
