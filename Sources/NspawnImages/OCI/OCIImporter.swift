import Crypto
import FoundationEssentials
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Builds a root from an OCI image on this host: an image layout, or an archive of one (or a
/// `docker save` archive), unpacked first into a scratch directory of the store. Every document
/// and layer is checked against its digest; layers go on in order with the spec's whiteouts,
/// under the same hostile-archive rules as any import.
struct OCIImporter {
    let source: OCISource
    let counters: ImportCounters
    /// The store and a scratch name in it for an archive's contents, removed afterwards.
    let store: Directory
    let scratchName: String
    let storeLabel: String

    /// Documents (index, manifest, config) are small; a bigger one is not what it claims.
    static let documentLimit = 4 << 20

    func populate(_ work: Directory) throws(NspawnError) -> OCIImageInfo {
        switch source {
        case .registry:
            return try populateFromRegistry(work)
        case .layout(let path, let reference):
            let layout: Directory
            do throws(Errno) { layout = try Directory(path: path) } catch {
                throw .unusableInput("cannot open OCI image layout '\(path.escapedForMessage)'", error)
            }
            return try populate(work, layout: layout, label: source.description, reference: reference)
        case .archive(let path, let reference):
            return try withUnpackedArchive(path) { (layout) throws(NspawnError) in
                try populate(work, layout: layout, label: source.description, reference: reference)
            }
        case .dockerArchive(let path):
            return try withUnpackedArchive(path) { (unpacked) throws(NspawnError) in
                // Docker 25 and later save an image layout inside; older ones only manifest.json.
                if (try? unpacked.status("index.json")) ?? nil != nil {
                    return try populate(work, layout: unpacked, label: source.description, reference: nil)
                }
                return try populateDockerArchive(work, unpacked: unpacked)
            }
        }
    }

    // MARK: - Image layouts

    /// The manifest digest the source names now, when that is cheap to learn (an image layout);
    /// nil for archives, which would have to be unpacked first.
    func currentManifestDigest() throws(NspawnError) -> String? {
        if let reference = try source.registryReference() {
            return try resolve(registryClient(reference)).digest.description
        }
        guard case .layout(let path, let reference) = source else { return nil }
        let layout: Directory
        do throws(Errno) { layout = try Directory(path: path) } catch {
            throw .unusableInput("cannot open OCI image layout '\(path.escapedForMessage)'", error)
        }
        return try resolve(BlobReader(layout: layout, label: source.description), reference: reference).digest.description
    }

    private func resolve(_ blobs: BlobReader, reference: String?) throws(NspawnError) -> (digest: OCIDigest, manifest: OCIManifest) {
        guard let indexBytes = try blobs.readFile("index.json") else {
            throw .badArchive(source: blobs.label, entry: "index.json", reason: "missing: this is no OCI image layout")
        }
        let index: OCIIndex = try decode(indexBytes, what: "index.json", label: blobs.label)
        let chosen = try choose(in: index.manifests, reference: reference, label: blobs.label)
        return try followToManifest(try blobs.readDocument(chosen), mediaType: chosen.mediaType,
                                    digest: try OCIDigest(chosen.digest, source: blobs.label), label: blobs.label) { (entry) throws(NspawnError) in
            (try blobs.readDocument(entry), entry.mediaType)
        }
    }

    /// The image's manifest, its config, and where each layer comes from, whatever the source.
    func populate(_ work: Directory, layout: Directory, label: String, reference: String?) throws(NspawnError) -> OCIImageInfo {
        let blobs = BlobReader(layout: layout, label: label)
        let (manifestDigest, manifest) = try resolve(blobs, reference: reference)
        return try populate(work, manifest: manifest, digest: manifestDigest, config: try blobs.readDocument(manifest.config),
                            label: label) { (_, digest) throws(NspawnError) in try blobs.openBlob(digest) }
    }

    /// Applies a resolved manifest's layers, each file from `layerFile` (its number and digest), and maps its config.
    private func populate(_ work: Directory, manifest: OCIManifest, digest manifestDigest: OCIDigest, config configBytes: [UInt8],
                          label: String, layerFile: (Int, OCIDigest) throws(NspawnError) -> FileDescriptor) throws(NspawnError) -> OCIImageInfo {
        let config: OCIImageConfig = try decode(configBytes, what: "config \(manifest.config.digest)", label: label)
        var info = OCIImageInfo(reference: source.description, manifestDigest: manifestDigest.description,
                                platform: platformText(config), layers: manifest.layers.count)
        counters.sourceSize.store(manifest.layers.reduce(0) { $0 + $1.size }, ordering: .relaxed)
        let digests = try manifest.layers.map { (layer) throws(NspawnError) in try OCIDigest(layer.digest, source: label) }
        for (number, digest) in digests.enumerated() {
            let file = try layerFile(number, digest)
            defer { try? file.close() }
            try apply(file, digest: digest, number: number, count: digests.count, to: work, label: label)
        }
        try map(config, into: &info, root: work)
        return info
    }

    /// The manifest a tag or digest names in a registry, followed to this host's platform, each
    /// document checked against its digest.
    func resolve(_ client: RegistryClient) throws(NspawnError) -> (digest: OCIDigest, manifest: OCIManifest) {
        let label = client.label
        let (bytes, mediaType) = try client.manifest(client.reference.manifestReference)
        let digest = try OCIDigest("sha256:" + encodeHex(Array(SHA256.hash(data: bytes))), source: label)
        if let wanted = client.reference.digest, wanted != digest.description {
            throw .verificationFailed("digest mismatch in '\(label.escapedForMessage)': the registry's manifest is \(digest)")
        }
        return try followToManifest(bytes, mediaType: mediaType, digest: digest, label: label) { (entry) throws(NspawnError) in
            let chosen = try OCIDigest(entry.digest, source: label)
            let fetched = try client.manifest(chosen.description)
            let got = encodeHex(Array(SHA256.hash(data: fetched.bytes)))
            guard got == chosen.hex else {
                throw .verificationFailed("digest mismatch in '\(label.escapedForMessage)': manifest \(chosen) holds sha256:\(got)")
            }
            return fetched
        }
    }

    /// Follows indexes (at most four deep) to this host's platform and decodes the image
    /// manifest. `fetch` reads the document an index entry names, checked against its digest,
    /// with its media type; a document of no known type is told by its shape.
    private func followToManifest(_ first: [UInt8], mediaType firstType: String?, digest firstDigest: OCIDigest, label: String,
                                  fetch: (OCIDescriptor) throws(NspawnError) -> (bytes: [UInt8], mediaType: String?)) throws(NspawnError) -> (digest: OCIDigest, manifest: OCIManifest) {
        var (bytes, mediaType, digest) = (first, firstType, firstDigest)
        for depth in 0...4 {
            if mediaType == "application/vnd.docker.distribution.manifest.v1+prettyjws" || mediaType == "application/vnd.docker.distribution.manifest.v1+json" {
                throw .badArchive(source: label, entry: "manifest \(digest)", reason: "a Docker schema 1 manifest, which nspawnctl does not read; push the image again with a current tool")
            }
            let isIndex = mediaType.map(OCIMediaType.indexes.contains) ?? false
                || (!(mediaType.map(OCIMediaType.manifests.contains) ?? false) && Self.looksLikeIndex(bytes))
            guard isIndex else { return (digest, try decode(bytes, what: "manifest \(digest)", label: label)) }
            guard depth < 4 else { break }
            let index: OCIIndex = try decode(bytes, what: "index \(digest)", label: label)
            let entry = try Self.hostEntry(of: index, label: label)
            digest = try OCIDigest(entry.digest, source: label)
            (bytes, mediaType) = try fetch(entry)
        }
        throw .badArchive(source: label, entry: nil, reason: "indexes nested too deep")
    }

    private func registryClient(_ reference: RegistryReference) throws(NspawnError) -> RegistryClient {
        let counters = counters
        return try RegistryClient(reference, environment: ProcessInfo.processInfo.environment, cancelled: { counters.isCancelled })
    }

    private func populateFromRegistry(_ work: Directory) throws(NspawnError) -> OCIImageInfo {
        guard let reference = try source.registryReference() else { throw .failed("'\(source)' is no registry image") }
        let client = try registryClient(reference)
        let label = client.label
        let (manifestDigest, manifest) = try resolve(client)
        let configBytes = try client.documentBlob(manifest.config)
        let layers = try manifest.layers.map { (layer) throws(NspawnError) in (try OCIDigest(layer.digest, source: label), layer.size) }
        // Later layers download while earlier ones are applied.
        let prefetch = try LayerPrefetch(client: client, layers: layers, spoolDirectory: store, spoolLabel: storeLabel)
        defer { prefetch.stop() }
        return try populate(work, manifest: manifest, digest: manifestDigest, config: configBytes,
                            label: label) { (number, _) throws(NspawnError) in try prefetch.take(number) }
    }

    /// The layout's manifest for `reference` (its ref.name annotation), or its only one.
    private func choose(in manifests: [OCIDescriptor], reference: String?, label: String) throws(NspawnError) -> OCIDescriptor {
        if let reference {
            guard let match = manifests.first(where: { $0.referenceName == reference }) else {
                let names = manifests.compactMap(\.referenceName)
                throw .noSuchSourceImage("no image '\(reference.escapedForMessage)' in '\(label.escapedForMessage)'"
                                      + (names.isEmpty ? "" : "; it has: \(names.joined(separator: ", "))"))
            }
            return match
        }
        guard manifests.count == 1, let only = manifests.first else {
            let names = manifests.compactMap(\.referenceName)
            throw .noSuchSourceImage("'\(label.escapedForMessage)' holds \(manifests.count) images; name one (\(source.description):REF)"
                                  + (names.isEmpty ? "" : " of: \(names.joined(separator: ", "))"))
        }
        return only
    }

    static func hostEntry(of index: OCIIndex, label: String) throws(NspawnError) -> OCIDescriptor {
        let host = OCIPlatform.host
        guard let match = index.manifests.first(where: { host.matches($0.platform) }) else {
            let offered = index.manifests.compactMap { $0.platform?.text }
            throw .noSuchSourceImage("'\(label.escapedForMessage)' has no image for \(host.text)"
                                  + (offered.isEmpty ? "" : "; it has: \(offered.joined(separator: ", "))"))
        }
        return match
    }

    static func looksLikeIndex(_ bytes: [UInt8]) -> Bool {
        struct Probe: Decodable { var manifests: [OCIDescriptor]? }
        return (try? JSONDecoder().decode(Probe.self, from: Data(bytes)))?.manifests != nil
    }

    // MARK: - docker save archives without a layout

    private func populateDockerArchive(_ work: Directory, unpacked: Directory) throws(NspawnError) -> OCIImageInfo {
        let label = source.description
        let blobs = BlobReader(layout: unpacked, label: label)
        guard let listBytes = try blobs.readFile("manifest.json") else {
            throw .badArchive(source: label, entry: "manifest.json", reason: "missing: this is no docker save archive")
        }
        let images: [DockerArchiveImage] = try decode(listBytes, what: "manifest.json", label: label)
        guard images.count == 1, let image = images.first else {
            throw .noSuchSourceImage("'\(label.escapedForMessage)' holds \(images.count) images; nspawnctl imports archives of one")
        }
        guard let configBytes = try blobs.readFile(image.Config) else {
            throw .badArchive(source: label, entry: image.Config, reason: "the config manifest.json names is missing")
        }
        let config: OCIImageConfig = try decode(configBytes, what: image.Config, label: label)
        // A docker archive names layers by path; the config's diff_ids are their digests.
        let diffIDs = config.rootfs?.diff_ids ?? []
        guard diffIDs.count == image.Layers.count else {
            throw .badArchive(source: label, entry: "manifest.json", reason: "\(image.Layers.count) layers but \(diffIDs.count) diff_ids in the config")
        }
        var info = OCIImageInfo(reference: label, manifestDigest: nil, platform: platformText(config), layers: image.Layers.count)
        for (number, (path, diffID)) in zip(image.Layers, diffIDs).enumerated() {
            let digest = try OCIDigest(diffID, source: label)
            let file = try blobs.openFile(path)
            defer { try? file.close() }
            try apply(file, digest: digest, number: number, count: image.Layers.count, to: work, label: label)
        }
        try map(config, into: &info, root: work)
        return info
    }

    // MARK: - Layers

    private func apply(_ file: FileDescriptor, digest: OCIDigest, number: Int, count: Int, to work: Directory,
                       label: String) throws(NspawnError) {
        let layerLabel = "\(label) layer \(number + 1)/\(count)"
        counters.layers.store(count, ordering: .relaxed)
        counters.layer.store(number + 1, ordering: .relaxed)
        let tap = SourceTap(fd: file, source: layerLabel, counters: counters)
        do {
            _ = try ExtractionPipeline.run(tap: tap, into: work, source: layerLabel, layer: LayerState(overLowerLayers: number > 0))
        } catch {
            // A blob that is not what the manifest names says so, rather than how it fails to unpack.
            if error.category != .cancelled, let got = Self.digest(of: file), got != digest.hex {
                throw .verificationFailed("digest mismatch in \(layerLabel): expected \(digest), got sha256:\(got)")
            }
            throw error
        }
        let got = encodeHex(Array(tap.hasher.finalize()))
        guard got == digest.hex else {
            throw .verificationFailed("digest mismatch in \(layerLabel): expected \(digest), got sha256:\(got)")
        }
    }

    /// The whole file's sha256, read again from its start; nil when it cannot be read.
    private static func digest(of file: FileDescriptor) -> String? {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: Int64 = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress, $0.count, off_t(offset)) }
            if count < 0 { if errno == EINTR { continue }; return nil }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            offset += Int64(count)
        }
        return encodeHex(Array(hasher.finalize()))
    }

    // MARK: - Archives

    /// Unpacks an archive (or stdin) into the scratch directory for `body`, then removes it.
    private func withUnpackedArchive(_ path: String, _ body: (Directory) throws(NspawnError) -> OCIImageInfo) throws(NspawnError) -> OCIImageInfo {
        let input: FileDescriptor
        if path == "-" {
            input = FileDescriptor.standardInput
        } else {
            do throws(Errno) {
                input = try FileDescriptor.opening { open(path, O_RDONLY | O_CLOEXEC) }
            } catch {
                throw .unusableInput("cannot open '\(path.escapedForMessage)'", error)
            }
        }
        defer { if path != "-" { try? input.close() } }
        do throws(Errno) { try store.makeDirectory(scratchName, mode: 0o700) } catch {
            throw .system("cannot create '\(storeLabel)/\(scratchName)'", error)
        }
        defer { try? store.removeTree(scratchName) }
        let scratch: Directory
        do throws(Errno) { scratch = try store.openDirectory(scratchName) } catch {
            throw .system("cannot open '\(storeLabel)/\(scratchName)'", error)
        }
        let tap = SourceTap(fd: input, source: source.description, counters: counters)
        _ = try ExtractionPipeline.run(tap: tap, into: scratch, source: source.description)
        // Progress counts the layers next, not the archive twice.
        counters.sourceBytes.store(0, ordering: .relaxed)
        counters.entries.store(0, ordering: .relaxed)
        return try body(scratch)
    }

    // MARK: - Config

    private func platformText(_ config: OCIImageConfig) -> String {
        OCIPlatform(architecture: config.architecture ?? "unknown", os: config.os ?? "unknown", variant: config.variant).text
    }

    /// The config's run settings, with the user resolved in the new root.
    private func map(_ config: OCIImageConfig, into info: inout OCIImageInfo, root: Directory) throws(NspawnError) {
        // systemd-nspawn refuses a tree without /usr ("doesn't look like it has an OS tree"),
        // which images built FROM scratch often are.
        if (try? root.status("usr")) ?? nil == nil {
            do throws(Errno) { try root.makeDirectory("usr", mode: 0o755) } catch {
                throw .system("cannot add the empty /usr that systemd-nspawn needs", error)
            }
            info.unmapped.append("the image has no /usr; an empty one was added, as systemd-nspawn refuses a tree without it")
        }
        guard let run = config.config else { return }
        info.entrypoint = run.Entrypoint
        info.cmd = run.Cmd
        info.environment = run.Env ?? []
        if let directory = run.WorkingDir, !directory.isEmpty { info.workingDirectory = directory }
        if let signal = run.StopSignal, !signal.isEmpty {
            if let parsed = try? (Int32(signal).map { (number) throws(NspawnError) in try UnixSignal(number: number) } ?? UnixSignal(parsing: signal)) {
                info.stopSignal = parsed.name
            } else {
                info.unmapped.append("StopSignal \(signal.escapedForMessage): not a signal nspawn knows; set KillSignal= with 'nspawnctl config'")
            }
        }
        if let user = run.User, !user.isEmpty {
            let resolved = ImageUsers(root: root).resolve(user)
            info.user = resolved.name
            if let note = resolved.note { info.unmapped.append(note) }
        }
        if let ports = run.ExposedPorts, !ports.isEmpty {
            info.unmapped.append("ExposedPorts \(ports.keys.sorted().joined(separator: " ")): publish with 'nspawnctl config NAME --port' or socket-activate with 'nspawnctl expose'")
        }
        if let volumes = run.Volumes, !volumes.isEmpty {
            info.unmapped.append("Volumes \(volumes.keys.sorted().joined(separator: " ")): bind host directories with 'nspawnctl config NAME --bind'")
        }
        if let test = run.Healthcheck?.Test, !test.isEmpty {
            info.unmapped.append("Healthcheck \(test.joined(separator: " ")): not run by nspawnctl")
        }
    }

    private func decode<T: Decodable>(_ bytes: [UInt8], what: String, label: String) throws(NspawnError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw .badArchive(source: label, entry: what, reason: "not a valid document: \(error)")
        }
    }
}
