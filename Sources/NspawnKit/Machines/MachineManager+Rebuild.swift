import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What `rebuild` did.
public struct RebuildResult: Codable, Sendable, Equatable {
    public var name: String
    /// The image the new root was copied from.
    public var image: String
    /// How the copy was made: a btrfs snapshot, reflinks, or a full copy.
    public var method: SnapshotMethod
    /// Whether the machine ran before, and so was stopped and started again.
    public var restarted: Bool
    /// With `--pull`: whether the image's OCI reference named a new manifest, which was pulled first.
    public var pulled: Bool?
    /// With `--pull`: the manifest digest the image holds now.
    public var manifestDigest: String?

    public init(name: String, image: String, method: SnapshotMethod, restarted: Bool) {
        self.name = name
        self.image = image
        self.method = method
        self.restarted = restarted
    }
}

extension MachineManager {
    // MARK: Rebuild

    /// What `rebuild --pull` pulls again: the machine's image (`image`, else the one recorded at
    /// create) and the OCI reference that image was imported from.
    public func pullSource(_ name: MachineName, image: MachineName?) throws(NspawnError) -> (image: MachineName, origin: OCIOrigin) {
        let store = ImageStore.system
        let source: MachineName
        if let image {
            source = image
        } else {
            let recorded: MachineName?
            do throws(Errno) { recorded = try ImageOrigin.read(from: try Directory(path: "\(store.directory)/\(name)")) } catch {
                throw .system("cannot read the image recorded on '\(store.directory)/\(name)'", error)
            }
            guard let recorded else {
                throw .invalidArgument("machine '\(name)' has no recorded image (it was not made by 'nspawnctl create'); name one with --image")
            }
            source = recorded
        }
        guard let origin = OCIOrigin.read(imagePath: "\(store.directory)/\(source)") else {
            throw .invalidArgument("image '\(source)' of machine '\(name)' was not imported from an OCI image, so --pull has nothing to pull")
        }
        guard origin.reference.hasPrefix("docker://") || origin.reference.hasPrefix("oci:") else {
            throw .invalidArgument("image '\(source)' came from the archive '\(origin.reference.escapedForMessage)', which --pull cannot read again; import it with --force")
        }
        return (source, origin)
    }

    /// Nova's rebuild: replaces the machine's root with a fresh copy of `image` (default: the one
    /// recorded at `create`). Name, settings, flavor, exposure, enablement and machine-id stay.
    /// The new root is built beside the old one and swapped in with one atomic exchange, so a
    /// failure or a kill leaves the old root or the new one, never neither. A running machine
    /// is stopped first and started again afterwards.
    public func rebuild(_ name: MachineName, image: MachineName?, stopTimeout: Duration) async throws -> RebuildResult {
        let context = Hooks.Context(image: image?.rawValue, flavor: try? Self.flavorName(of: name))
        return try await hooked(.preRebuild, .postRebuild, name, context: context) {
            try await rebuildMachine(name, image: image, stopTimeout: stopTimeout)
        }
    }

