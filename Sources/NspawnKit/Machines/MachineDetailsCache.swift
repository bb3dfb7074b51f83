import Synchronization

/// What machined learns only by entering a running container (os-release, addresses), kept
/// for `ttl` and only for the same leader process. Listing 20 machines otherwise costs 40 forks
/// inside machined per request. Which machines exist is never cached.
public final class MachineDetailsCache: Sendable {
    public struct Entry: Sendable, Equatable {
        public var leader: UInt32
        public var os: String?
        public var addresses: [String]
    }

    private struct Stored {
        var entry: Entry
        var time: ContinuousClock.Instant
    }

    public let ttl: Duration
    private let entries = Mutex<[String: Stored]>([:])
    /// Stopped images' os-release by name, valid for the same modification time and `ttl`.
    private let images = Mutex<[String: (modified: UInt64, os: String?, time: ContinuousClock.Instant)]>([:])

    public init(ttl: Duration = .seconds(2)) {
        self.ttl = ttl
    }

    func freshEntries() -> [String: Entry] {
        let now = ContinuousClock.now
        return entries.withLock { stored in
            stored.compactMapValues { now - $0.time < ttl ? $0.entry : nil }
        }
    }

    func store(_ name: String, _ entry: Entry) {
        entries.withLock { $0[name] = Stored(entry: entry, time: .now) }
    }

    /// The cached os-release of a stopped image: `.some(nil)` means it has none.
    func imageOS(_ name: String, modified: UInt64) -> String?? {
        images.withLock { stored in
            guard let hit = stored[name], hit.modified == modified, ContinuousClock.now - hit.time < ttl else { return nil }
            return .some(hit.os)
        }
    }

    func storeImageOS(_ name: String, modified: UInt64, os: String?) {
        images.withLock { $0[name] = (modified, os, .now) }
    }

    /// Drops machines that are gone.
    func forget(except running: Set<String>) {
        entries.withLock { stored in stored = stored.filter { running.contains($0.key) } }
    }
}
