extension MachineManager {
    /// Starts a command in a running container: `spec.command`, or with an empty command the
    /// user's login shell (what `shell` runs).
    ///
    /// A login shell on a terminal in a guest that boots systemd is machined's
    /// (OpenMachineShell: a PAM session in the guest). Everything else joins the leader's
    /// cgroup, namespaces and root and runs as the guest user with the guest's environment,
    /// which works for bare payloads (Boot=no) too.
    ///
    /// A command that cannot be started is a result, as in a shell: the process says why on
    /// its error stream and ends with 127 (no such command) or 126 (cannot be executed).
    /// - Throws: `NspawnError`: `.notRunning` for a stopped machine, `.noSuchImage` for an
    ///   unknown one, `.invalidArgument` for a bad spec or an unknown user, and the errors of
    ///   joining the machine, switching user or changing directory.
    public func exec(_ name: MachineName, _ spec: ExecSpec) async throws -> any GuestProcess {
        try spec.validate()
        return try await OSThread.run { () throws -> any GuestProcess in
            let bus = try connectSystemBus()
            let properties = try Self.runningMachine(name, machined: Machined(bus: bus))
            if let machineClass = properties.machineClass, machineClass != "container" {
                throw NspawnError.invalidArgument("machine '\(name)' is a \(machineClass), not a container: exec needs a container")
            }
            guard let pid = properties.leader, pid > 0 else { throw NspawnError.notRunning(name.rawValue) }
            let leader = try MachineLeader(machine: name.rawValue, pid: pid)
            let user = try leader.resolveUser(spec.user)
            if spec.command.isEmpty, spec.tty, spec.workingDirectory == nil, leader.runsSystemd,
               let shell = try MachinedShellProcess.open(name, user: user, spec: spec, bus: bus) {
                return shell
            }
            return try NamespaceProcess.start(spec, leader: leader, user: user)
        }
    }
}
