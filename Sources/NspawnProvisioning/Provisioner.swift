import NspawnKit
import SystemPackage

/// Brings a machine's root into being from a source other than a clone (recipe, URL, file).
/// The front end supplies it: the CLI and nspawnd each run `nspawnctl-images`.
public typealias ImageProvider = @Sendable (ImageSource, MachineName) async throws -> Void

public struct ApplyOptions: Sendable {
    public var prune: Bool
    public var keepGoing: Bool

    public init(prune: Bool = false, keepGoing: Bool = false) {
        self.prune = prune
        self.keepGoing = keepGoing
    }
}

/// Plans and applies a manifest on this host through the library (machined and systemd over
/// D-Bus, files by openat2). Machines are converged one after another in manifest order.
public struct Provisioner: Sendable {
    let manager: MachineManager
    let images: ImageProvider?
    let stopTimeout: Duration

    public init(manager: MachineManager = MachineManager(), images: ImageProvider? = nil, stopTimeout: Duration = .seconds(90)) {
        self.manager = manager
        self.images = images
        self.stopTimeout = stopTimeout
    }

    struct Target: Sendable {
        var desired: DesiredMachine?
        var observed: ObservedMachine
        var checks: GuestChecks
        var plan: MachinePlan
    }

    // MARK: Plan

    public func plan(_ manifest: Manifest, prune: Bool) async throws -> ProvisionPlan {
        let targets = try await targets(manifest, prune: prune)
        return ProvisionPlan(manifest: manifest.name, file: manifest.file, machines: targets.map(\.plan))
    }

    func targets(_ manifest: Manifest, prune: Bool) async throws -> [Target] {
        let desired = try manifest.resolved()
        var targets = try await withThrowingTaskGroup(of: (Int, Target).self) { group in
            for (index, machine) in desired.enumerated() {
                group.addTask { (index, try await self.target(machine)) }
            }
            var found: [(Int, Target)] = []
            for try await entry in group { found.append(entry) }
            return found.sorted { $0.0 < $1.0 }.map(\.1)
        }
        if prune {
            let listed = Set(desired.map(\.name.rawValue))
            for summary in try await manager.list(includeHidden: false) where !listed.contains(summary.name) {
                guard let name = try? MachineName(summary.name) else { continue }
                let observed = try await manager.observe(name, exposure: nil, files: [], paths: [])
                if let plan = Planner.pruneCandidate(summary.name, observed: observed, manifest: manifest.name) {
                    targets.append(Target(desired: nil, observed: observed, checks: GuestChecks(), plan: plan))
                }
            }
        }
        return targets
    }

    func target(_ desired: DesiredMachine) async throws -> Target {
        let observed = try await manager.observe(desired.name, exposure: try? desired.activation(),
                                                 files: desired.files.map(\.path), paths: desired.run.compactMap(\.creates))
        var checks = GuestChecks()
        if observed.exists {
            // One lookup per owner and group, not per file: each reads the guest's passwd and group.
            var resolved: [String: GuestIDs] = [:]
            for file in desired.files {
                let account = "\(file.owner):\(file.group ?? "")"
                if resolved[account] == nil, let ids = try? await manager.guestIDs(desired.name, user: file.owner, group: file.group) {
                    resolved[account] = GuestIDs(uid: ids.uid, gid: ids.gid)
                }
                checks.fileOwners[file.path] = resolved[account]
            }
        }
        if observed.running, !desired.isAbsent {
            for (index, command) in desired.run.enumerated() {
                guard let unless = command.unless, !(command.creates.map(observed.existingPaths.contains) ?? false) else { continue }
                let outcome = try? await runQuietly(desired.name, ExecSpec(command: unless, user: command.user))
                checks.unlessSucceeded[index] = outcome?.outcome == .exited(0)
            }
            if !desired.packages.isEmpty, let manager = observed.packageManager {
                for package in desired.packages {
                    let outcome = try? await runQuietly(desired.name, ExecSpec(command: Self.queryCommand(manager, package)))
                    if outcome?.outcome == .exited(0) { checks.installedPackages.insert(package) }
                }
            }
        }
        return Target(desired: desired, observed: observed, checks: checks, plan: Planner.plan(desired, observed: observed, checks: checks))
    }

    // MARK: Apply

