import Dispatch

/// Runs blocking bus work off Swift's cooperative thread pool.
///
/// sd-bus calls block while they wait for replies or signals; running them on the
/// cooperative pool (two threads on a two-core host) would stall every other task.
enum BusWork {
    private static let queue = DispatchQueue(label: "nspawnkit.bus", attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
