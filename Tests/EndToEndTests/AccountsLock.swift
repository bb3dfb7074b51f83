import Testing

/// The testbed's user accounts and ssh state are shared by tests of suites that run in parallel:
/// the accounts and authorized_keys RemoteFixtures writes, root's known_hosts (swapped by the
/// host-key tests), root's authorized_keys (Ansible adds a key), `pkill -x ssh` after the
/// hostile-remote test, and useradd, which fails outright when another holds /etc/passwd's lock.
/// A test that reads or changes any of it holds this lock for its whole run.
struct AccountsLock: TestTrait, TestScoping {
    @TaskLocal static var isHeld = false

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await Self.gate.acquire()
        do {
            try await Self.$isHeld.withValue(true) { try await function() }
        } catch {
            await Self.gate.release()
            throw error
        }
        await Self.gate.release()
    }

    private static let gate = Gate()

    private actor Gate {
        private var held = false
        private var waiting: [CheckedContinuation<Void, Never>] = []

        func acquire() async {
            if !held {
                held = true
                return
            }
            await withCheckedContinuation { waiting.append($0) }
        }

        /// Hands the lock to the next waiter, if any, without releasing it in between.
        func release() {
            if waiting.isEmpty {
                held = false
            } else {
                waiting.removeFirst().resume()
            }
        }
    }
}

extension Trait where Self == AccountsLock {
    /// Runs the test alone among tests that use the testbed's accounts or ssh state (see `AccountsLock`).
    static var testbedAccounts: Self { Self() }
}
