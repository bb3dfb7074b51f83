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

/// What a planned change is about. On the wire and in text it is one word, as before:
/// `machine`, `image`, `flavor`, `restart`, `health`, `settings.SECTION.KEY`, `enabled`, `state`, `file:/PATH`,
/// `run[N]`, `package:NAME`, `expose`.
public enum ChangeField: Hashable, Sendable, Codable, CustomStringConvertible {
    case machine
    case image
    case setting(String)
    case flavor
    case restart
    case health
    case snapshots
    case enabled
    case file(String)
    case expose
    case state
    case package(String)
    case run(Int)

    public var description: String {
        switch self {
        case .machine: "machine"
        case .image: "image"
        case .setting(let id): "settings.\(id)"
        case .flavor: "flavor"
        case .restart: "restart"
        case .health: "health"
        case .snapshots: "snapshots"
        case .enabled: "enabled"
        case .file(let path): "file:\(path)"
        case .expose: "expose"
        case .state: "state"
        case .package(let name): "package:\(name)"
        case .run(let index): "run[\(index)]"
        }
    }

    /// The field a word names, or nil for a word no plan makes.
    public init?(_ word: String) {
        switch word {
        case "machine": self = .machine
        case "image": self = .image
        case "flavor": self = .flavor
        case "restart": self = .restart
        case "health": self = .health
        case "snapshots": self = .snapshots
        case "enabled": self = .enabled
        case "expose": self = .expose
        case "state": self = .state
        default:
            if word.hasPrefix("settings."), word.count > "settings.".count {
                self = .setting(String(word.dropFirst("settings.".count)))
            } else if word.hasPrefix("file:/") {
                self = .file(String(word.dropFirst("file:".count)))
            } else if word.hasPrefix("package:"), word.count > "package:".count {
                self = .package(String(word.dropFirst("package:".count)))
            } else if word.hasPrefix("run["), word.hasSuffix("]"), let index = Int(word.dropFirst(4).dropLast()), index >= 0 {
                self = .run(index)
            } else {
                return nil
            }
        }
    }

    public init(from decoder: any Decoder) throws {
        let word = try decoder.singleValueContainer().decode(String.self)
        guard let field = ChangeField(word) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "no plan changes '\(word)'"))
        }
        self = field
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
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
    public var field: ChangeField
    public var old: PlanValue?
    public var new: PlanValue?

    public init(_ op: Operation, _ field: ChangeField, old: PlanValue? = nil, new: PlanValue? = nil) {
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

/// What an apply reports as it goes, typed from the provisioner to whoever prints it (in the
/// same process, or through nspawnd's operation): a change done, or a machine that failed and
/// what its undo left. On the wire: `{"type": "change", "machine", "change"}` or
/// `{"type": "failed", "machine", "error", "rolled_back", "rollback_error"}`.
public enum ApplyEvent: Sendable, Equatable, Codable {
    case change(machine: String, PlannedChange)
    case failed(machine: String, error: String, rolledBack: Bool?, rollbackError: String?)

    /// A failed machine's event, from its result.
    public static func failure(_ result: MachineApplyResult) -> ApplyEvent {
        .failed(machine: result.name, error: result.error ?? "failed", rolledBack: result.rolledBack, rollbackError: result.rollbackError)
    }

    /// The line a person reads: the change's `line(machine:)`, or the machine's error.
    public var text: String {
        switch self {
        case .change(let machine, let change): change.line(machine: machine)
        case .failed(let machine, let error, _, let rollbackError):
            "\(machine): \(error)" + (rollbackError.map { "; not rolled back: \($0)" } ?? "")
        }
    }

    public var isFailure: Bool {
        if case .failed = self { true } else { false }
    }

    private enum Key: String, CodingKey {
        case type, machine, change, error, rolledBack, rollbackError
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        let machine = try container.decode(String.self, forKey: .machine)
        switch try container.decode(String.self, forKey: .type) {
        case "change":
            self = .change(machine: machine, try container.decode(PlannedChange.self, forKey: .change))
        case "failed":
            self = .failed(machine: machine, error: try container.decode(String.self, forKey: .error),
                           rolledBack: try container.decodeIfPresent(Bool.self, forKey: .rolledBack),
                           rollbackError: try container.decodeIfPresent(String.self, forKey: .rollbackError))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .type, in: container, debugDescription: "no apply event '\(other)'")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        switch self {
        case .change(let machine, let change):
            try container.encode("change", forKey: .type)
            try container.encode(machine, forKey: .machine)
            try container.encode(change, forKey: .change)
        case .failed(let machine, let error, let rolledBack, let rollbackError):
            try container.encode("failed", forKey: .type)
            try container.encode(machine, forKey: .machine)
            try container.encode(error, forKey: .error)
            try container.encodeIfPresent(rolledBack, forKey: .rolledBack)
            try container.encodeIfPresent(rollbackError, forKey: .rollbackError)
        }
    }
}

extension ApplyReport {
    /// The events an apply reported, in order, rebuilt from its report: a client that missed
    /// some of them while following prints the rest from here.
    public var events: [ApplyEvent] {
        machines.flatMap { machine in
            machine.changes.map { ApplyEvent.change(machine: machine.name, $0) } + (machine.result == .failed ? [.failure(machine)] : [])
        }
    }
}

/// One value of a machine in `plan --explain` and the layer it came from.
public struct ExplanationLine: Codable, Sendable, Equatable {
    public var field: String
    public var value: String
    public var origin: String
    /// file:line:column of the value.
    public var position: String?

    public init(field: String, value: String, origin: String, position: String? = nil) {
        self.field = field
        self.value = value
        self.origin = origin
        self.position = position
    }
}
