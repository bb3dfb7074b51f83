import NspawnKit
import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Imports a root file system from a tarball into the image store.
///
/// The tarball is streamed: read (or downloaded), hashed, fed to gpgv, decompressed and written in
/// overlapping threads. Everything happens below a hidden `.#import.…` directory; only a final
/// rename (or an atomic exchange, with `force`) makes the image visible.
public struct ImageImporter: Sendable {
    public var store: ImageStore
    /// Whether a machine of that name runs; its image is never replaced.
    var machineIsRunning: @Sendable (MachineName) throws(NspawnError) -> Bool

    public init(store: ImageStore = .system) {
        self.store = store
        self.machineIsRunning = { name throws(NspawnError) in
            try Machined(bus: try connectSystemBus()).machinePathIfRunning(name) != nil
        }
    }

    /// For tests that use their own store and have no machined.
    public init(store: ImageStore, machineIsRunning: @escaping @Sendable (MachineName) throws(NspawnError) -> Bool) {
        self.store = store
        self.machineIsRunning = machineIsRunning
    }

    public func importImage(
        _ name: MachineName, from source: ImageSource, options: ImportOptions = ImportOptions(),
        cancellation: ImportCancellation = ImportCancellation(),
        progress: (@Sendable (ImportProgress) -> Void)? = nil
    ) async throws(NspawnError) -> ImportResult {
        let counters = cancellation.counters
        let start = ContinuousClock.now
        let ticker = progress.map { report in
            Task {
                while !Task.isCancelled {
                    report(Self.snapshot(counters, since: start))
                    try? await Task.sleep(for: .milliseconds(250))
                }
            }
        }
        defer { ticker?.cancel() }
        let importer = self
        var result = try await OSThread.run { () throws(NspawnError) -> ImportResult in
            try importer.runImportNamingCancel(name, from: source, options: options, counters: counters)
        }
        result.seconds = (ContinuousClock.now - start).seconds
        ticker?.cancel()
        progress?(Self.snapshot(counters, since: start))
        return result
    }

    static func snapshot(_ counters: ImportCounters, since start: ContinuousClock.Instant) -> ImportProgress {
        let elapsed = max((ContinuousClock.now - start).seconds, 0.001)
        let bytes = counters.sourceBytes.load(ordering: .relaxed)
        let size = counters.sourceSize.load(ordering: .relaxed)
        let rate = Double(bytes) / elapsed
        let eta: Double? = size > 0 && rate > 0 ? max(0, Double(size - bytes) / rate) : nil
        var progress = ImportProgress(
            phase: .init(code: counters.phase.load(ordering: .relaxed)), bytes: bytes,
            totalBytes: size >= 0 ? size : nil, entries: counters.entries.load(ordering: .relaxed),
            bytesPerSecond: rate, etaSeconds: eta, elapsedSeconds: elapsed)
        let layers = counters.layers.load(ordering: .relaxed)
        if layers > 0 {
            progress.layer = counters.layer.load(ordering: .relaxed)
            progress.layers = layers
        }
        return progress
    }

    /// Whichever stage noticed a cancel, the error says so the same way.
    func runImportNamingCancel(_ name: MachineName, from source: ImageSource, options: ImportOptions,
                               counters: ImportCounters) throws(NspawnError) -> ImportResult {
        do {
            return try runImport(name, from: source, options: options, counters: counters)
        } catch {
            throw error.category == .cancelled ? .importCancelled(name.rawValue) : error
        }
    }

