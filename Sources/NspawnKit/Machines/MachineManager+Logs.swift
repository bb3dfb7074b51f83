extension MachineManager {
    /// A machine's journal window in batches, oldest first: its own journal merged with the
    /// host's entries about its unit. While following, an empty batch is a heartbeat (nothing
    /// new for a while); the stream ends when the consumer stops iterating.
    public func logs(_ name: MachineName, _ request: LogRequest) async throws -> AsyncThrowingStream<[LogEntry], any Error> {
        var window = try request.window()
        let boot = window.boot
        let located = try await withBus { bus throws(NspawnError) in try MachineJournal.locate(name, bus: bus, boot: boot) }
        if let floor = located.bootFloor { window.since = max(window.since ?? 0, floor) }
        let reader = try MachineLogReader(unit: name.serviceUnit, guestFiles: located.files, window: window)
        return AsyncThrowingStream {
            try await withTaskCancellationHandler {
                try await OSThread.run { () throws(NspawnError) in try reader.nextBatch() }
            } onCancel: {
                reader.cancel()
            }
        }
    }
}
