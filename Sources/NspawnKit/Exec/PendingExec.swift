// Temporary: the `exec` branch brings the real MachineManager.exec; delete this file when it lands.
extension MachineManager {
    public func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess {
        throw NspawnError.failed("exec is not built yet")
    }
}
