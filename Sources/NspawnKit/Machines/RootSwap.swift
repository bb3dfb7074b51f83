import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension MachineManager {
    /// Makes `temporary`, a finished root beside the machine's (an entry of `images`), the
    /// machine's root in one atomic exchange, then removes the old root, which the exchange left
    /// under the temporary name. systemd-nspawn holds the image lock while it runs the image, so
    /// holding it keeps a start out between the check and the swap. A failure before the
    /// exchange leaves the old root in place; an old root that cannot be removed afterwards stays
    /// as a leftover of the name (`ImageStore.removeLeftovers`) for the next operation on it.
    /// The flavor's disk limit is put back on the new root.
    package static func swapRoot(_ temporary: String, into rootName: String, of name: MachineName, in images: Directory,
                         imagesPath: String, machined: Machined) throws(NspawnError) {
        let lockName = ImageStore.imageLockName(name)
        let imageLock: FileLock?
        do throws(Errno) { imageLock = try images.tryLock(lockName) } catch {
            throw .system("cannot lock image '\(imagesPath)/\(rootName)'", error)
        }
        guard let imageLock else { throw .busy(name.rawValue, reason: "its image is in use by systemd-nspawn") }
        defer { withExtendedLifetime(imageLock) { try? images.removeFile(lockName) } }
        if try machined.machinePathIfRunning(name) != nil {
            throw .busy(name.rawValue, reason: "it is running; stop it first")
        }
        do throws(Errno) { try images.exchange(temporary, with: rootName) } catch {
            throw .system("cannot swap the new root into '\(imagesPath)/\(rootName)'", error)
        }
        try? images.sync()
        try? SnapshotStore.removeTree(temporary, in: images, label: "\(imagesPath)/\(temporary)")
        // A new root is a new subvolume or tree, outside the old one's quota.
        try reapplyDiskLimit(of: name, bus: machined.bus)
    }
}
