/// The machine operations shared by the CLI and the daemon: `MachineManager` calls machined and
/// systemd directly; the CLI's API client calls nspawnd, which calls `MachineManager`.
public protocol MachineService: Sendable {
    func list(includeHidden: Bool) async throws -> [MachineSummary]
    func status(_ name: MachineName) async throws -> MachineStatus
    func start(_ name: MachineName) async throws
    func stop(_ name: MachineName, timeout: Duration) async throws
    func reboot(_ name: MachineName) async throws
    func terminate(_ name: MachineName) async throws
    func kill(_ name: MachineName, signal: UnixSignal, whom: KillWhom) async throws
    func remove(_ name: MachineName, force: Bool, stopTimeout: Duration) async throws
    func rename(_ name: MachineName, to newName: MachineName) async throws
    func clone(_ name: MachineName, to newName: MachineName, readOnly: Bool) async throws
}

extension MachineManager: MachineService {}
