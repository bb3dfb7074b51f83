#if canImport(Glibc)
import Glibc
#endif

/// A dedicated OS thread. Import stages need one each: they block in C code for minutes, and
/// extraction changes its thread's working directory, which must never leak into a shared pool.
package final class OSThread: @unchecked Sendable {
    private var thread = pthread_t()
    private var joined = false

    private final class Job {
        package let body: () -> Void
        package init(_ body: @escaping () -> Void) { self.body = body }
    }

    package init(_ body: @escaping @Sendable () -> Void) {
        let job = Unmanaged.passRetained(Job(body)).toOpaque()
        let code = pthread_create(&thread, nil, { raw in
            Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, job)
        precondition(code == 0, "pthread_create failed: \(code)")
    }

    package func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }

    /// Runs `body` on a thread of its own that nobody waits for (reaping a child, say).
    package static func detach(_ body: @escaping @Sendable () -> Void) {
        let thread = OSThread(body)
        pthread_detach(thread.thread)
        thread.joined = true
    }

    /// Runs blocking work (bus calls, child processes, sockets) on its own thread without
    /// holding up the caller's executor: the cooperative pool has one thread per core.
    package static func run<T: Sendable, Failure: Error>(_ body: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        let result: Result<T, Failure> = await withCheckedContinuation { continuation in
            let thread = OSThread {
                do throws(Failure) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            pthread_detach(thread.thread)
            thread.joined = true
        }
        return try result.get()
    }
}
