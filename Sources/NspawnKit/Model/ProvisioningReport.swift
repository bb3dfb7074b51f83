/// A value in a plan: one word, a list, or a flag.
public enum PlanValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case text(String)
    case list([String])
    case flag(Bool)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .flag(flag)
        } else if let list = try? container.decode([String].self) {
            self = .list(list)
        } else {
            self = .text(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .list(let list): try container.encode(list)
        case .flag(let flag): try container.encode(flag)
        }
    }

    public var description: String {
        switch self {
        case .text(let text): text
        case .list(let list): "[" + list.joined(separator: ", ") + "]"
        case .flag(let flag): flag ? "true" : "false"
        }
    }
}

/// One change: `+` to add, `~` to change, `-` to remove.
public struct PlannedChange: Codable, Sendable, Equatable {
    public enum Operation: String, Codable, Sendable {
        case add = "+"
        case change = "~"
        case remove = "-"
    }

    public var op: Operation
    /// `machine`, `image`, `flavor`, `settings.SECTION.KEY`, `enabled`, `state`, `file:/PATH`,
    /// `run[N]`, `package:NAME`, `expose`, `wait`.
    public var field: String
    public var old: PlanValue?
    public var new: PlanValue?

    public init(_ op: Operation, _ field: String, old: PlanValue? = nil, new: PlanValue? = nil) {
        self.op = op
        self.field = field
        self.old = old
        self.new = new
    }

    /// `+ web1 flavor: small`, `~ web1 flavor: small → medium`, `- web1 settings.Exec.Environment`.
    public func line(machine: String) -> String {
        switch (old, new) {
        case (let old?, let new?): "\(op.rawValue) \(machine) \(field): \(old) → \(new)"
        case (nil, let new?): "\(op.rawValue) \(machine) \(field): \(new)"
        case (let old?, nil): "\(op.rawValue) \(machine) \(field) (was \(old))"
        case (nil, nil): "\(op.rawValue) \(machine) \(field)"
        }
    }
}

public struct MachinePlan: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        case create, update, remove, none
    }

    public var name: String
    public var action: Action
    public var changes: [PlannedChange]

    public init(name: String, action: Action, changes: [PlannedChange]) {
        self.name = name
        self.action = action
        self.changes = changes
    }
}

/// What `plan` prints: per machine, what `apply` would change.
public struct ProvisionPlan: Codable, Sendable, Equatable {
    public var manifest: String
    public var file: String
    public var changes: Int
    public var machines: [MachinePlan]

    public init(manifest: String, file: String, machines: [MachinePlan]) {
        self.manifest = manifest
        self.file = file
        self.machines = machines
        self.changes = machines.reduce(0) { $0 + $1.changes.count }
    }
}

public struct MachineApplyResult: Codable, Sendable, Equatable {
    public enum Result: String, Codable, Sendable {
        case changed, unchanged, failed, skipped
    }

    public var name: String
    public var result: Result
    /// What was done (for a failed machine: what was done before the failure, since undone).
    public var changes: [PlannedChange]
    public var error: String?
    /// A failed machine: true only when every undo step succeeded (its host-side changes are
    /// back, or the machine this apply made is gone).
    public var rolledBack: Bool?
    /// Why the undo did not put everything back, and what is left to clean up.
    public var rollbackError: String?

    public init(name: String, result: Result, changes: [PlannedChange], error: String? = nil, rolledBack: Bool? = nil,
                rollbackError: String? = nil) {
        self.name = name
        self.result = result
        self.changes = changes
        self.error = error
        self.rolledBack = rolledBack
        self.rollbackError = rollbackError
    }

    /// The progress line of a failed machine: `! NAME: ERROR`, and what its undo left.
    public var failureLine: String {
        "! \(name): \(error ?? "failed")" + (rollbackError.map { "; not rolled back: \($0)" } ?? "")
    }
}

/// What `apply` prints, also when a machine failed.
public struct ApplyReport: Codable, Sendable, Equatable {
    public var manifest: String
    public var file: String
    public var changes: Int
    public var failed: Int
    public var machines: [MachineApplyResult]

    public init(manifest: String, file: String, machines: [MachineApplyResult]) {
        self.manifest = manifest
        self.file = file
        self.machines = machines
        self.changes = machines.filter { $0.result == .changed }.reduce(0) { $0 + $1.changes.count }
        self.failed = machines.filter { $0.result == .failed }.count
    }
}
