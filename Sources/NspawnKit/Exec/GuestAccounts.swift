/// A user inside a machine, as the guest's own /etc/passwd and /etc/group describe it.
package struct GuestUser: Sendable, Equatable {
    /// Nil for a numeric uid the guest does not list.
    package var name: String?
    package var uid: UInt32
    package var gid: UInt32
    /// The primary group first, then the supplementary ones.
    package var groups: [UInt32]
    package var home: String
    package var shell: String

    /// The login shell to run, "/bin/sh" when the entry names none or a relative one.
    package var loginShell: String { shell.hasPrefix("/") ? shell : "/bin/sh" }
}

/// Parses the guest's account files. They are the guest's data, read with the host's
/// privileges: malformed lines are skipped, never trusted to mean something else.
package enum GuestAccounts {
    package struct PasswdEntry: Sendable, Equatable {
        package var name: String
        package var uid: UInt32
        package var gid: UInt32
        package var home: String
        package var shell: String
    }

    package struct GroupEntry: Sendable, Equatable {
        package var name: String
        package var gid: UInt32
        package var members: [String]
    }

    /// `name:password:uid:gid:gecos:home:shell` lines.
    package static func parsePasswd(_ text: String) -> [PasswdEntry] {
        records(text, fields: 7).compactMap { f in
            guard let uid = id(f[2]), let gid = id(f[3]) else { return nil }
            return PasswdEntry(name: f[0], uid: uid, gid: gid, home: f[5], shell: f[6])
        }
    }

    /// `name:password:gid:member,member` lines.
    package static func parseGroup(_ text: String) -> [GroupEntry] {
        records(text, fields: 4).compactMap { f in
            guard let gid = id(f[2]) else { return nil }
            let members = f[3].split(separator: ",").map { String($0).trimmedWhitespace }.filter { !$0.isEmpty }
            return GroupEntry(name: f[0], gid: gid, members: members)
        }
    }

    /// Lines with exactly `fields` colon-separated fields and a name; comments and NIS
    /// compat lines (`+`, `-`) are skipped.
    private static func records(_ text: String, fields: Int) -> [[String]] {
        text.split(separator: "\n", omittingEmptySubsequences: true).compactMap { line in
            guard let first = line.first, first != "#", first != "+", first != "-" else { return nil }
            let f = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard f.count == fields, !f[0].isEmpty else { return nil }
            return f
        }
    }

    /// A uid or gid: decimal, below 4294967295 (which means "no id").
    package static func id(_ text: String) -> UInt32? {
        guard !text.isEmpty, text.allSatisfy(\.isASCII), let value = UInt32(text), value != UInt32.max else { return nil }
        return value
    }

    /// Resolves `--user` (a name or a numeric uid; nil means root) against the guest's files.
    /// A name must exist; a uid the guest does not list runs with a group of the same number.
    package static func resolve(_ user: String?, passwd: [PasswdEntry], groups: [GroupEntry],
                                machine: String) throws(NspawnError) -> GuestUser {
        let wanted = user ?? "root"
        let entry: PasswdEntry
        if let found = passwd.first(where: { $0.name == wanted }) {
            entry = found
        } else if let uid = id(wanted) {
            guard let found = passwd.first(where: { $0.uid == uid }) else {
                return GuestUser(name: uid == 0 ? "root" : nil, uid: uid, gid: uid, groups: [uid],
                                 home: uid == 0 ? "/root" : "/", shell: "/bin/sh")
            }
            entry = found
        } else if wanted == "root" {
            // A payload without /etc/passwd (busybox) still has a root.
            return GuestUser(name: "root", uid: 0, gid: 0, groups: [0], home: "/root", shell: "/bin/sh")
        } else {
            throw .invalidArgument("no user '\(wanted.escapedForMessage)' in machine '\(machine)'")
        }
        var ids = [entry.gid]
        for group in groups where group.members.contains(entry.name) && !ids.contains(group.gid) {
            ids.append(group.gid)
        }
        return GuestUser(name: entry.name, uid: entry.uid, gid: entry.gid, groups: ids,
                         home: entry.home.isEmpty ? "/" : entry.home, shell: entry.shell)
    }
}
