import NspawnAPI
#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of a connection, from the kernel (SO_PEERCRED), never from the request.
public struct Peer: Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    public var description: String { "pid \(pid) uid \(uid)" }
}

/// Maps a peer to a role: uid 0 is admin, members of `group` are operators, everyone else none.
public struct Authorizer: Sendable {
    public var group: String

    public init(group: String = "nspawn") {
        self.group = group
    }

    public func role(of peer: Peer) -> Role {
        if peer.uid == 0 { return .admin }
        return isMember(uid: peer.uid, primaryGID: peer.gid) ? .operator : .none
    }

    /// Membership as the group database says, asked at each connection so a change applies
    /// to the next one: the peer's primary group, or the group's member list naming the user.
    func isMember(uid: UInt32, primaryGID: UInt32) -> Bool {
        var groupEntry = group_()
        var groupResult: UnsafeMutablePointer<group_>?
        var groupBuffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getgrnam_r(group, &groupEntry, &groupBuffer, groupBuffer.count, &groupResult) == 0, groupResult != nil else {
            return false
        }
        if groupEntry.gr_gid == primaryGID { return true }
        var passwdEntry = passwd()
        var passwdResult: UnsafeMutablePointer<passwd>?
        var passwdBuffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getpwuid_r(uid, &passwdEntry, &passwdBuffer, passwdBuffer.count, &passwdResult) == 0, passwdResult != nil,
              let userName = passwdEntry.pw_name.map({ String(cString: $0) }) else { return false }
        if passwdEntry.pw_gid == groupEntry.gr_gid { return true }
        var member = groupEntry.gr_mem
        while let pointer = member?.pointee {
            if String(cString: pointer) == userName { return true }
            member = member?.advanced(by: 1)
        }
        return false
    }
}

typealias group_ = group