    /// The blocking import, on its own thread.
    func runImport(_ name: MachineName, from requested: ImageSource, options requestedOptions: ImportOptions,
                   counters: ImportCounters) throws(NspawnError) -> ImportResult {
        // An image server's image is its newest root tarball, checked against the sha256 its catalog gives.
        var source = requested
        var options = requestedOptions
        var stream: ImageServerCatalog.Choice?
        if case .stream(let path) = requested {
            guard options.checksum == nil, options.signature == nil else {
                throw .invalidArgument("--checksum and --signature do not apply to \(requested): its tarball is checked against the sha256 the image server's catalog gives")
            }
            let choice = try ImageServerClient(remote: options.remote).resolve(try StreamReference(parsing: path))
            source = .url(choice.url)
            options.checksum = "sha256:\(choice.sha256)"
            stream = choice
        }
        let expectedDigest = try options.expectedDigest()
        let signature = try SignatureCheck.prepare(signature: options.signature, keyring: options.keyring)

        let storeDirectory = try store.openDirectory()
        let nameLock = try store.lockName(name)
        defer { withExtendedLifetime(nameLock) {} }
        let leftovers = try store.removeLeftovers(of: name, in: storeDirectory)

        let existing = try store.existingImage(name, in: storeDirectory)
        if let existing {
            guard options.force else { throw .alreadyExists(name.rawValue) }
            guard existing == "\(store.directory)/\(name)",
                  let st = try? storeDirectory.status(name.rawValue), (st.st_mode & S_IFMT) == S_IFDIR
            else {
                throw .busy(name.rawValue, reason: "'\(existing)' is not a directory image in \(store.directory), so --force cannot replace it")
            }
            if try machineIsRunning(name) {
                throw .busy(name.rawValue, reason: "the machine is running; stop it before replacing its image")
            }
        }

        let oci: OCISource? = if case .oci(let oci) = source { oci } else { nil }
        if oci != nil, options.checksum != nil || options.signature != nil || !options.setup.isEmpty {
            throw .invalidArgument("--checksum and --signature do not apply to OCI images: every blob is checked against the digest its manifest names")
        }
        // A re-import of the same OCI reference is only done when its digest moved.
        if let oci, existing != nil,
           let recorded = OCIOrigin.read(imagePath: "\(store.directory)/\(name)"), recorded.reference == oci.description,
           let current = try OCIImporter(source: oci, counters: counters, store: storeDirectory, scratchName: "",
                                         storeLabel: store.directory).currentManifestDigest(),
           current == recorded.manifestDigest {
            var result = ImportResult(
                name: name.rawValue, path: "\(store.directory)/\(name)", source: source.description, sourceBytes: 0, entries: 0,
                compression: [], sha256: String(current.dropFirst("sha256:".count)), verified: ["digests"],
                strippedDirectory: nil, replaced: false, removedLeftovers: leftovers, seconds: 0)
            result.unchanged = true
            return result
        }
        // Opened before anything is created, so a missing file leaves nothing behind.
        let input = oci == nil ? try SourceInput.open(source, counters: counters) : nil
        defer { input?.abandon() }

        let temporary = ImageStore.temporaryName(ImageStore.importPrefix, for: name)
        do {
            try storeDirectory.makeDirectory(temporary, mode: 0o755)
        } catch {
            throw .system("cannot create '\(store.directory)/\(temporary)'", error)
        }
        // After a plain rename the name is gone and this does nothing; otherwise it takes the
        // wrapper directory, a failed attempt, or the image --force swapped out.
        defer { try? storeDirectory.removeTree(temporary) }
        let work: Directory
        do throws(Errno) {
            work = try storeDirectory.openDirectory(temporary)
            // The umask may have narrowed mkdir's mode; the image's root is world-readable.
            try work.setMode(0o755)
        } catch {
            throw .system("cannot set up '\(store.directory)/\(temporary)'", error)
        }

        let summary: ExtractionPipeline.Summary
        let sha256: String
        var verified: [String] = []
        var image: OCIImageInfo?
        if let oci {
            counters.phase.store(ImportProgress.Phase.extract.code, ordering: .relaxed)
            let scratch = ImageStore.temporaryName(ImageStore.importPrefix, for: name)
            image = try OCIImporter(source: oci, counters: counters, store: storeDirectory, scratchName: scratch,
                                    storeLabel: store.directory).populate(work)
            if let image {
                // A file system without user xattrs only costs status the image's origin.
                try? OCIOrigin(reference: image.reference, manifestDigest: image.manifestDigest, platform: image.platform).record(on: work)
            }
            summary = .init(compression: [], entries: counters.entries.load(ordering: .relaxed))
            sha256 = image?.manifestDigest.map { String($0.dropFirst("sha256:".count)) } ?? ""
            verified = ["digests"]
        } else if let input {
            let verifier = try signature?.start()
            defer { verifier?.abandon() }
            let tap = SourceTap(fd: input.fd, source: source.description, counters: counters)
            tap.verifierInput = verifier?.input
            counters.phase.store(input.isDownload ? ImportProgress.Phase.download.code : ImportProgress.Phase.extract.code,
                                 ordering: .relaxed)

            do {
                summary = try ExtractionPipeline.run(tap: tap, into: work, source: source.description)
            } catch {
                // A failed download explains a truncated archive better than the archive error does.
                try input.finish()
                throw error
            }
            try input.finish()

            counters.phase.store(ImportProgress.Phase.verify.code, ordering: .relaxed)
            let digest = Array(tap.hasher.finalize())
            sha256 = encodeHex(digest)
            if let expectedDigest {
                guard digest == expectedDigest else {
                    throw .verificationFailed("checksum mismatch for '\(source.description.escapedForMessage)': expected sha256:\(encodeHex(expectedDigest)), got sha256:\(encodeHex(digest))")
                }
                verified.append("sha256")
            }
            if let verifier {
                try verifier.finish(source: source.description)
                verified.append("signature")
            }
        } else {
            throw .failed("import of '\(name)': no input")
        }

        // An nspawnctl machine archive: every part checked before anything is installed.
        var machineArchive: MachineArchive.Extracted?
        if oci == nil, MachineArchive.isArchive(work) {
            guard options.setup.isEmpty else { throw .invalidArgument("setup steps do not apply to a machine archive: it restores a machine as it was") }
            counters.phase.store(ImportProgress.Phase.verify.code, ordering: .relaxed)
            machineArchive = try MachineArchive.verify(work, workPath: "\(store.directory)/\(temporary)", source: source.description)
            verified.append("parts")
        }

        // Strip one wrapping directory (Arch's root.x86_64/); an OCI image's layers make the root itself.
        var rootPath = machineArchive == nil ? temporary : "\(temporary)/\(MachineArchive.rootDirectory)"
        var stripped: String?
        if oci == nil, machineArchive == nil, let entries = try? work.entries(), entries.count == 1, let only = entries.first,
           !ExtractionPipeline.rootDirectoryNames.contains(only),
           let st = try? work.status(only), (st.st_mode & S_IFMT) == S_IFDIR {
            stripped = only
            rootPath = "\(temporary)/\(only)"
        }

        if !options.setup.isEmpty {
            counters.phase.store(ImportProgress.Phase.postSteps.code, ordering: .relaxed)
            let root: Directory
            do { root = try storeDirectory.openDirectory(rootPath) } catch {
                throw .system("cannot open the new root '\(store.directory)/\(rootPath)'", error)
            }
            try SetupRunner(name: name, root: root, rootPath: "\(store.directory)/\(rootPath)", counters: counters)
                .run(options.setup)
        }
        if counters.isCancelled { throw .cancelled("import of '\(name)' cancelled") }

        counters.phase.store(ImportProgress.Phase.install.code, ordering: .relaxed)
        if existing != nil {
            // systemd-nspawn holds this lock while it runs an image; holding it keeps the swap safe.
            let lockName = ImageStore.imageLockName(name)
            let imageLock: FileLock?
            do { imageLock = try storeDirectory.tryLock(lockName) } catch {
                throw .system("cannot lock image '\(store.directory)/\(name)'", error)
            }
            guard let imageLock else {
                throw .busy(name.rawValue, reason: "the image is in use by systemd-nspawn")
            }
            // Unlinked while still held, as systemd does with its own image locks.
            defer { withExtendedLifetime(imageLock) { try? storeDirectory.removeFile(lockName) } }
            if try machineIsRunning(name) {
                throw .busy(name.rawValue, reason: "the machine is running; stop it before replacing its image")
            }
            do { try storeDirectory.exchange(rootPath, with: name.rawValue) } catch {
                throw .system("cannot replace '\(store.directory)/\(name)'", error)
            }
            // The old image now sits below the temporary directory, which the deferred cleanup removes.
        } else {
            do { try storeDirectory.renameNoReplace(rootPath, to: name.rawValue) } catch .fileExists {
                throw .alreadyExists(name.rawValue)
            } catch {
                throw .system("cannot move the new image into '\(store.directory)/\(name)'", error)
            }
        }

        var imported: ImportedMachine?
        if let machineArchive {
            imported = try installMachineParts(machineArchive, name: name, work: work, temporary: temporary, replaced: existing != nil,
                                               storeDirectory: storeDirectory)
        }

        if var info = image {
            do {
                try info.writeSettings(for: name, replace: existing != nil)
            } catch {
                throw .failed("image '\(name)' is imported, but the settings from its config are not: \(error.description)")
            }
            image = info
        }

        var result = ImportResult(
            name: name.rawValue, path: "\(store.directory)/\(name)", source: requested.description,
            sourceBytes: counters.sourceBytes.load(ordering: .relaxed), entries: summary.entries,
            compression: summary.compression, sha256: sha256, verified: verified,
            strippedDirectory: stripped, replaced: existing != nil, removedLeftovers: leftovers, seconds: 0)
        result.image = image
        result.stream = stream
        result.machine = imported
        return result
    }

