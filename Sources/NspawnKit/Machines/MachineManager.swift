import SystemPackage

/// The lifecycle operations behind `nspawnctl` and the daemon.
///
/// machined and systemd are the only source of truth: nothing here caches which machines exist.
/// Every method opens its own bus connection on a worker thread, so calls may run concurrently.
/// Methods throw `NspawnError`.
public struct MachineManager: Sendable {
    /// How long `terminate` and the escalation steps of `stop` wait for a machine to go away.
    public var terminateGrace: Duration
    /// Remembers what machined must fork into a container to learn (os-release, addresses)
    /// for a long-running caller such as the daemon; nil asks every time.
    public var detailsCache: MachineDetailsCache?

    public init(terminateGrace: Duration = .seconds(30), detailsCache: MachineDetailsCache? = nil) {
        self.terminateGrace = terminateGrace
        self.detailsCache = detailsCache
    }

    /// Runs `body` with its own system bus connection on a worker thread.
    func withBus<T: Sendable>(_ body: @escaping @Sendable (BusConnection) throws -> T) async throws -> T {
        try await OSThread.run {
            try body(try connectSystemBus())
        }
    }
}

package func connectSystemBus() throws(NspawnError) -> BusConnection {
    do {
        return try BusConnection.system()
    } catch {
        if error.errno == Errno.permissionDenied.rawValue || error.errno == Errno.notPermitted.rawValue {
            throw .permissionDenied("connect to the system bus", cause: error)
        }
        throw .bus(error, context: "cannot connect to the system bus")
    }
}

extension Duration {
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