    private func rebuildMachine(_ name: MachineName, image: MachineName?, stopTimeout: Duration) async throws -> RebuildResult {
        try await withBus { bus in
            let machined = Machined(bus: bus)
            let target = try Self.writableDirectoryImage(name, machined: machined)
            let store = ImageStore.system
            guard let targetPath = try Self.imageFilesystemPath(name, machined: machined),
                  targetPath == "\(store.directory)/\(name)" else {
                throw NspawnError.invalidArgument("cannot rebuild machine '\(name)': its root is not in \(store.directory)")
            }
            let recorded: MachineName?
            do throws(Errno) { recorded = try ImageOrigin.read(from: target) } catch {
                throw NspawnError.system("cannot read the image recorded on '\(targetPath)'", error)
            }
            guard let source = image ?? recorded else {
                throw NspawnError.invalidArgument("machine '\(name)' has no recorded image (it was not made by 'nspawnctl create'); name one with --image")
            }
            guard source != name else {
                throw NspawnError.invalidArgument("machine '\(name)' cannot be rebuilt from its own root")
            }
            guard let sourcePath = try Self.imageFilesystemPath(source, machined: machined) else {
                throw NspawnError.noSuchImage(source.rawValue)
            }
            let sourceRoot: Directory
            do throws(Errno) { sourceRoot = try Directory(path: sourcePath) } catch {
                throw NspawnError.system("cannot open image '\(source)' at '\(sourcePath)'", error)
            }

            let lock = try store.lockName(name)
            defer { withExtendedLifetime(lock) {} }
            let storeDirectory = try store.openDirectory()
            // What an earlier rebuild killed halfway left: the old or the unused new root.
            _ = try store.removeLeftovers(of: name, in: storeDirectory)

            let wasRunning = try machined.machinePathIfRunning(name) != nil
            if wasRunning { try self.stop(name, timeout: stopTimeout, bus: bus) }
            do {
                let method = try Self.replaceRoot(of: name, in: storeDirectory, store: store, from: sourceRoot,
                                                  sourcePath: sourcePath, old: target, image: source, machined: machined)
                if wasRunning { try SystemdManager(bus: bus).startUnit(name.serviceUnit) }
                return RebuildResult(name: name.rawValue, image: source.rawValue, method: method, restarted: wasRunning)
            } catch {
                // The old root is still in place: give it back its running state.
                if wasRunning { try? SystemdManager(bus: bus).startUnit(name.serviceUnit) }
                throw error
            }
        }
    }

    /// Copies `sourceRoot` beside the machine's root, carries over what belongs to the machine
    /// rather than the image, and swaps it in. Returns the copy method.
    static func replaceRoot(of name: MachineName, in storeDirectory: Directory, store: ImageStore, from sourceRoot: Directory,
                            sourcePath: String, old: Directory, image: MachineName, machined: Machined) throws -> SnapshotMethod {
        let temporary = ImageStore.temporaryName(ImageStore.rebuildPrefix, for: name)
        let temporaryPath = "\(store.directory)/\(temporary)"
        let (method, _) = try copyRoot(sourceRoot, label: sourcePath, to: temporary, in: storeDirectory, label: temporaryPath, readOnly: false)
        do {
            let fresh: Directory
            do throws(Errno) { fresh = try storeDirectory.openDirectory(temporary) } catch {
                throw NspawnError.system("cannot open the new root '\(temporaryPath)'", error)
            }
            try carryOver(from: old, to: fresh, name: name)
            do throws(Errno) { try ImageOrigin.record(image, on: fresh) } catch {
                throw NspawnError.system("cannot record image '\(image)' on '\(temporaryPath)'", error)
            }
            do throws(Errno) { try fresh.sync() } catch { throw NspawnError.system("cannot sync '\(temporaryPath)'", error) }
            try swapRoot(temporary, into: name.rawValue, of: name, in: storeDirectory, imagesPath: store.directory, machined: machined)
        } catch {
            try? SnapshotStore.removeTree(temporary, in: storeDirectory, label: temporaryPath)
            throw error
        }
        return method
    }

    /// The machine's identity and its exposure's guest side live in the root but belong to the
    /// machine: the host's address for it is derived from the machine-id.
    static func carryOver(from old: Directory, to fresh: Directory, name: MachineName) throws(NspawnError) {
        let oldGuest = ContainedRoot(root: old)
        let freshGuest = ContainedRoot(root: fresh)
        do throws(Errno) {
            if let machineID = try oldGuest.read("/etc/machine-id", limit: 4096), !machineID.isEmpty {
                try freshGuest.makeDirectories("/etc")
                try freshGuest.write("/etc/machine-id", machineID, mode: 0o444)
            }
        } catch {
            throw .system("cannot carry the machine-id of '\(name)' over to its new root", error)
        }
        let exposed = try ExposedFiles(of: name, guest: oldGuest)
        if let socket = exposed.guestSocket {
            try writeGuestSide(socket: socket, service: exposed.guestService, guest: freshGuest, name: name)
        }
    }
}

