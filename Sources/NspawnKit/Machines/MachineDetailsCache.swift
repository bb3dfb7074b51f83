import Synchronization

/// What machined learns only by entering a running container, kept only for the same leader
/// process: os-release for `osTTL`, addresses for `addressTTL`. machined forks once per machine
/// and question, so listing 20 machines otherwise costs it 40 forks per request. os-release
/// changes only when the machine's OS is upgraded, addresses whenever its network does.
/// Which machines exist is never cached.
public final class MachineDetailsCache: Sendable {
    /// What is still fresh for one running machine; a nil field must be asked again.
    struct Fresh: Equatable {
        var leader: UInt32
        /// `.some(nil)`: the machine has no os-release.
        var os: String??
        var addresses: [String]?
    }

    private struct Stored {
        var leader: UInt32
        var os: (value: String?, time: ContinuousClock.Instant)?
        var addresses: (value: [String], time: ContinuousClock.Instant)?
    }

    public let addressTTL: Duration
    public let osTTL: Duration
    private let entries = Mutex<[String: Stored]>([:])
    /// Stopped images' os-release by name, valid for the same modification time and `osTTL`.
    private let images = Mutex<[String: (modified: UInt64, os: String?, time: ContinuousClock.Instant)]>([:])

    public init(addressTTL: Duration = .seconds(2), osTTL: Duration = .seconds(60)) {
        self.addressTTL = addressTTL
        self.osTTL = osTTL
    }

    func fresh(now: ContinuousClock.Instant = .now) -> [String: Fresh] {
        entries.withLock { stored in
            stored.compactMapValues { entry in
                let os = entry.os.flatMap { now - $0.time < osTTL ? .some($0.value) : nil }
                let addresses = entry.addresses.flatMap { now - $0.time < addressTTL ? $0.value : nil }
                if os == nil && addresses == nil { return nil }
                return Fresh(leader: entry.leader, os: os, addresses: addresses)
            }
        }
    }

    func storeOS(_ name: String, leader: UInt32, _ os: String?, now: ContinuousClock.Instant = .now) {
        update(name, leader: leader) { $0.os = (os, now) }
    }

    func storeAddresses(_ name: String, leader: UInt32, _ addresses: [String], now: ContinuousClock.Instant = .now) {
        update(name, leader: leader) { $0.addresses = (addresses, now) }
    }

    /// A new leader is a new machine: nothing known of the old one carries over.
    private func update(_ name: String, leader: UInt32, _ change: (inout Stored) -> Void) {
        entries.withLock { stored in
            var entry = stored[name].flatMap { $0.leader == leader ? $0 : nil } ?? Stored(leader: leader)
            change(&entry)
            stored[name] = entry
        }
    }

    /// The cached os-release of a stopped image: `.some(nil)` means it has none.
    func imageOS(_ name: String, modified: UInt64) -> String?? {
        images.withLock { stored in
            guard let hit = stored[name], hit.modified == modified, ContinuousClock.now - hit.time < osTTL else { return nil }
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
