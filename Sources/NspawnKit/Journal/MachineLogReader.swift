import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Reads a machine's journal window: the guest's own journal files and the host journal's
/// entries about its unit, merged in time order. Used by one thread at a time (sd-journal is
/// not thread-safe); `cancel` is the one call another thread may make.
final class MachineLogReader: @unchecked Sendable {
    private struct Source {
        let journal: Journal
        let kind: LogEntry.Source
        /// Read past but not handed out yet.
        var pending: LogEntry?
        var exhausted = false
    }

    private var sources: [Source]
    private let unit: String
    private let window: LogWindow
    private var backlogDone = false
    /// A window of the last N entries without a follow is whole after its backlog.
    private var finished = false
    private let wake: (read: FileDescriptor, write: FileDescriptor)
    /// How long a follow waits with nothing new before handing out an empty batch (a heartbeat).
    static let heartbeat: Duration = .seconds(15)
    static let batchSize = 256

    /// Opens the sources; the guest files are consumed (closed with the reader).
    init(unit: String, guestFiles: [FileDescriptor], window: LogWindow) throws(NspawnError) {
        self.window = window
        self.unit = unit
        do {
            wake = try FileDescriptor.closeOnExecPipe()
        } catch {
            for file in guestFiles { try? file.close() }
            throw .system("cannot make a pipe for the journal reader", error)
        }
        var sources: [Source] = []
        do throws(Errno) {
            let host = try Journal.localSystem()
            try Self.matchUnit(unit, host)
            try Self.matchPriority(window.maximumPriority, host)
            sources.append(Source(journal: host, kind: .host))
        } catch {
            for file in guestFiles { try? file.close() }
            try? wake.read.close()
            try? wake.write.close()
            throw .system("cannot open the host journal for \(unit)", error)
        }
        if !guestFiles.isEmpty {
            do throws(Errno) {
                let guest = try Journal.files(guestFiles)
                try Self.matchPriority(window.maximumPriority, guest)
                sources.append(Source(journal: guest, kind: .machine))
            } catch {
                try? wake.read.close()
                try? wake.write.close()
                throw .system("cannot open the journal files of \(unit)", error)
            }
        }
        self.sources = sources
    }

    deinit {
        try? wake.read.close()
        try? wake.write.close()
    }

    /// What `journalctl -u UNIT` shows: the unit's own output, and what systemd and its
    /// managers said about it.
    private static func matchUnit(_ unit: String, _ journal: Journal) throws(Errno) {
        try journal.addMatch("_SYSTEMD_UNIT=\(unit)")
        try journal.addDisjunction()
        try journal.addMatch("_PID=1")
        try journal.addMatch("UNIT=\(unit)")
        try journal.addDisjunction()
        try journal.addMatch("_UID=0")
        try journal.addMatch("OBJECT_SYSTEMD_UNIT=\(unit)")
        try journal.addConjunction()
    }

    private static func matchPriority(_ maximum: Int?, _ journal: Journal) throws(Errno) {
        guard let maximum else { return }
        for level in 0...maximum { try journal.addMatch("PRIORITY=\(level)") }
        try journal.addConjunction()
    }

    /// Wakes a follow that waits, so its batch ends and `nextBatch` returns nil.
    func cancel() {
        _ = try? wake.write.writeFully([1])
    }

    private var cancelled: Bool { (try? wake.read.waitReadable(timeout: .zero)) == true }

    /// The next entries in time order: the window's backlog first, then (following) what
    /// arrives. Nil at the end of the window or once cancelled; while following, an empty
    /// batch after `heartbeat` without news.
    func nextBatch() throws(NspawnError) -> [LogEntry]? {
        do throws(Errno) {
            if finished || window.isEmpty { return nil }
            if !backlogDone {
                backlogDone = true
                if let lines = window.lines {
                    finished = !window.follow
                    let backlog = try tail(lines)
                    if !backlog.isEmpty { return backlog }
                    if finished { return nil }
                } else {
                    for index in sources.indices {
                        if let since = window.since { try sources[index].journal.seek(realtime: since) } else { try sources[index].journal.seekHead() }
                    }
                }
            }
            if cancelled { return nil }
            let batch = try merged(limit: Self.batchSize)
            if !batch.isEmpty || !window.follow { return batch.isEmpty ? nil : batch }
            // A follow with an end stops once the clock has passed it.
            if let until = window.until, LogTime.now() > until { return nil }
            return try waitForNews()
        } catch {
            throw .system("cannot read the journal of \(unit)", error)
        }
    }

    /// The last `lines` entries of the window, and each source left just past its newest.
    private func tail(_ lines: Int) throws(Errno) -> [LogEntry] {
        // Entries keep the journal's own order within a source (several can share a microsecond),
        // and sources tie in the order the forward merge uses.
        var collected: [(entry: LogEntry, source: Int, position: Int)] = []
        for index in sources.indices {
            let journal = sources[index].journal
            if let until = window.until { try journal.seek(realtime: until + 1) } else { try journal.seekTail() }
            var taken = 0
            while taken < lines, try journal.previous() {
                let record = try journal.record(fields: LogEntry.journalFields)
                if let until = window.until, record.realtime > until { continue }
                if let since = window.since, record.realtime < since { break }
                // Read newest first: a lower position is a later entry.
                collected.append((LogEntry(record, source: sources[index].kind), index, -taken))
                taken += 1
            }
            // A follow goes on from the tail, so it sees only what is new.
            if window.follow {
                try journal.seekTail()
                _ = try journal.previous()
            }
        }
        collected.sort { ($0.entry.realtimeUsec, $0.source, $0.position) < ($1.entry.realtimeUsec, $1.source, $1.position) }
        return collected.suffix(lines).map(\.entry)
    }

    /// Up to `limit` entries, oldest first, from whichever source has the oldest next.
    private func merged(limit: Int) throws(Errno) -> [LogEntry] {
        var batch: [LogEntry] = []
        while batch.count < limit {
            for index in sources.indices where sources[index].pending == nil && !sources[index].exhausted {
                try fill(index)
            }
            guard let oldest = sources.indices.filter({ sources[$0].pending != nil })
                .min(by: { sources[$0].pending!.realtimeUsec < sources[$1].pending!.realtimeUsec }) else { break }
            batch.append(sources[oldest].pending!)
            sources[oldest].pending = nil
        }
        return batch
    }

    /// Reads the source's next entry in the window into `pending`, if it has one yet.
    private func fill(_ index: Int) throws(Errno) {
        let journal = sources[index].journal
        while try journal.next() {
            let record = try journal.record(fields: LogEntry.journalFields)
            if let until = window.until, record.realtime > until {
                sources[index].exhausted = true
                return
            }
            if let since = window.since, record.realtime < since { continue }
            sources[index].pending = LogEntry(record, source: sources[index].kind)
            return
        }
    }

    /// Waits for new entries; the guest's files are read by fd, which sd-journal cannot watch,
    /// so they are looked at again every quarter second.
    private func waitForNews() throws(Errno) -> [LogEntry]? {
        let host = try sources[0].journal.changeDescriptor()
        let clock = ContinuousClock()
        let deadline = clock.now + Self.heartbeat
        while clock.now < deadline {
            var fds = [pollfd(fd: host.fd, events: host.events, revents: 0), pollfd(fd: wake.read.rawValue, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 2, 250)
            if ready < 0 && errno != EINTR { throw Errno.last }
            if fds[1].revents != 0 { return nil }
            if fds[0].revents != 0 { try sources[0].journal.processChanges() }
            let batch = try merged(limit: Self.batchSize)
            if !batch.isEmpty { return batch }
        }
        return []
    }
}
