import FoundationEssentials

/// How a snapshot (or a restore) copied the machine's root.
public enum SnapshotMethod: String, Sendable, Codable, Equatable {
    /// A btrfs subvolume snapshot: instant, sharing every extent.
    case btrfs
    /// A tree copy whose files all share their extents with the source (FICLONE).
    case reflink
    /// A tree copy of every byte.
    case copy
}

/// One read-only point-in-time copy of a machine's root.
public struct SnapshotInfo: Sendable, Codable, Equatable {
    public var name: String
    public var created: Date?
    public var method: SnapshotMethod
    /// Bytes of file data copied; nil for a btrfs snapshot, which copies none.
    public var size: UInt64?
    public var path: String
    /// When the snapshot schedule's timer removes it; nil: never by expiry.
    public var expires: Date?
    /// Taken by the machine's snapshot schedule, whose retention may remove it.
    public var scheduled: Bool

    public init(name: String, created: Date?, method: SnapshotMethod, size: UInt64?, path: String,
                expires: Date? = nil, scheduled: Bool = false) {
        self.name = name
        self.created = created
        self.method = method
        self.size = size
        self.path = path
        self.expires = expires
        self.scheduled = scheduled
    }

    /// 1 to 64 characters of `[A-Za-z0-9._+@:-]`, not beginning with a dot: a file name that
    /// cannot climb out of the snapshot directory or hide as a temporary.
    public static func check(_ name: String) throws(NspawnError) {
        let problem: String? =
            if name.isEmpty { "name is empty" }
            else if name.unicodeScalars.count > 64 { "longer than 64 characters" }
            else if name.hasPrefix(".") { "must not begin with a dot" }
            else if let bad = name.unicodeScalars.first(where: { !isAllowed($0) }) {
                "character '\(String(bad).escapedForMessage)' is not allowed (use A-Z a-z 0-9 . _ - + @ :)"
            } else { nil }
        if let problem { throw .invalidArgument("invalid snapshot name '\(name.escapedForMessage)': \(problem)") }
    }

    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-", "+", "@", ":": true
        default: false
        }
    }
}

/// What `snapshot` and `restore` did.
public struct SnapshotResult: Sendable, Codable, Equatable {
    /// The machine.
    public var name: String
    public var snapshot: SnapshotInfo
    /// How this operation copied: for `snapshot` the snapshot's method, for `restore` how the
    /// snapshot was copied back into a new root.
    public var method: SnapshotMethod
    public var seconds: Double

    public init(name: String, snapshot: SnapshotInfo, method: SnapshotMethod, seconds: Double) {
        self.name = name
        self.snapshot = snapshot
        self.method = method
        self.seconds = seconds
    }
}