    /// Converges every machine. A machine whose step fails has its host-side changes put back
    /// (a machine this run created is removed whole); later machines are skipped unless
    /// `keepGoing`. The report says what happened to each.
    ///
    /// Each machine is locked for this apply before it is looked at (`ApplyLocks`): a second
    /// apply of any of them, in this process or another, is refused as busy.
    public func apply(_ manifest: Manifest, options: ApplyOptions, progress: @escaping @Sendable (ApplyEvent) -> Void = { _ in }) async throws -> ApplyReport {
        let locks = ApplyLocks(manifest: manifest.name)
        for name in try manifest.resolved().map(\.name).sorted(by: { $0.rawValue < $1.rawValue }) {
            try locks.acquire(name)
        }
        let targets = try await targets(manifest, prune: options.prune)
        // Machines found only by --prune are locked before they are removed.
        for target in targets where target.desired == nil {
            try locks.acquire(try MachineName(target.plan.name))
        }
        var results: [MachineApplyResult] = []
        var stop = false
        for target in targets {
            let name = target.plan.name
            if stop {
                results.append(MachineApplyResult(name: name, result: .skipped, changes: []))
                continue
            }
            if target.plan.changes.isEmpty {
                results.append(MachineApplyResult(name: name, result: .unchanged, changes: []))
                continue
            }
            var done: [PlannedChange] = []
            do {
                try await converge(target, manifest: manifest.name) { change in
                    done.append(change)
                    progress(.change(machine: name, change))
                }
                results.append(MachineApplyResult(name: name, result: .changed, changes: done))
            } catch {
                let failure = error as? ConvergeFailure ?? ConvergeFailure(cause: error, rollbackError: "the undo did not run")
                let result = MachineApplyResult(name: name, result: .failed, changes: done, error: "\(failure.cause)",
                                                rolledBack: failure.rollbackError == nil, rollbackError: failure.rollbackError)
                progress(.failure(result))
                results.append(result)
                if !options.keepGoing { stop = true }
            }
        }
        return ApplyReport(manifest: manifest.name, file: manifest.file, machines: results)
    }

    /// A machine's failed step, and whether its undo left anything behind.
    struct ConvergeFailure: Error {
        var cause: any Error
        /// nil when the undo put everything back.
        var rollbackError: String?
    }

    /// What this run made, so that its undo removes that and nothing else: a machine of the
    /// same name that another client made meanwhile is not this run's to remove.
    final class Made {
        var machine = false
    }

    /// Throws `ConvergeFailure`.
    private func converge(_ target: Target, manifest: String, done: (PlannedChange) -> Void) async throws {
        let observed = target.observed
        guard let desired = target.desired, !desired.isAbsent else {
            // Removal: absent in the manifest, or pruned. What it removed stays removed.
            do {
                let name = try MachineName(target.plan.name)
                try await manager.remove(name, force: true, stopTimeout: stopTimeout)
            } catch {
                throw ConvergeFailure(cause: error, rollbackError: "a removal is not undone: what it removed before the failure stays removed")
            }
            target.plan.changes.forEach(done)
            return
        }
        let name = desired.name
        let creating = !observed.exists
        let made = Made()
        var before: HostSideState?
        do {
            before = creating ? nil : try await manager.hostSideState(name)
            try await steps(target, desired: desired, manifest: manifest, made: made, done: done)
        } catch {
            // Undo: a machine made by this run goes whole; otherwise its host-side files and
            // enablement go back to what they were.
            var rollbackError: String?
            if made.machine {
                do {
                    try await manager.remove(name, force: true, stopTimeout: .seconds(10))
                } catch let undo {
                    rollbackError = "machine '\(name)', made by this apply, is left: removing it failed: \(undo)"
                }
            } else if let before {
                do {
                    try await manager.restoreHostSide(before)
                } catch let undo {
                    rollbackError = "the host-side files of machine '\(name)' may be left as this apply changed them "
                        + "(settings, flavor drop-in, socket unit, enablement): putting them back failed: \(undo)"
                }
            }
            throw ConvergeFailure(cause: error, rollbackError: rollbackError)
        }
    }

