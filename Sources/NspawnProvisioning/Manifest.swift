import NspawnKit

/// Where a value was written: the manifest file, line and column, and the key path.
public struct ManifestPosition: Sendable, Equatable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var key: String

    public var description: String { "\(file):\(line):\(column): \(key)" }
}

/// The machines of one host, as a manifest declares them, every value checked.
public struct Manifest: Sendable, Equatable {
    /// Recorded on the machines this manifest creates: what `--prune` may remove.
    public var name: String
    public var file: String
    public var defaults: ManifestLayer
    public var profiles: [String: ManifestLayer]
    /// In file order.
    public var machines: [ManifestMachine]
}

public enum DesiredState: String, Sendable, Codable, Equatable, CaseIterable {
    case running, stopped, absent
}

/// Where a machine's root comes from when `apply` creates it.
public enum ImageSource: Sendable, Equatable, CustomStringConvertible {
    case clone(MachineName)
    case recipe(String)
    case url(String, checksum: String?)
    case file(String)
    /// An OCI image, as `import` names it (docker://, oci:, oci-archive:, docker-archive:).
    case oci(String)
    /// An image server's image, DISTRIBUTION/RELEASE[/VARIANT] (without `images:`).
    case stream(String)

    public var description: String {
        switch self {
        case .clone(let image): "clone of \(image)"
        case .recipe(let recipe): "recipe \(recipe)"
        case .url(let url, _): "download of \(url)"
        case .file(let path): "import of \(path)"
        case .oci(let reference): "import of OCI image \(reference)"
        case .stream(let path): "import of \(StreamReference.prefix)\(path)"
        }
    }
}

public struct ManagedFile: Sendable, Equatable, Codable {
    public var path: String
    public var content: String
    public var mode: UInt32
    public var owner: String
    public var group: String?
}

public struct ManagedCommand: Sendable, Equatable, Codable {
    public var command: [String]
    /// Runs only while this guest path does not exist.
    public var creates: String?
    /// Runs only while this guest command fails.
    public var unless: [String]?
    public var user: String?

    /// Unguarded commands run once, when apply creates the machine.
    public var isGuarded: Bool { creates != nil || unless != nil }
}

public struct ManagedExposure: Sendable, Equatable, Codable {
    public var listen: [String]
    public var exec: [String]?
    public var unit: String?
}

public struct WaitCondition: Sendable, Equatable, Codable {
    public var command: [String]
    public var timeout: Double
}

/// One layer of values: the defaults, a profile, or a machine's own.
public struct ManifestLayer: Sendable, Equatable {
    public struct Setting: Sendable, Equatable {
        public var key: SettingKey
        public var values: [String]
    }

    public var flavor: String?
    public var settings: [Setting] = []
    public var enabled: Bool?
    public var state: DesiredState?
    public var files: [ManagedFile] = []
    public var run: [ManagedCommand] = []
    public var packages: [String] = []
    public var expose: ManagedExposure?
    public var wait: WaitCondition?
    /// The whole restart policy: a layer that gives one replaces the policy of the layers before.
    public var restart: RestartPolicy?
    /// The whole health check, or `none`; as the restart policy, the last layer's.
    public var health: HealthSetting?
    /// The whole snapshot schedule, or `none`; the last layer's.
    public var snapshots: SnapshotsSetting?
    /// Where each key of this layer was written, for `--explain` and for errors found later.
    public var positions: [String: ManifestPosition] = [:]

    public init() {}
}

public struct ManifestMachine: Sendable, Equatable {
    public var name: MachineName
    public var image: ImageSource?
    public var profiles: [String]
    public var layer: ManifestLayer
    public var position: ManifestPosition
}

extension ImportJob {
    /// The import a manifest's image needs; nil for a clone, which machined makes.
    public init?(_ source: ImageSource) {
        switch source {
        case .clone: return nil
        case .recipe(let recipe): self = .recipe(recipe, mirror: nil, tarball: nil, checksum: nil, signature: nil, keyring: nil, verify: true, force: false)
        case .url(let url, let checksum) where url.hasPrefix("file://"):
            // The helper downloads http(s) only; a file URL is the file on this host.
            self = .file(String(url.dropFirst("file://".count)), checksum: checksum.map { "sha256:\($0)" }, signature: nil, keyring: nil, force: false)
        case .url(let url, let checksum): self = .url(url, checksum: checksum.map { "sha256:\($0)" }, signature: nil, keyring: nil, force: false)
        case .file(let path), .oci(let path): self = .file(path, checksum: nil, signature: nil, keyring: nil, force: false)
        case .stream(let path): self = .stream(StreamReference.prefix + path, remote: nil, force: false)
        }
    }
}

extension ImagesHelper {
    /// A manifest's images other than clones, each imported by the helper as a child (from
    /// nspawnd, and from the helper's own apply).
    public var manifestImages: ImageProvider {
        { source, name in
            guard let job = ImportJob(source) else { return }
            if case .failure(let error) = await importImage(job, name: name, cancel: ChildCancel(), progress: { _ in }) {
                throw NspawnError.remote(error.category, message: "machine '\(name)': the \(source) failed: \(error.description)", busError: nil)
            }
        }
    }
}

/// A manifest's `health:`: no check at all, or this one.
public enum HealthSetting: Sendable, Equatable {
    case none
    case check(HealthCheck)

    public var check: HealthCheck? {
        if case .check(let check) = self { return check }
        return nil
    }

    public var text: String { check?.text ?? "none" }
}

/// A manifest's `snapshots:`: no schedule, or this one.
public enum SnapshotsSetting: Sendable, Equatable {
    case none
    case schedule(SnapshotSchedule)

    public var schedule: SnapshotSchedule? {
        if case .schedule(let schedule) = self { return schedule }
        return nil
    }

    public var text: String { schedule?.text ?? "none" }
}
