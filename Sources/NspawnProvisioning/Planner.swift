import NspawnKit

/// What the engine found inside a running machine, beyond its files: answers of `unless`
/// guards (by command index) and which packages are installed.
public struct GuestChecks: Sendable, Equatable {
    public var unlessSucceeded: [Int: Bool] = [:]
    public var installedPackages: Set<String> = []
    /// Desired guest ids of each managed file, by path; missing when they could not be resolved.
    public var fileOwners: [String: GuestIDs] = [:]

    public init() {}
}

public struct GuestIDs: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
}

/// The pure half of provisioning: the difference between a desired machine and what is there.
public enum Planner {
    public static func plan(_ desired: DesiredMachine, observed: ObservedMachine, checks: GuestChecks) -> MachinePlan {
        let name = desired.name.rawValue
        if desired.isAbsent {
            return observed.exists ? MachinePlan(name: name, action: .remove, changes: [PlannedChange(.remove, .machine)]) : MachinePlan(name: name, action: .none, changes: [])
        }
        let creating = !observed.exists
        var changes: [PlannedChange] = []
        if creating {
            changes.append(PlannedChange(.add, .machine, new: .text(desired.image.map { "\($0)" } ?? "(no image given)")))
        } else if case .clone(let image)? = desired.image, let origin = observed.origin, origin != image {
            changes.append(PlannedChange(.change, .image, old: .text(origin.rawValue), new: .text(image.rawValue)))
        }
        for setting in desired.settings {
            let current = creating ? [] : observed.settings.values(setting.key)
            guard current != setting.values else { continue }
            changes.append(PlannedChange(current.isEmpty ? .add : .change, .setting(setting.key.id),
                                         old: current.isEmpty ? nil : .list(current), new: .list(setting.values)))
        }
        if !creating, let managed = observed.record?.settings {
            for id in managed where !desired.settings.contains(where: { $0.key.id == id }) {
                guard let key = try? SettingKey(named: id) else { continue }
                let current = observed.settings.values(key)
                if !current.isEmpty { changes.append(PlannedChange(.remove, .setting(id), old: .list(current))) }
            }
        }
        if let flavor = desired.flavor, creating || observed.flavor != flavor {
            let old = creating ? nil : observed.flavor
            changes.append(PlannedChange(old == nil ? .add : .change, .flavor, old: old.map(PlanValue.text), new: .text(flavor)))
        }
        if let restart = desired.restart, creating ? !restart.isDefault : (observed.restart ?? RestartPolicy(mode: .no)) != restart {
            let old = creating ? nil : observed.restart
            changes.append(PlannedChange(old == nil ? .add : .change, .restart, old: old.map { .text($0.text) }, new: .text(restart.text)))
        }
        if let health = desired.health, case let have = creating ? nil : observed.health, health.check != have {
            let action: PlannedChange.Operation = have == nil ? .add : health.check == nil ? .remove : .change
            changes.append(PlannedChange(action, .health, old: have.map { .text($0.text) }, new: health.check.map { .text($0.text) }))
        }
        if let snapshots = desired.snapshots, case let have = creating ? nil : observed.snapshotSchedule, snapshots.schedule != have {
            let action: PlannedChange.Operation = have == nil ? .add : snapshots.schedule == nil ? .remove : .change
            changes.append(PlannedChange(action, .snapshots, old: have.map { .text($0.text) }, new: snapshots.schedule.map { .text($0.text) }))
        }
        if let enabled = desired.enabled, creating ? enabled : observed.enabled != enabled {
            changes.append(PlannedChange(.change, .enabled, old: .flag(creating ? false : observed.enabled), new: .flag(enabled)))
        }
        for file in desired.files {
            guard !creating, let current = observed.files[file.path] else {
                changes.append(PlannedChange(.add, .file(file.path), new: .text(fileSummary(file))))
                continue
            }
            let owner = checks.fileOwners[file.path]
            let same = current.content == Array(file.content.utf8) && current.mode == file.mode
                && owner.map { $0.uid == current.uid && $0.gid == current.gid } ?? false
            if !same {
                changes.append(PlannedChange(.change, .file(file.path), old: .text(currentSummary(current)), new: .text(fileSummary(file))))
            }
        }
        if desired.expose != nil, creating || !observed.exposureMatches {
            let new = PlanValue.list(desired.expose?.listen ?? [])
            changes.append(creating || !observed.exposed ? PlannedChange(.add, .expose, new: new) : PlannedChange(.change, .expose, new: new))
        }
        if let state = desired.state {
            let current: DesiredState = !creating && observed.running ? .running : .stopped
            if current != state { changes.append(PlannedChange(.change, .state, old: .text(current.rawValue), new: .text(state.rawValue))) }
        }
        for package in desired.packages where creating || !checks.installedPackages.contains(package) {
            changes.append(PlannedChange(.add, .package(package)))
        }
        for (index, command) in desired.run.enumerated() where shouldRun(command, index: index, creating: creating, observed: observed, checks: checks) {
            changes.append(PlannedChange(.add, .run(index), new: .list(command.command)))
        }
        let action: MachinePlan.Action = creating ? .create : changes.isEmpty ? .none : .update
        return MachinePlan(name: name, action: action, changes: changes)
    }

    /// Unguarded commands run when the machine is created; guarded ones while their guard says so.
    static func shouldRun(_ command: ManagedCommand, index: Int, creating: Bool, observed: ObservedMachine, checks: GuestChecks) -> Bool {
        if creating { return true }
        guard command.isGuarded else { return false }
        if let path = command.creates, observed.existingPaths.contains(path) { return false }
        if command.unless != nil, checks.unlessSucceeded[index] == true { return false }
        return true
    }

    /// A machine the manifest created earlier and no longer lists: `--prune` removes it.
    public static func pruneCandidate(_ name: String, observed: ObservedMachine, manifest: String) -> MachinePlan? {
        guard observed.exists, let record = observed.record, record.manifest == manifest, record.created else { return nil }
        return MachinePlan(name: name, action: .remove, changes: [PlannedChange(.remove, .machine, old: .text("created by manifest '\(manifest)', no longer listed"))])
    }

    static func fileSummary(_ file: ManagedFile) -> String {
        "\(file.content.utf8.count) bytes, mode \(String(file.mode, radix: 8)), \(file.owner)" + (file.group.map { ":\($0)" } ?? "")
    }

    static func currentSummary(_ state: GuestFileState) -> String {
        "\(state.content.count) bytes, mode \(String(state.mode, radix: 8)), uid \(state.uid), gid \(state.gid)"
    }
}
