import Synchronization
/// A snapshot of a running import, for a progress bar, JSON lines or the daemon's operations.
public struct ImportProgress: Sendable, Codable, Equatable {
    public enum Phase: String, Sendable, Codable {
        case download, extract, verify, postSteps = "post-steps", install

        package var code: UInt8 {
            switch self {
            case .download: 0
            case .extract: 1
            case .verify: 2
            case .postSteps: 3
            case .install: 4
            }
        }

        package init(code: UInt8) {
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
    /// An OCI import: the layer being applied (from 1) and how many there are; nil otherwise.
    public var layer: Int?
    public var layers: Int?

    package init(phase: Phase, bytes: Int64, totalBytes: Int64?, entries: Int, bytesPerSecond: Double,
                 etaSeconds: Double?, elapsedSeconds: Double) {
        self.phase = phase
        self.bytes = bytes
        self.totalBytes = totalBytes
        self.entries = entries
        self.bytesPerSecond = bytesPerSecond
        self.etaSeconds = etaSeconds
        self.elapsedSeconds = elapsedSeconds
    }
}

/// Cancels a running import from another task or a signal handler; the import cleans up after itself.
public final class ImportCancellation: Sendable {
    package let counters = ImportCounters()
    private let handlers = Mutex<[@Sendable () -> Void]>([])

    public init() {}

    public func cancel() {
        counters.cancelled.store(true, ordering: .relaxed)
        for handler in handlers.withLock({ $0 }) { handler() }
    }

    public var isCancelled: Bool { counters.isCancelled }

    /// Also run `handler` on a cancel (at once if cancelled already): an import in a child
    /// process is cancelled by signalling it.
    public func onCancel(_ handler: @escaping @Sendable () -> Void) {
        handlers.withLock { $0.append(handler) }
        if isCancelled { handler() }
    }
}

/// What the import threads report, read by the progress ticker. Also the cancel switch.
package final class ImportCounters: Sendable {
    package let sourceBytes = Atomic<Int64>(0)
    /// -1 while unknown (stdin, a server without Content-Length).
    package let sourceSize = Atomic<Int64>(-1)
    package let entries = Atomic<Int>(0)
    package let cancelled = Atomic<Bool>(false)
    package let phase = Atomic<UInt8>(ImportProgress.Phase.extract.code)
    /// An OCI import's layer being applied (from 1) and its count; 0 when there are none.
    package let layer = Atomic<Int>(0)
    package let layers = Atomic<Int>(0)

    package var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    package init() {}
}
