import Testing

/// The testbed's one nspawnd is shared by suites that run in parallel. A test that kills it
/// (`kill -9` of its main process) takes this lock exclusively, and waits until the suites that
/// use nspawnd, which hold it shared for their whole run, are done; they never see a daemon
/// die under a request of theirs.
struct DaemonLock: SuiteTrait, TestTrait, TestScoping {
    let exclusive: Bool

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await Self.gate.acquire(exclusive: exclusive)
        do {
            try await function()
        } catch {
            await Self.gate.release(exclusive: exclusive)
            throw error
        }
        await Self.gate.release(exclusive: exclusive)
    }

    private static let gate = Gate()

    /// Readers share, a writer is alone; a waiting writer goes before readers that come later.
    private actor Gate {
        private var readers = 0
        private var writing = false
        private var waitingWriters: [CheckedContinuation<Void, Never>] = []
        private var waitingReaders: [CheckedContinuation<Void, Never>] = []

        func acquire(exclusive: Bool) async {
            if exclusive {
                if !writing && readers == 0 {
                    writing = true
                    return
                }
                await withCheckedContinuation { waitingWriters.append($0) }
            } else {
                if !writing && waitingWriters.isEmpty {
                    readers += 1
                    return
                }
                await withCheckedContinuation { waitingReaders.append($0) }
            }
        }

        func release(exclusive: Bool) {
            if exclusive { writing = false } else { readers -= 1 }
            guard !writing, readers == 0 else { return }
            if !waitingWriters.isEmpty {
                writing = true
                waitingWriters.removeFirst().resume()
            } else {
                readers += waitingReaders.count
                waitingReaders.forEach { $0.resume() }
                waitingReaders = []
            }
        }
    }
}

extension Trait where Self == DaemonLock {
    /// A suite that uses nspawnd: it runs while no test kills the daemon.
    static var usesDaemon: Self { Self(exclusive: false) }
    /// A test that kills nspawnd: it runs alone among the suites that use it.
    static var killsDaemon: Self { Self(exclusive: true) }
}
