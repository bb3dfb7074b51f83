import SystemPackage

/// The image a machine was created from, kept on its root directory as an extended attribute,
/// so it travels with the root through renames and `getfattr` shows it.
package enum ImageOrigin {
    package static let attribute = "user.nspawnctl.image"

    package static func record(_ image: MachineName, on root: Directory) throws(Errno) {
        try ExtendedAttributes.descriptor(root.descriptor).set(attribute, Array(image.rawValue.utf8))
    }

    /// nil when none was recorded (a machine imported, or created before this was kept), the
    /// file system keeps no user attributes, or the value is not a valid name.
    package static func read(from root: Directory) throws(Errno) -> MachineName? {
        let value: [UInt8]?
        do { value = try ExtendedAttributes.descriptor(root.descriptor).value(attribute) } catch .notSupported { return nil }
        return value.flatMap { try? MachineName(String(decoding: $0, as: UTF8.self)) }
    }
}
