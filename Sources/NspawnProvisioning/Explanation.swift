import NspawnKit

/// `plan --explain`: each value of one machine and the layer it came from.
public enum Explanation {
    public typealias Line = ExplanationLine

    public static func lines(_ manifest: Manifest, machine: MachineName) throws(NspawnError) -> [Line] {
        guard let desired = try manifest.resolved().first(where: { $0.name == machine }) else {
            throw .invalidArgument("\(manifest.file): no machine '\(machine)' in the manifest")
        }
        var lines: [Line] = []
        func add(_ field: String, _ value: String, key: String? = nil) {
            let position = desired.positions[key ?? field]
            lines.append(Line(field: field, value: value, origin: desired.origins[field] ?? desired.origins[key ?? field] ?? "machine",
                              position: position.map { "\($0.file):\($0.line):\($0.column)" }))
        }
        if let image = desired.image { add("image", "\(image)") }
        if let flavor = desired.flavor { add("flavor", flavor) }
        if let restart = desired.restart { add("restart", restart.text) }
        if let health = desired.health { add("health", health.text) }
        if let snapshots = desired.snapshots { add("snapshots", snapshots.text) }
        for setting in desired.settings { add("settings.\(setting.key.id)", setting.values.joined(separator: " ")) }
        if let enabled = desired.enabled { add("enabled", enabled ? "true" : "false") }
        if let state = desired.state { add("state", state.rawValue) }
        for file in desired.files { add("file:\(file.path)", Planner.fileSummary(file)) }
        for package in desired.packages { add("package:\(package)", package, key: "packages") }
        for (index, command) in desired.run.enumerated() { add("run[\(index)]", command.command.joined(separator: " "), key: "run") }
        if let expose = desired.expose { add("expose", expose.listen.joined(separator: " ")) }
        if let wait = desired.wait { add("wait", wait.command.joined(separator: " ")) }
        return lines
    }
}
