/// A snapshot of a running import, for a progress bar, JSON lines or the daemon's operations.
public struct ImportProgress: Sendable, Codable, Equatable {
    public enum Phase: String, Sendable, Codable {
        case download, extract, verify, postSteps = "post-steps", install

        var code: UInt8 {
            switch self {
            case .download: 0
            case .extract: 1
            case .verify: 2
            case .postSteps: 3
            case .install: 4
            }
        }

        init(code: UInt8) {
            self = [.download, .extract, .verify, .postSteps, .install][Int(min(code, 4))]
        }
    }

    public var phase: Phase
    /// Bytes of the source (compressed) read so far.
    public var bytes: Int64
    /// The source's size when known.
    public var totalBytes: Int64?
    public var entries: Int
    public var bytesPerSecond: Double
    /// Seconds left at the current rate, when the size is known.
    public var etaSeconds: Double?
    public var elapsedSeconds: Double
}

/// Cancels a running import from another task or a signal handler; the import cleans up after itself.
public final class ImportCancellation: Sendable {
    let counters = ImportCounters()

    public init() {}

    public func cancel() { counters.cancelled.store(true, ordering: .relaxed) }
    public var isCancelled: Bool { counters.isCancelled }
}