    private func steps(_ target: Target, desired: DesiredMachine, manifest: String, made: Made, done: (PlannedChange) -> Void) async throws {
        let name = desired.name
        let changes = target.plan.changes
        func change(_ field: ChangeField) -> PlannedChange? { changes.first { $0.field == field } }
        let creating = !target.observed.exists

        if let change = change(.machine) {
            guard let image = desired.image else {
                let position = desired.positions["image"].map { "\($0)" } ?? "machines.\(name)"
                throw NspawnError.invalidArgument("\(position): machine '\(name)' does not exist and the manifest gives no image")
            }
            switch image {
            case .clone(let source):
                _ = try await manager.create(name, from: source, edit: SettingsEdit(), flavor: nil, activation: nil, start: false)
            default:
                guard let images else { throw NspawnError.failed("machine '\(name)': this front end cannot import images; use a clone") }
                try await images(image, name)
            }
            made.machine = true
            // Recorded at once, so that even an interrupted apply leaves a machine --prune knows.
            try await manager.setProvisioningRecord(name, ProvisioningRecord(manifest: manifest, created: true, settings: []))
            done(change)
        }
        if let change = change(.image), case .clone(let source)? = desired.image {
            _ = try await manager.rebuild(name, image: source, stopTimeout: stopTimeout)
            done(change)
        }
        // Host side: settings, flavor, enablement.
        let settingChanges = changes.filter { if case .setting = $0.field { true } else { false } }
        if !settingChanges.isEmpty {
            let values = desired.settings.map { ($0.key, $0.values) }
            let removals = settingChanges.filter { $0.op == .remove }.compactMap { change -> SettingKey? in
                guard case .setting(let id) = change.field else { return nil }
                return try? SettingKey(named: id)
            }
            _ = try await manager.setSettings(name, values: values, remove: removals)
            settingChanges.forEach(done)
        }
        if let change = change(.flavor), let flavor = desired.flavor {
            _ = try await manager.configure(name, edit: SettingsEdit(), flavor: try Flavor.load(flavor))
            done(change)
        }
        if let change = change(.restart), let restart = desired.restart {
            try await manager.setRestartPolicy(name, restart)
            done(change)
        }
        if let change = change(.health), let health = desired.health {
            try await manager.setHealthCheck(name, health.check)
            done(change)
        }
        if let change = change(.snapshots), let snapshots = desired.snapshots {
            try await manager.setSnapshotSchedule(name, snapshots.schedule)
            done(change)
        }
        if let change = change(.enabled), let enabled = desired.enabled {
            if enabled { _ = try await manager.enable(name) } else { _ = try await manager.disable(name) }
            done(change)
        }
        // Inside, before the start: the guest boots with its files and sockets in place.
        for file in desired.files {
            guard let change = change(.file(file.path)) else { continue }
            // Resolved while planning when the machine existed; a new machine's accounts are read now.
            let ids: GuestIDs
            if let known = target.checks.fileOwners[file.path] {
                ids = known
            } else {
                let found = try await manager.guestIDs(name, user: file.owner, group: file.group)
                ids = GuestIDs(uid: found.uid, gid: found.gid)
            }
            try await manager.writeGuestFile(name, path: file.path, content: Array(file.content.utf8), mode: file.mode, uid: ids.uid, gid: ids.gid)
            done(change)
        }
        if let change = change(.expose), let activation = try desired.activation() {
            let running = creating ? false : target.observed.running
            _ = try await manager.expose(activation, restart: running, stopTimeout: stopTimeout)
            done(change)
        }
        if let change = change(.state), let state = desired.state {
            switch state {
            case .running: try await manager.start(name)
            case .stopped: try await manager.stop(name, timeout: stopTimeout)
            case .absent: break
            }
            done(change)
        }
        let packages: [(change: PlannedChange, name: String)] = changes.compactMap { change in
            if case .package(let name) = change.field { (change, name) } else { nil }
        }
        if !packages.isEmpty {
            try await waitForGuest(name)
            let observed = try await manager.observe(name, exposure: nil, files: [], paths: [])
            guard let packageManager = observed.packageManager else {
                throw NspawnError.failed("machine '\(name)': no package manager found (apt-get, pacman, apk or dnf)")
            }
            // Installed meanwhile, or part of the image a new machine came from: not asked for again.
            var list: [String] = []
            for package in packages.map(\.name) {
                let query = try await runQuietly(name, ExecSpec(command: Self.queryCommand(packageManager, package)))
                if query.outcome != .exited(0) { list.append(package) }
            }
            if !list.isEmpty { try await runChecked(name, ExecSpec(command: Self.installCommand(packageManager, list), environment: ["DEBIAN_FRONTEND=noninteractive"]),
                                 label: "installing \(list.joined(separator: " "))") }
            packages.filter { list.contains($0.name) }.map(\.change).forEach(done)
        }
        for (index, command) in desired.run.enumerated() {
            guard let change = change(.run(index)) else { continue }
            try await waitForGuest(name)
            // A guard may have changed since the plan: an earlier command can create its file.
            if !creating || command.isGuarded, try await guardHolds(command, name: name) { continue }
            try await runChecked(name, ExecSpec(command: command.command, user: command.user), label: "run[\(index)] (\(command.command.joined(separator: " ")))")
            done(change)
        }
        if let wait = desired.wait {
            try await waitFor(wait, name: name)
        }
        let record = ProvisioningRecord(manifest: target.observed.record?.manifest ?? manifest,
                                        created: target.observed.record?.created ?? creating,
                                        settings: desired.settings.map(\.key.id))
        if target.observed.record != record || creating { try await manager.setProvisioningRecord(name, record) }
    }

    /// True when the guard says the command is not needed (its file exists, or `unless` succeeds).
    private func guardHolds(_ command: ManagedCommand, name: MachineName) async throws -> Bool {
        if let path = command.creates {
            let observed = try await manager.observe(name, exposure: nil, files: [], paths: [path])
            if observed.existingPaths.contains(path) { return true }
        }
        if let unless = command.unless {
            return try await runQuietly(name, ExecSpec(command: unless, user: command.user)).outcome == .exited(0)
        }
        return false
    }
}
