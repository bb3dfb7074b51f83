import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One OCI layer being applied over the ones below it: what it wrote so far (an opaque
/// whiteout clears only lower layers' entries), and the deletions the spec's whiteouts ask for.
/// Deletions reach their target through real directories only and never leave the root.
final class LayerState {
    /// Normalized paths this layer has written.
    var written = Set<String>()
    /// Whether lower layers are on disk (false for the first), so entries may replace them.
    let overLowerLayers: Bool

    init(overLowerLayers: Bool) {
        self.overLowerLayers = overLowerLayers
    }

    enum Whiteout: Equatable {
        /// `.wh.NAME`: NAME is deleted.
        case entry(directory: String, name: String)
        /// `.wh..wh..opq`: the directory's lower-layer contents are deleted.
        case opaque(directory: String)

        static let prefix = ".wh."
        static let opaqueMarker = ".wh..wh..opq"

        /// nil for a member that is no whiteout.
        init?(_ path: String) {
            let slash = path.lastIndex(of: "/")
            let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
            guard base.hasPrefix(Self.prefix) else { return nil }
            let directory = slash.map { String(path[..<$0]) } ?? ""
            if base == Self.opaqueMarker {
                self = .opaque(directory: directory)
            } else {
                self = .entry(directory: directory, name: String(base.dropFirst(Self.prefix.count)))
            }
        }
    }

    func apply(_ whiteout: Whiteout, in root: Directory, source: String, member: String) throws(NspawnError) {
        switch whiteout {
        case .entry(let directory, let name):
            guard !name.isEmpty, name != ".", name != "..", !name.hasPrefix(Whiteout.prefix) else {
                throw .badArchive(source: source, entry: member, reason: "whiteout of '\(name.escapedForMessage)' names no entry")
            }
            guard let parent = try open(directory, in: root, source: source, member: member) else { return }
            do throws(Errno) { try parent.removeTree(name) } catch {
                throw .system("cannot delete '\(join(directory, name).escapedForMessage)' for whiteout '\(member.escapedForMessage)' of '\(source.escapedForMessage)'", error)
            }
        case .opaque(let directory):
            guard let parent = try open(directory, in: root, source: source, member: member) else { return }
            do throws(Errno) {
                for child in try parent.entries() where !written.contains(join(directory, child)) {
                    try parent.removeTree(child)
                }
            } catch {
                throw .system("cannot empty '\(directory.escapedForMessage)' for opaque whiteout '\(member.escapedForMessage)' of '\(source.escapedForMessage)'", error)
            }
        }
    }

    /// Whether a lower layer's directory stands where this layer puts a non-directory.
    func replacesDirectory(at path: String, with type: mode_t, in root: Directory) -> Bool {
        guard overLowerLayers, type != S_IFDIR, !path.isEmpty, !written.contains(path) else { return false }
        var st = stat()
        return fstatat(root.descriptor.rawValue, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    func remove(_ path: String, in root: Directory, source: String, member: String) throws(NspawnError) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let parent = try open(directory, in: root, source: source, member: member) else { return }
        do throws(Errno) { try parent.removeTree(name) } catch {
            throw .system("cannot replace directory '\(path.escapedForMessage)' with member '\(member.escapedForMessage)' of '\(source.escapedForMessage)'", error)
        }
    }

    /// The directory a whiteout acts in; nil when it does not exist (nothing to delete).
    private func open(_ directory: String, in root: Directory, source: String, member: String) throws(NspawnError) -> Directory? {
        do throws(Errno) {
            return try root.openDirectoryBeneath(directory)
        } catch .noSuchFileOrDirectory {
            return nil
        } catch .tooManySymbolicLinkLevels, .improperLink, .notDirectory {
            throw .badArchive(source: source, entry: member, reason: "whiteout reaches '\(directory.escapedForMessage)' through a symlink")
        } catch {
            throw .system("cannot open '\(directory.escapedForMessage)' for whiteout '\(member.escapedForMessage)' of '\(source.escapedForMessage)'", error)
        }
    }

    private func join(_ directory: String, _ name: String) -> String {
        directory.isEmpty ? name : "\(directory)/\(name)"
    }
}