    /// The snapshots and host-side state of a machine archive, once its root is in place. A
    /// failure takes the new machine away again (its root back below the temporary directory),
    /// so nothing is left half-restored.
    private func installMachineParts(_ archive: MachineArchive.Extracted, name: MachineName, work: Directory, temporary: String,
                                     replaced: Bool, storeDirectory: Directory) throws(NspawnError) -> ImportedMachine {
        let index = archive.index
        let snapshots = SnapshotStore(machine: name, imagesDirectory: store.directory)
        do {
            // --force replaces the machine whole: the old one's snapshots go with it.
            if replaced { try snapshots.removeAll() }
            if !index.snapshots.isEmpty {
                let directory: Directory
                do throws(Errno) { directory = try work.openDirectory(MachineArchive.snapshotsDirectory) } catch {
                    throw NspawnError.system("cannot open '\(store.directory)/\(temporary)/\(MachineArchive.snapshotsDirectory)'", error)
                }
                try MachineManager.adoptSnapshots(index.snapshots, from: directory,
                                                  directoryPath: "\(store.directory)/\(temporary)/\(MachineArchive.snapshotsDirectory)",
                                                  for: name, imagesDirectory: store.directory)
            }
            try MachineManager.installHostState(index.hostState, for: name)
        } catch {
            try? MachineManager.installHostState(MachineHostState(enabled: false), for: name)
            try? snapshots.removeAll()
            try? storeDirectory.rename(name.rawValue, to: "\(temporary)/\(MachineArchive.rootDirectory)")
            throw error as? NspawnError ?? .failed("machine '\(name)': \(error)")
        }
        return ImportedMachine(archivedName: index.name, sourceHost: index.host, exported: index.created,
                               hostState: index.hostState.parts, snapshots: index.snapshots.map(\.name))
    }
}

