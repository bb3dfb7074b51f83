import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// A regular file read out of the archive, waiting for a writer thread.
final class FileJob {
    let entry: OwnedArchiveEntry
    /// The member's name as the archive spells it, for errors.
    let name: String
    /// Its bytes, in the queue's buffer until the file is written.
    let data: UnsafeMutableRawBufferPointer
    let span: WriterQueue.Span
    /// Which run of files in one directory this one belongs to: writers keep out of each other's,
    /// as creating files in one directory takes that directory's lock.
    let directory: Int
    /// Where each stretch of `data` goes in the file; more than one for sparse files.
    var blocks: [(offset: Int64, start: Int, count: Int)] = []

    init(entry: OwnedArchiveEntry, name: String, directory: Int, span: WriterQueue.Span) {
        self.entry = entry
        self.name = name
        self.directory = directory
        self.span = span
        self.data = span.bytes
    }
}

/// Hands files from the reading thread to writer threads. File data waits in one ring buffer of
/// `budget` bytes, allocated once: memory stays bounded whatever the archive's size, and
/// freeing on other threads cannot fragment the heap.
final class WriterQueue: @unchecked Sendable {
    let budget: Int
    /// A stretch of the ring, handed out in order and given back in any order.
    struct Span {
        let sequence: Int
        let bytes: UnsafeMutableRawBufferPointer
    }
    private let ring: UnsafeMutableRawBufferPointer
    /// Where the next span starts.
    private var head = 0
    /// Spans not yet given back, oldest first: (start, end, given back); the oldest start is the tail.
    private var spans: [(start: Int, end: Int, done: Bool)] = []
    private var firstSequence = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Writers wait here for work; the reader waits on `room` for budget or for the writers to finish.
    private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let room = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// In archive order; writers may take them out of order, as each has a name of its own.
    private var jobs: [FileJob] = []
    /// The directory each writer is in, -1 when it has none.
    private var writing: [Int]
    private var unfinished = 0
    private var closed = false
    private var firstFailure: NspawnError?

    init(budget: Int, writers: Int) {
        self.budget = budget
        self.writing = Array(repeating: -1, count: writers)
        // Not touched until used, so a small archive costs little.
        self.ring = UnsafeMutableRawBufferPointer.allocate(byteCount: budget, alignment: 16)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(work, nil)
        pthread_cond_init(room, nil)
    }

    deinit {
        pthread_cond_destroy(work)
        pthread_cond_destroy(room)
        pthread_mutex_destroy(mutex)
        work.deallocate()
        room.deallocate()
        mutex.deallocate()
        ring.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Where `count` bytes fit now, if they do (the caller holds the lock).
    private func placeLocked(_ count: Int) -> Int? {
        guard let tail = spans.first?.start else {
            head = 0
            return count <= budget ? 0 : nil
        }
        if head >= tail {
            if count <= budget - head { return head }
            return count < tail ? 0 : nil
        }
        return count < tail - head ? head : nil
    }

    /// Waits until `count` bytes fit in the ring and hands them out; nil once something failed.
    /// `count` must be at most `budget`.
    func reserve(_ count: Int) -> Span? {
        locked {
            var start = placeLocked(count)
            while firstFailure == nil && start == nil {
                pthread_cond_wait(room, mutex)
                start = placeLocked(count)
            }
            guard firstFailure == nil, let start else { return nil }
            head = start + count
            spans.append((start, start + count, false))
            let sequence = firstSequence + spans.count - 1
            return Span(sequence: sequence, bytes: UnsafeMutableRawBufferPointer(rebasing: ring[start..<(start + count)]))
        }
    }

    /// Gives a span back; the ring's tail moves past every span given back before the oldest in use.
    func release(_ span: Span) {
        locked { releaseLocked(span) }
    }

    private func releaseLocked(_ span: Span) {
        spans[span.sequence - firstSequence].done = true
        var done = 0
        while done < spans.count && spans[done].done { done += 1 }
        if done > 0 {
            spans.removeFirst(done)
            firstSequence += done
        }
        pthread_cond_signal(room)
    }

    func submit(_ job: FileJob) {
        locked {
            jobs.append(job)
            unfinished += 1
            pthread_cond_signal(work)
        }
    }

    /// The next file for writer `writer`: the first in a directory no other writer is in, else the
    /// first of all; nil once the queue is closed and empty, or something failed.
    func next(for writer: Int) -> FileJob? {
        locked {
            writing[writer] = -1
            while jobs.isEmpty && !closed && firstFailure == nil {
                pthread_cond_wait(work, mutex)
            }
            guard firstFailure == nil, !jobs.isEmpty else { return nil }
            let others = writing
            let pick = jobs.firstIndex { job in !others.contains(job.directory) } ?? 0
            let job = jobs.remove(at: pick)
            writing[writer] = job.directory
            return job
        }
    }

    func finished(_ job: FileJob, failure: NspawnError?) {
        locked {
            releaseLocked(job.span)
            unfinished -= 1
            if let failure { recordLocked(failure) }
            pthread_cond_signal(room)
        }
    }

    /// Stops everything: writers take no more files and the reader's next wait returns.
    func fail(_ failure: NspawnError) {
        locked { recordLocked(failure) }
    }

    private func recordLocked(_ failure: NspawnError) {
        if firstFailure == nil { firstFailure = failure }
        pthread_cond_broadcast(work)
        pthread_cond_broadcast(room)
    }

    var failure: NspawnError? { locked { firstFailure } }

    /// Waits until every submitted file is written; the first failure, if any.
    func drain() -> NspawnError? {
        locked {
            while unfinished > 0 && firstFailure == nil {
                pthread_cond_wait(room, mutex)
            }
            return firstFailure
        }
    }

    /// No more files: writers return once the queue is empty.
    func close() {
        locked {
            closed = true
            pthread_cond_broadcast(work)
        }
    }
}
