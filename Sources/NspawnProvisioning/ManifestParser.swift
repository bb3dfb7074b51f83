import Foundation
import NspawnKit
import Yams

/// Reads a manifest strictly: unknown keys, wrong types, bad names and values `config` would
/// refuse are errors naming the file, line, column and key. Nothing is looked up on the host
/// except flavors, which must exist where the manifest is applied.
public struct ManifestParser {
    let file: String
    let flavorDirectories: [String]

    public init(file: String, flavorDirectories: [String] = Flavor.searchDirectories) {
        self.file = file
        self.flavorDirectories = flavorDirectories
    }

    static let layerKeys = ["flavor", "settings", "enabled", "state", "files", "run", "packages", "expose", "wait", "restart", "health", "snapshots"]
    static let machineKeys = ["image", "profiles"] + layerKeys

    public func parse(_ text: String) throws(NspawnError) -> Manifest {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw .invalidArgument(Self.describe(error, file: file))
        } catch {
            throw .invalidArgument("\(file): not YAML: \(error)")
        }
        guard let root else { throw .invalidArgument("\(file): the manifest is empty; it needs at least 'machines'") }
        let top = try mapping(root, key: "(top level)", allowed: ["name", "defaults", "profiles", "machines"])
        var manifest = Manifest(name: try manifestName(top["name"]), file: file, defaults: ManifestLayer(), profiles: [:], machines: [])
        if let defaults = top["defaults"] {
            manifest.defaults = try layer(defaults, key: "defaults", allowed: Self.layerKeys)
        }
        if let profiles = top["profiles"] {
            for (nameNode, value) in try mapping(profiles, key: "profiles").entries {
                let name = try string(nameNode, key: "profiles")
                guard Self.isProfileName(name) else {
                    throw error(nameNode, "profiles.\(name)", "invalid profile name: use letters, digits, '-', '_' and '.'")
                }
                manifest.profiles[name] = try layer(value, key: "profiles.\(name)", allowed: Self.layerKeys)
            }
        }
        guard let machines = top["machines"] else {
            throw .invalidArgument("\(file): 'machines' is missing; a manifest declares at least one machine")
        }
        for (nameNode, value) in try mapping(machines, key: "machines").entries {
            let text = try string(nameNode, key: "machines")
            let name: MachineName
            do { name = try MachineName(text) } catch { throw self.error(nameNode, "machines.\(text)", "\(error)") }
            manifest.machines.append(try machine(name, value, key: "machines.\(text)", profiles: manifest.profiles))
        }
        if manifest.machines.isEmpty { throw error(machines, "machines", "no machines are declared") }
        return manifest
    }

    private func manifestName(_ node: Node?) throws(NspawnError) -> String {
        guard let node else {
            if file == "-" { throw .invalidArgument("-: a manifest read from stdin needs a 'name' (what --prune and the machines it creates are recorded under)") }
            let base = String(file.split(separator: "/").last ?? "manifest")
            for suffix in [".yaml", ".yml"] where base.hasSuffix(suffix) && base.count > suffix.count {
                return String(base.dropLast(suffix.count))
            }
            return base
        }
        let name = try string(node, key: "name")
        guard Self.isProfileName(name) else { throw error(node, "name", "invalid manifest name: use letters, digits, '-', '_' and '.'") }
        return name
    }

    static func isProfileName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.hasPrefix(".")
            && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    private func machine(_ name: MachineName, _ node: Node, key: String, profiles: [String: ManifestLayer]) throws(NspawnError) -> ManifestMachine {
        let fields = try mapping(node, key: key, allowed: Self.machineKeys)
        var names: [String] = []
        if let list = fields["profiles"] {
            for item in try sequence(list, key: "\(key).profiles") {
                let profile = try string(item, key: "\(key).profiles")
                guard profiles[profile] != nil else {
                    let known = profiles.keys.sorted()
                    throw error(item, "\(key).profiles", "no profile '\(profile)'" + (known.isEmpty ? " (none are declared)" : "; declared: \(known.joined(separator: ", "))"))
                }
                guard !names.contains(profile) else { throw error(item, "\(key).profiles", "profile '\(profile)' is listed twice") }
                names.append(profile)
            }
        }
        let ownLayer = try layer(node, key: key, allowed: Self.machineKeys)
        let image = try fields["image"].map { (node) throws(NspawnError) in try imageSource(node, key: "\(key).image") }
        let position = self.position(node, key)
        return ManifestMachine(name: name, image: image, profiles: names, layer: ownLayer, position: position)
    }

    private func imageSource(_ node: Node, key: String) throws(NspawnError) -> ImageSource {
        let fields = try mapping(node, key: key, allowed: ["clone", "recipe", "url", "checksum", "file", "oci", "stream"])
        let kinds = ["clone", "recipe", "url", "file", "oci", "stream"].filter { fields[$0] != nil }
        guard kinds.count == 1, let kind = kinds.first, let value = fields[kind] else {
            throw error(node, key, "give exactly one of clone, recipe, url, file, oci or stream")
        }
        if fields["checksum"] != nil && kind != "url" { throw error(node, "\(key).checksum", "a checksum goes with url only") }
        let text = try string(value, key: "\(key).\(kind)")
        switch kind {
        case "clone":
            do { return .clone(try MachineName(text)) } catch { throw self.error(value, "\(key).clone", "\(error)") }
        case "recipe":
            guard Self.isProfileName(text) else { throw error(value, "\(key).recipe", "invalid recipe name '\(text.escapedForMessage)'") }
            return .recipe(text)
        case "url":
            guard text.hasPrefix("https://") || text.hasPrefix("http://") || text.hasPrefix("file://") else {
                throw error(value, "\(key).url", "'\(text.escapedForMessage)' is not an http, https or file URL")
            }
            var checksum: String?
            if let node = fields["checksum"] {
                let sum = try string(node, key: "\(key).checksum")
                let hex = sum.hasPrefix("sha256:") ? String(sum.dropFirst(7)) : sum
                guard hex.count == 64, hex.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
                    throw error(node, "\(key).checksum", "expected sha256:HEX with 64 lowercase hex digits")
                }
                checksum = hex
            }
            return .url(text, checksum: checksum)
        case "stream":
            do throws(NspawnError) { _ = try StreamReference(parsing: text) } catch {
                throw self.error(value, "\(key).stream", error.description)
            }
            return .stream(text)
        case "oci":
            guard case .oci(let source) = NspawnKit.ImageSource(text), source.path?.hasPrefix("/") ?? true else {
                throw error(value, "\(key).oci", "'\(text.escapedForMessage)' is not an OCI image: docker://REFERENCE, oci:/DIR[:REF], oci-archive:/FILE[:REF] or docker-archive:/FILE")
            }
            if case .registry = source {
                do throws(NspawnError) { _ = try source.registryReference() } catch {
                    throw self.error(value, "\(key).oci", error.description)
                }
            }
            return .oci(text)
        default:
            guard text.hasPrefix("/") else { throw error(value, "\(key).file", "'\(text.escapedForMessage)' is not an absolute path on the host") }
            return .file(text)
        }
    }

    /// `restart: on-failure`, or `restart: {policy: on-failure, delay: 5s, max: 3/10min}`.
    private func restartPolicy(_ node: Node, key: String) throws(NspawnError) -> RestartPolicy {
        if node.string != nil {
            let text = try string(node, key: key)
            do { return RestartPolicy(mode: try RestartPolicy.mode(parsing: text)) } catch { throw self.error(node, key, "\(error)") }
        }
        let fields = try mapping(node, key: key, allowed: ["policy", "delay", "max"])
        guard let policyNode = fields["policy"] else { throw error(node, key, "'policy' is missing (no, on-failure or always)") }
        var policy: RestartPolicy
        do { policy = RestartPolicy(mode: try RestartPolicy.mode(parsing: try string(policyNode, key: "\(key).policy"))) } catch { throw self.error(policyNode, "\(key).policy", "\(error)") }
        if let delayNode = fields["delay"] {
            let text = try string(delayNode, key: "\(key).delay")
            do { policy.delaySeconds = try RestartPolicy.delay(parsing: text) } catch { throw self.error(delayNode, "\(key).delay", "\(error)") }
        }
        if let maxNode = fields["max"] {
            let text = try string(maxNode, key: "\(key).max")
            do { policy.startLimit = try RestartPolicy.StartLimit(parsing: text) } catch { throw self.error(maxNode, "\(key).max", "\(error)") }
        }
        return policy
    }

    /// `health: none`, or `health: {cmd: "curl -f localhost || exit 1", interval: 30s, timeout: 10s,
    /// retries: 3, start_period: 0s, restart_on_unhealthy: true}`; `cmd` as a list runs as it is.
    private func healthSetting(_ node: Node, key: String) throws(NspawnError) -> HealthSetting {
        if node.string != nil {
            guard try string(node, key: key) == "none" else { throw error(node, key, "expected none, or a mapping with cmd") }
            return .none
        }
        let fields = try mapping(node, key: key, allowed: ["cmd", "interval", "timeout", "retries", "start_period", "restart_on_unhealthy"])
        guard let commandNode = fields["cmd"] else {
            throw error(node, key, "'cmd' is missing: a shell command line, or a list of words run as they are")
        }
        var check = HealthCheck(command: commandNode.string != nil ? HealthCheck.shellCommand(try string(commandNode, key: "\(key).cmd"))
                                                                   : try argv(commandNode, key: "\(key).cmd"))
        for (field, what) in [("interval", "interval"), ("timeout", "timeout"), ("start_period", "start period")] {
            guard let spanNode = fields[field] else { continue }
            let seconds: Double
            do { seconds = try HealthCheck.span(parsing: try string(spanNode, key: "\(key).\(field)"), what: what) } catch { throw self.error(spanNode, "\(key).\(field)", "\(error)") }
            switch field {
            case "interval": check.intervalSeconds = seconds
            case "timeout": check.timeoutSeconds = seconds
            default: check.startPeriodSeconds = seconds
            }
        }
        if let retriesNode = fields["retries"] {
            guard let retries = Int(try string(retriesNode, key: "\(key).retries")) else { throw error(retriesNode, "\(key).retries", "expected a whole number from 1 to 100") }
            check.retries = retries
        }
        if let restartNode = fields["restart_on_unhealthy"] { check.restartOnUnhealthy = try bool(restartNode, key: "\(key).restart_on_unhealthy") }
        do { try check.validate() } catch { throw self.error(node, key, "\(error)") }
        return .check(check)
    }

    /// `snapshots: none`, or `snapshots: {every: 1h, keep: 24, keep_daily: 7, keep_weekly: 4}`.
    private func snapshotsSetting(_ node: Node, key: String) throws(NspawnError) -> SnapshotsSetting {
        if node.string != nil {
            guard try string(node, key: key) == "none" else { throw error(node, key, "expected none, or a mapping with every") }
            return .none
        }
        let fields = try mapping(node, key: key, allowed: ["every", "keep", "keep_daily", "keep_weekly"])
        guard let everyNode = fields["every"] else { throw error(node, key, "'every' is missing: a time span such as 1h") }
        var schedule: SnapshotSchedule
        do {
            schedule = SnapshotSchedule(everySeconds: try SnapshotSchedule.span(parsing: try string(everyNode, key: "\(key).every"), what: "interval"))
        } catch {
            throw self.error(everyNode, "\(key).every", "\(error)")
        }
        for field in ["keep", "keep_daily", "keep_weekly"] {
            guard let countNode = fields[field] else { continue }
            guard let count = Int(try string(countNode, key: "\(key).\(field)")) else {
                throw error(countNode, "\(key).\(field)", "expected a whole number from 1 to 10000")
            }
            switch field {
            case "keep": schedule.keep = count
            case "keep_daily": schedule.keepDaily = count
            default: schedule.keepWeekly = count
            }
        }
        do { try schedule.validate(machine: nil) } catch { throw self.error(node, key, "\(error)") }
        return .schedule(schedule)
    }

    private func layer(_ node: Node, key: String, allowed: [String]) throws(NspawnError) -> ManifestLayer {
        let fields = try mapping(node, key: key, allowed: allowed)
        var layer = ManifestLayer()
        for (keyNode, _) in fields.entries {
            if let name = keyNode.string, Self.layerKeys.contains(name) { layer.positions[name] = position(keyNode, "\(key).\(name)") }
        }
        if let node = fields["flavor"] {
            let flavor = try string(node, key: "\(key).flavor")
            do { _ = try Flavor.load(flavor, searchDirectories: flavorDirectories) } catch { throw self.error(node, "\(key).flavor", "\(error)") }
            layer.flavor = flavor
        }
        if let node = fields["settings"] {
            for (settingNode, value) in try mapping(node, key: "\(key).settings").entries {
                let name = try string(settingNode, key: "\(key).settings")
                let settingKey: SettingKey
                do { settingKey = try SettingKey(named: name) } catch { throw self.error(settingNode, "\(key).settings.\(name)", "\(error)") }
                guard !layer.settings.contains(where: { $0.key == settingKey }) else {
                    throw self.error(settingNode, "\(key).settings.\(name)", "\(settingKey.id) is given twice")
                }
                let values = try settingValues(settingKey, value, key: "\(key).settings.\(name)")
                layer.settings.append(ManifestLayer.Setting(key: settingKey, values: values))
                layer.positions["settings.\(settingKey.id)"] = position(settingNode, "\(key).settings.\(name)")
            }
        }
        if let node = fields["enabled"] { layer.enabled = try bool(node, key: "\(key).enabled") }
        if let node = fields["state"] {
            let text = try string(node, key: "\(key).state")
            guard let state = DesiredState(rawValue: text) else { throw error(node, "\(key).state", "expected running, stopped or absent, not '\(text.escapedForMessage)'") }
            layer.state = state
        }
        if let node = fields["files"] {
            for item in try sequence(node, key: "\(key).files") {
                let file = try managedFile(item, key: "\(key).files")
                guard !layer.files.contains(where: { $0.path == file.path }) else { throw error(item, "\(key).files", "'\(file.path)' is listed twice") }
                layer.files.append(file)
                layer.positions["file:\(file.path)"] = position(item, "\(key).files")
            }
        }
        if let node = fields["run"] {
            for item in try sequence(node, key: "\(key).run") { layer.run.append(try managedCommand(item, key: "\(key).run")) }
        }
        if let node = fields["packages"] {
            for item in try sequence(node, key: "\(key).packages") {
                let package = try string(item, key: "\(key).packages")
                guard let first = package.unicodeScalars.first, first.properties.isAlphabetic || ("0"..."9").contains(first),
                      package.count <= 128,
                      package.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "+-._:@".unicodeScalars.contains($0)) })
                else { throw error(item, "\(key).packages", "invalid package name '\(package.escapedForMessage)'") }
                if !layer.packages.contains(package) { layer.packages.append(package) }
            }
        }
        if let node = fields["expose"] { layer.expose = try exposure(node, key: "\(key).expose") }
        if let node = fields["restart"] { layer.restart = try restartPolicy(node, key: "\(key).restart") }
        if let node = fields["health"] { layer.health = try healthSetting(node, key: "\(key).health") }
        if let node = fields["snapshots"] { layer.snapshots = try snapshotsSetting(node, key: "\(key).snapshots") }
        if let node = fields["wait"] {
            let wait = try mapping(node, key: "\(key).wait", allowed: ["command", "timeout"])
            guard let command = wait["command"] else { throw error(node, "\(key).wait", "'command' is missing") }
            var timeout = 30.0
            if let node = wait["timeout"] {
                let text = try string(node, key: "\(key).wait.timeout")
                guard let seconds = Double(text), seconds > 0, seconds <= 3600 else { throw error(node, "\(key).wait.timeout", "expected seconds between 0 and 3600") }
                timeout = seconds
            }
            layer.wait = WaitCondition(command: try argv(command, key: "\(key).wait.command"), timeout: timeout)
        }
        return layer
    }

    private func settingValues(_ settingKey: SettingKey, _ node: Node, key: String) throws(NspawnError) -> [String] {
        var values: [String]
        if case .sequence = node {
            guard settingKey.isList || settingKey == .parameters else { throw error(node, key, "\(settingKey.id) takes one value, not a list") }
            values = []
            for item in try sequence(node, key: key) { values.append(try settingWord(item, key: key)) }
            if settingKey == .parameters { values = [try quote(values, node, key: key)] }
        } else {
            values = [try settingWord(node, key: key)]
        }
        if settingKey == .environment {
            var quoted: [String] = []
            for value in values { quoted.append(try quote([value], node, key: key)) }
            values = quoted
        }
        for value in values {
            do { try settingKey.validate(value) } catch { throw self.error(node, key, "\(error)") }
        }
        return values
    }

    private func quote(_ words: [String], _ node: Node, key: String) throws(NspawnError) -> String {
        do { return try quoteNspawnWords(words, what: key) } catch { throw self.error(node, key, "\(error)") }
    }

    /// YAML's `yes`/`true` become nspawn's `yes`, so `PrivateNetwork: true` reads as intended.
    private func settingWord(_ node: Node, key: String) throws(NspawnError) -> String {
        guard case .scalar(let scalar) = node else { throw error(node, key, "expected a value or a list of values") }
        if scalar.style == .plain, let value = Bool.construct(from: scalar) { return value ? "yes" : "no" }
        if Self.isNull(scalar) { throw error(node, key, "expected a value, not null") }
        return scalar.string
    }

    private func managedFile(_ node: Node, key: String) throws(NspawnError) -> ManagedFile {
        let fields = try mapping(node, key: key, allowed: ["path", "content", "mode", "owner", "group"])
        guard let pathNode = fields["path"] else { throw error(node, key, "'path' is missing") }
        let path = try string(pathNode, key: "\(key).path")
        guard path.hasPrefix("/"), path.count > 1, !path.hasSuffix("/"),
              !path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }), !path.contains("\0")
        else { throw error(pathNode, "\(key).path", "'\(path.escapedForMessage)' is not an absolute path to a file in the machine") }
        guard let contentNode = fields["content"] else { throw error(node, "\(key).content", "'content' is missing") }
        let content = try string(contentNode, key: "\(key).content", allowEmpty: true)
        guard content.utf8.count <= 1024 * 1024 else { throw error(contentNode, "\(key).content", "more than 1 MiB; copy large files with 'nspawnctl copy-to'") }
        var mode: UInt32 = 0o644
        if let modeNode = fields["mode"] {
            let text = try string(modeNode, key: "\(key).mode")
            guard (3...4).contains(text.count), let value = UInt32(text, radix: 8), value <= 0o7777 else {
                throw error(modeNode, "\(key).mode", "expected an octal mode such as \"0644\", not '\(text.escapedForMessage)'")
            }
            mode = value
        }
        let owner = try fields["owner"].map { (node) throws(NspawnError) in try accountName(node, key: "\(key).owner") } ?? "root"
        let group = try fields["group"].map { (node) throws(NspawnError) in try accountName(node, key: "\(key).group") }
        return ManagedFile(path: path, content: content, mode: mode, owner: owner, group: group)
    }

    private func accountName(_ node: Node, key: String) throws(NspawnError) -> String {
        let name = try string(node, key: key)
        guard name.count <= 32, name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }),
              name.first != "-"
        else { throw error(node, key, "invalid user or group '\(name.escapedForMessage)'") }
        return name
    }

    private func managedCommand(_ node: Node, key: String) throws(NspawnError) -> ManagedCommand {
        let fields = try mapping(node, key: key, allowed: ["command", "creates", "unless", "user"])
        guard let commandNode = fields["command"] else { throw error(node, key, "'command' is missing") }
        var command = ManagedCommand(command: try argv(commandNode, key: "\(key).command"))
        if let node = fields["creates"] {
            let path = try string(node, key: "\(key).creates")
            guard path.hasPrefix("/") else { throw error(node, "\(key).creates", "'\(path.escapedForMessage)' is not an absolute path in the machine") }
            command.creates = path
        }
        if let node = fields["unless"] { command.unless = try argv(node, key: "\(key).unless") }
        if let node = fields["user"] { command.user = try accountName(node, key: "\(key).user") }
        return command
    }

    private func exposure(_ node: Node, key: String) throws(NspawnError) -> ManagedExposure {
        var entry = node
        if case .sequence(let list) = node {
            guard list.count == 1, let only = list.first else {
                throw error(node, key, "one exposure per machine: list every address under one entry's 'listen'")
            }
            entry = only
        }
        let fields = try mapping(entry, key: key, allowed: ["listen", "exec", "unit"])
        guard let listenNode = fields["listen"] else { throw error(entry, key, "'listen' is missing") }
        var listen: [String] = []
        if case .sequence = listenNode {
            for item in try sequence(listenNode, key: "\(key).listen") { listen.append(try string(item, key: "\(key).listen")) }
        } else {
            listen = [try string(listenNode, key: "\(key).listen")]
        }
        var exposure = ManagedExposure(listen: listen)
        if let node = fields["exec"] { exposure.exec = try argv(node, key: "\(key).exec") }
        if let node = fields["unit"] { exposure.unit = try string(node, key: "\(key).unit") }
        do {
            // The same checks `expose` makes, with a placeholder name: only the values matter here.
            _ = try ListenCheck.validate(exposure)
        } catch { throw self.error(entry, key, "\(error)") }
        return exposure
    }

    private func argv(_ node: Node, key: String) throws(NspawnError) -> [String] {
        var words: [String] = []
        for item in try sequence(node, key: key) { words.append(try string(item, key: key)) }
        guard !words.isEmpty, !words[0].isEmpty else { throw error(node, key, "expected a command as a list of words, such as [/bin/sh, -c, \"...\"]") }
        return words
    }

    // MARK: Nodes

    private func mapping(_ node: Node, key: String, allowed: [String]? = nil) throws(NspawnError) -> Node.Mapping {
        guard case .mapping(let mapping) = node else { throw error(node, key, "expected a mapping of keys to values") }
        if let allowed {
            for keyNode in mapping.keys {
                guard let name = keyNode.string, allowed.contains(name) else {
                    let path = key == "(top level)" ? (keyNode.string ?? "?") : "\(key).\(keyNode.string ?? "?")"
                    throw error(keyNode, path, "unknown key; expected one of: \(allowed.joined(separator: ", "))")
                }
            }
        }
        return mapping
    }

    private func sequence(_ node: Node, key: String) throws(NspawnError) -> Node.Sequence {
        guard case .sequence(let sequence) = node else { throw error(node, key, "expected a list") }
        return sequence
    }

    private func string(_ node: Node, key: String, allowEmpty: Bool = false) throws(NspawnError) -> String {
        guard case .scalar(let scalar) = node, !Self.isNull(scalar) || allowEmpty && scalar.string.isEmpty else {
            throw error(node, key, "expected a single value")
        }
        guard allowEmpty || !scalar.string.isEmpty else { throw error(node, key, "expected a value, not an empty string") }
        guard !scalar.string.contains("\0") else { throw error(node, key, "contains a NUL byte") }
        return scalar.string
    }

    private func bool(_ node: Node, key: String) throws(NspawnError) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain, let value = Bool.construct(from: scalar) else {
            throw error(node, key, "expected true or false")
        }
        return value
    }

    /// A plain `~`, `null` or nothing at all.
    static func isNull(_ scalar: Node.Scalar) -> Bool {
        scalar.style == .plain && NSNull.construct(from: scalar) != nil
    }

    private func position(_ node: Node, _ key: String) -> ManifestPosition {
        ManifestPosition(file: file, line: node.mark?.line ?? 0, column: node.mark?.column ?? 0, key: key)
    }

    private func error(_ node: Node, _ key: String, _ message: String) -> NspawnError {
        .invalidArgument("\(position(node, key)): \(message)")
    }

    static func describe(_ error: YamlError, file: String) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return "\(file):\(mark.line):\(mark.column): not valid YAML: \(problem)"
        case .duplicatedKeysInMapping(let duplicates, let context):
            return "\(file):\(context.mark.line):\(context.mark.column): \(duplicates.first ?? "a key") is given twice"
        default:
            return "\(file): not valid YAML: \(error)"
        }
    }
}

extension Node.Mapping {
    var entries: [(Node, Node)] { map { ($0.key, $0.value) } }
}
