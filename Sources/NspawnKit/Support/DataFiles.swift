/// Data files looked up by name in a list of directories, first match wins: local overrides in
/// /etc, then the installed ones. Recipes and flavors are found this way.
struct DataFiles {
    let directories: [String]
    /// The file name ending, such as ".recipe".
    let suffix: String
    /// Larger files are refused rather than cut.
    let limit: Int

    /// The first `NAME<suffix>` found, with its path; nil when no directory has one.
    func find(_ name: String) throws(NspawnError) -> (path: String, text: String)? {
        for directory in directories {
            let path = "\(directory)/\(name)\(suffix)"
            if let text = try AtomicFile.read(path, limit: limit) { return (path, text) }
        }
        return nil
    }

    /// The names of all files found, without hidden ones, sorted. Unreadable directories are skipped.
    func names() -> [String] {
        var names = Set<String>()
        for directory in directories {
            guard let dir = try? Directory(path: directory), let entries = try? dir.entries() else { continue }
            for entry in entries where entry.hasSuffix(suffix) && !entry.hasPrefix(".") {
                names.insert(entry.replacingSuffix(suffix))
            }
        }
        return names.sorted()
    }
}
