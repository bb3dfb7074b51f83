import NspawnKit

/// `GET /v1/machines` answers from one listing at a time. machined serves one client at a time,
/// so 50 clients asking at once would otherwise queue 50 identical rounds.
/// - Requests that arrive while a listing runs share it.
/// - A finished listing answers for `maxAge` more, until anything changes: a change made through
///   the daemon, or machined's MachineNew/MachineRemoved (the server invalidates on both).
/// - Once it is older, the first request starts a new listing and waits for it; requests that
///   arrive meanwhile get the previous one rather than queue behind machined.
/// A client therefore never sees a list older than its own last action, and a change made
/// elsewhere shows within `maxAge` plus one listing's run time.
public actor ListCoalescer {
    private var generation = 0
    private var running: (generation: Int, task: Task<[MachineSummary], any Error>)?
    private var last: (generation: Int, started: ContinuousClock.Instant, machines: [MachineSummary])?
    let maxAge: Duration

    init(maxAge: Duration = .seconds(1)) {
        self.maxAge = maxAge
    }

    /// The listing as the response body, encoded once per listing.
    func listJSON(_ listing: @escaping @Sendable () async throws -> [MachineSummary]) async throws -> [UInt8] {
        let machines = try await list(listing)
        if let lastJSON, lastJSON.generation == generation, lastJSON.machines == machines { return lastJSON.body }
        let body = APIResponse.json(machines).body
        lastJSON = (generation, machines, body)
        return body
    }

    private var lastJSON: (generation: Int, machines: [MachineSummary], body: [UInt8])?

    func list(_ listing: @escaping @Sendable () async throws -> [MachineSummary]) async throws -> [MachineSummary] {
        let maxAge = maxAgeOverride ?? maxAge
        if let last, last.generation == generation, maxAge > .zero {
            if ContinuousClock.now - last.started < maxAge { return last.machines }
            if let running, running.generation == generation { return last.machines }
        }
        if let running, running.generation == generation {
            joined += 1
            return try await running.task.value
        }
        let task = Task { try await listing() }
        let mine = generation
        let started = ContinuousClock.now
        running = (mine, task)
        defer {
            if running?.generation == mine, running?.task == task { running = nil }
        }
        let machines = try await task.value
        if generation == mine { last = (mine, started, machines) }
        return machines
    }

    public func invalidate() {
        generation += 1
        last = nil
    }

    /// Without machined's signals a finished listing could be stale: answer each request anew.
    public func disable() {
        maxAgeOverride = .zero
        invalidate()
    }

    private var maxAgeOverride: Duration?
    /// How many requests shared a running listing instead of starting one (what tests wait for).
    private(set) var joined = 0
}