/// The raw input of an import as a descriptor: a file, stdin, or a socket fed by a download thread.
final class SourceInput {
    let fd: FileDescriptor
    let isDownload: Bool
    private var download: OSThread?
    private var downloadError: NspawnError?
    private var finished = false
    private let ownsDescriptor: Bool

    private init(fd: FileDescriptor, isDownload: Bool, ownsDescriptor: Bool) {
        self.fd = fd
        self.isDownload = isDownload
        self.ownsDescriptor = ownsDescriptor
    }

    static func open(_ source: ImageSource, counters: ImportCounters) throws(NspawnError) -> SourceInput {
        switch source {
        case .oci(let oci):
            // Read blob by blob by OCIImporter, never as one stream.
            throw .failed("'\(oci)' is an OCI image, not a tarball")
        case .stream(let path):
            throw .failed("'\(StreamReference.prefix)\(path)' is resolved to its tarball's URL first")
        case .standardInput:
            return SourceInput(fd: .standardInput, isDownload: false, ownsDescriptor: false)
        case .file(let path):
            let fd: FileDescriptor
            do { fd = try FileDescriptor.opening { Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) } } catch {
                throw .unusableInput("cannot read '\(path.escapedForMessage)'", error)
            }
            var st = stat()
            if fstat(fd.rawValue, &st) == 0 {
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    try? fd.close()
                    throw .invalidArgument("cannot read '\(path.escapedForMessage)': it is a directory")
                }
                if (st.st_mode & S_IFMT) == S_IFREG { counters.sourceSize.store(Int64(st.st_size), ordering: .relaxed) }
            }
            return SourceInput(fd: fd, isDownload: false, ownsDescriptor: true)
        case .url(let url):
            let (reader, writer) = try makeStreamPair()
            let input = SourceInput(fd: reader, isDownload: true, ownsDescriptor: true)
            let sink = HTTPDownload.Sink(
                write: { (try? writer.sendAll($0)) != nil }, cancelled: { counters.isCancelled },
                sizeKnown: { counters.sourceSize.store($0, ordering: .relaxed) })
            let box = UncheckedSendable(input)
            input.download = OSThread {
                defer { try? writer.close() }
                do throws(NspawnError) {
                    _ = try HTTPDownload.perform(url, into: sink)
                } catch {
                    box.value.downloadError = error
                }
            }
            return input
        }
    }

    /// Closes our end and waits for the download; throws the download's own failure if it had one.
    func finish() throws(NspawnError) {
        if !finished {
            finished = true
            if ownsDescriptor { try? fd.close() }
            download?.join()
        }
        if let downloadError { throw downloadError }
    }

    /// `finish()` for cleanup paths, where an earlier error is already on its way.
    func abandon() {
        try? finish()
    }
}
