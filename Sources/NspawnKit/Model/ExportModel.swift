import FoundationEssentials

/// How `export` compresses its archive.
public enum ArchiveCompression: String, Sendable, Codable, CaseIterable {
    case zstd, gzip, xz, none

    /// By the file name's suffix, as machinectl export-tar picks; zstd for `-` and other names.
    public init(forName name: String) {
        if name.hasSuffix(".gz") || name.hasSuffix(".tgz") { self = .gzip }
        else if name.hasSuffix(".xz") || name.hasSuffix(".txz") { self = .xz }
        else if name.hasSuffix(".tar") { self = .none }
        else { self = .zstd }
    }
}

/// One part of a machine archive: the root, or a snapshot.
public struct ExportPart: Sendable, Codable, Equatable {
    /// `rootfs` or `snapshot:NAME`.
    public var name: String
    public var files: Int
    /// Bytes of file data (each hard-linked file once).
    public var bytes: UInt64
    /// The part's tree digest (see the README's archive format).
    public var sha256: String

    public init(name: String, files: Int, bytes: UInt64, sha256: String) {
        self.name = name
        self.files = files
        self.bytes = bytes
        self.sha256 = sha256
    }
}

/// What `export` wrote.
public struct ExportResult: Sendable, Codable, Equatable {
    public var name: String
    /// The archive's file, or `-`.
    public var file: String
    public var format: Int
    public var compression: String
    /// The archive's size; nil when written to a pipe.
    public var archiveBytes: UInt64?
    /// The root was read from a snapshot taken because the machine was running.
    public var fromSnapshot: Bool
    /// The host-side parts carried: settings, flavor, exposure, enablement…
    public var hostState: [String]
    public var snapshots: [String]
    public var parts: [ExportPart]
    public var seconds: Double

    public init(name: String, file: String, format: Int, compression: String, archiveBytes: UInt64?, fromSnapshot: Bool,
                hostState: [String], snapshots: [String], parts: [ExportPart], seconds: Double) {
        self.name = name
        self.file = file
        self.format = format
        self.compression = compression
        self.archiveBytes = archiveBytes
        self.fromSnapshot = fromSnapshot
        self.hostState = hostState
        self.snapshots = snapshots
        self.parts = parts
        self.seconds = seconds
    }
}

/// What an import of a machine archive restored besides the root.
public struct ImportedMachine: Sendable, Codable, Equatable {
    /// The name the machine had where it was exported.
    public var archivedName: String
    public var sourceHost: String
    public var exported: Date
    public var hostState: [String]
    public var snapshots: [String]

    public init(archivedName: String, sourceHost: String, exported: Date, hostState: [String], snapshots: [String]) {
        self.archivedName = archivedName
        self.sourceHost = sourceHost
        self.exported = exported
        self.hostState = hostState
        self.snapshots = snapshots
    }
}

/// What `copy-machine --refresh` did, as the receiving host reports it.
public struct RefreshResult: Codable, Sendable, Equatable {
    public var files: Int
    /// Regular files whose data came over the stream.
    public var sent: Int
    public var sentBytes: Int64
    /// Regular files taken from the copy that was there.
    public var kept: Int
    public var seconds: Double

    public init(files: Int, sent: Int, sentBytes: Int64, kept: Int, seconds: Double) {
        self.files = files
        self.sent = sent
        self.sentBytes = sentBytes
        self.kept = kept
        self.seconds = seconds
    }
}

/// The sending side's account of a refresh: the receiver's result and the stream's bytes.
public struct RefreshReport: Codable, Sendable, Equatable {
    public var result: RefreshResult
    public var fromSnapshot: Bool
    /// Everything written to the stream: the list of files and the data.
    public var streamBytesSent: Int64
    public var streamBytesReceived: Int64

    public init(result: RefreshResult, fromSnapshot: Bool, streamBytesSent: Int64, streamBytesReceived: Int64) {
        self.result = result
        self.fromSnapshot = fromSnapshot
        self.streamBytesSent = streamBytesSent
        self.streamBytesReceived = streamBytesReceived
    }
}
