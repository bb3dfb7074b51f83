import NspawnKit

/// One machine with its layers merged: what `plan` compares against the machine on the host.
public struct DesiredMachine: Sendable, Equatable {
    public var name: MachineName
    public var image: ImageSource?
    public var flavor: String?
    public var settings: [ManifestLayer.Setting] = []
    public var enabled: Bool?
    public var state: DesiredState?
    public var files: [ManagedFile] = []
    public var run: [ManagedCommand] = []
    public var packages: [String] = []
    public var expose: ManagedExposure?
    public var wait: WaitCondition?
    public var restart: RestartPolicy?
    public var health: HealthSetting?
    public var snapshots: SnapshotsSetting?
    /// For each field, the layer its value came from: `defaults`, `profile NAME` or `machine`.
    public var origins: [String: String] = [:]
    public var positions: [String: ManifestPosition] = [:]

    public var isAbsent: Bool { state == .absent }

    public func activation() throws(NspawnError) -> SocketActivation? {
        try expose.map { (exposure) throws(NspawnError) in try exposure.activation(for: name) }
    }
}

extension ManagedExposure {
    func activation(for name: MachineName) throws(NspawnError) -> SocketActivation {
        let handler: ExposeHandler
        switch (unit, exec) {
        case (let unit?, nil): handler = .unit(unit)
        case (nil, let exec?): handler = .exec(exec)
        case (nil, nil): throw .invalidArgument("say what answers inside the machine: exec or unit")
        case (_?, _?): throw .invalidArgument("exec and unit exclude each other")
        }
        var addresses: [ListenAddress] = []
        for text in listen { addresses.append(try ListenAddress(parsing: text)) }
        return try SocketActivation(machine: name, addresses: addresses, handler: handler)
    }
}

enum ListenCheck {
    static func validate(_ exposure: ManagedExposure) throws(NspawnError) {
        _ = try exposure.activation(for: try MachineName("placeholder"))
    }
}

extension Manifest {
    /// Every machine with defaults, then its profiles in the order it lists them, then its own
    /// values. Scalars: the last layer wins; settings per key; files per path; commands are
    /// concatenated; packages are a union. Refuses combinations no layer alone shows.
    public func resolved() throws(NspawnError) -> [DesiredMachine] {
        var result: [DesiredMachine] = []
        for machine in machines {
            var desired = DesiredMachine(name: machine.name, image: machine.image)
            let layers = [("defaults", defaults)] + machine.profiles.map { ("profile \($0)", profiles[$0] ?? ManifestLayer()) } + [("machine", machine.layer)]
            for (origin, layer) in layers { desired.merge(layer, origin: origin) }
            if machine.image != nil { desired.origins["image"] = "machine" }
            if desired.state != .running {
                for key in ["run", "packages", "wait"] where desired.origins[key] != nil {
                    let position = desired.positions[key].map { "\($0)" } ?? "\(file): machines.\(machine.name).\(key)"
                    throw .invalidArgument("\(position): machine '\(machine.name)' has '\(key)', which needs state: running (it is \(desired.state?.rawValue ?? "not set"))")
                }
            }
            if desired.state != .absent && desired.image == nil {
                desired.positions["image"] = machine.position
            }
            result.append(desired)
        }
        return result
    }
}

extension DesiredMachine {
    mutating func merge(_ layer: ManifestLayer, origin: String) {
        func note(_ field: String, _ key: String) {
            origins[field] = origin
            if let position = layer.positions[key] { positions[field] = position }
        }
        if let flavor = layer.flavor { self.flavor = flavor; note("flavor", "flavor") }
        if let restart = layer.restart { self.restart = restart; note("restart", "restart") }
        if let health = layer.health { self.health = health; note("health", "health") }
        if let snapshots = layer.snapshots { self.snapshots = snapshots; note("snapshots", "snapshots") }
        for setting in layer.settings {
            if let index = settings.firstIndex(where: { $0.key == setting.key }) { settings[index] = setting } else { settings.append(setting) }
            note("settings.\(setting.key.id)", "settings.\(setting.key.id)")
        }
        if let enabled = layer.enabled { self.enabled = enabled; note("enabled", "enabled") }
        if let state = layer.state { self.state = state; note("state", "state") }
        for file in layer.files {
            if let index = files.firstIndex(where: { $0.path == file.path }) { files[index] = file } else { files.append(file) }
            note("file:\(file.path)", "file:\(file.path)")
        }
        if !layer.run.isEmpty {
            for command in layer.run {
                run.append(command)
                origins["run[\(run.count - 1)]"] = origin
            }
            note("run", "run")
        }
        if !layer.packages.isEmpty {
            for package in layer.packages where !packages.contains(package) {
                packages.append(package)
                origins["package:\(package)"] = origin
            }
            note("packages", "packages")
        }
        if let expose = layer.expose { self.expose = expose; note("expose", "expose") }
        if let wait = layer.wait { self.wait = wait; note("wait", "wait") }
    }
}
