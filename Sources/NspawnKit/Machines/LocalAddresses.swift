import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The addresses of a network namespace as machined's GetMachineAddresses reports them:
/// systemd 252 `local_addresses(NULL, 0, AF_UNSPEC)` run in the machine's namespace.
enum LocalAddresses {
    /// One RTM_NEWADDR message: its ifaddrmsg header and the attributes we read.
    struct Message: Equatable {
        var family: UInt8
        var flags: UInt8
        var scope: UInt8
        var ifindex: Int32
        var local: [UInt8]?
        var address: [UInt8]?
    }

    struct Address: Equatable {
        var family: Int32
        var scope: UInt8
        var ifindex: Int32
        var bytes: [UInt8]
    }

    /// What one datagram of a dump holds.
    struct Batch: Equatable {
        var messages: [Message] = []
        /// NLMSG_DONE was seen: the dump is complete.
        var done = false
    }

    enum ParseError: Error, Equatable {
        /// The kernel answered the request with an error (its errno).
        case kernel(Errno)
        case malformed
    }

    private static func align(_ n: Int) -> Int { (n + 3) & ~3 }

    private static func u16(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
        UInt16(b[b.startIndex + at]) | UInt16(b[b.startIndex + at + 1]) << 8
    }

    private static func u32(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[b.startIndex + at + $1]) << (8 * UInt32($1)) }
    }

    static let headerSize = 16  // struct nlmsghdr
    static let ifaddrmsgSize = 8  // struct ifaddrmsg

    /// The RTM_GETADDR dump request for every family, host byte order (little-endian here).
    static func dumpRequest(sequence: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        append(UInt32(headerSize + ifaddrmsgSize))
        append(nspawnctl_rtm_getaddr)
        append(nspawnctl_nlm_f_request | nspawnctl_nlm_f_dump)
        append(sequence)
        append(UInt32(0))
        bytes += [UInt8](repeating: 0, count: ifaddrmsgSize)  // AF_UNSPEC, every interface
        return bytes
    }

    /// Parses one datagram of netlink messages. Messages other than RTM_NEWADDR are skipped;
    /// an NLMSG_ERROR with a non-zero code is the kernel's refusal.
    static func parse(_ datagram: [UInt8]) throws(ParseError) -> Batch {
        var batch = Batch()
        var rest = datagram[...]
        while rest.count >= headerSize {
            let length = Int(u32(rest, 0))
            let type = u16(rest, 4)
            guard length >= headerSize, length <= rest.count else { throw .malformed }
            let body = rest[(rest.startIndex + headerSize)..<(rest.startIndex + length)]
            rest = rest.dropFirst(min(align(length), rest.count))
            switch type {
            case nspawnctl_nlmsg_done:
                batch.done = true
                return batch
            case nspawnctl_nlmsg_error:
                guard body.count >= 4 else { throw .malformed }
                let code = Int32(bitPattern: u32(body, 0))
                if code != 0 { throw .kernel(Errno(rawValue: -code)) }
            case nspawnctl_rtm_newaddr:
                guard body.count >= ifaddrmsgSize else { throw .malformed }
                var message = Message(family: body[body.startIndex], flags: body[body.startIndex + 2],
                                      scope: body[body.startIndex + 3], ifindex: Int32(bitPattern: u32(body, 4)))
                var attributes = body.dropFirst(ifaddrmsgSize)
                while attributes.count >= 4 {
                    let attributeLength = Int(u16(attributes, 0))
                    let attributeType = u16(attributes, 2) & 0x3FFF  // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
                    guard attributeLength >= 4, attributeLength <= attributes.count else { throw .malformed }
                    let payload = Array(attributes[(attributes.startIndex + 4)..<(attributes.startIndex + attributeLength)])
                    if attributeType == nspawnctl_ifa_local { message.local = payload }
                    if attributeType == nspawnctl_ifa_address { message.address = payload }
                    attributes = attributes.dropFirst(min(align(attributeLength), attributes.count))
                }
                batch.messages.append(message)
            default:
                continue
            }
        }
        return batch
    }

    /// local_addresses' choice and order: no deprecated address, none of host or nowhere scope,
    /// IFA_LOCAL before IFA_ADDRESS; IPv4 before IPv6, then by scope, interface and bytes; no duplicates.
    static func select(_ messages: [Message]) -> [Address] {
        var list: [Address] = []
        for message in messages {
            if message.flags & nspawnctl_ifa_f_deprecated != 0 { continue }
            if message.scope == nspawnctl_rt_scope_host || message.scope == nspawnctl_rt_scope_nowhere { continue }
            let size: Int
            switch Int32(message.family) {
            case AF_INET: size = 4
            case AF_INET6: size = 16
            default: continue
            }
            // sd_netlink_message_read_in_addr takes the first `size` bytes of an attribute at least that long.
            guard let attribute = [message.local, message.address].first(where: { ($0?.count ?? 0) >= size }) ?? nil
            else { continue }
            list.append(Address(family: Int32(message.family), scope: message.scope, ifindex: message.ifindex,
                                bytes: Array(attribute.prefix(size))))
        }
        list.sort { compare($0, $1) < 0 }
        var unique: [Address] = []
        for address in list where unique.last.map({ compare($0, address) != 0 }) ?? true { unique.append(address) }
        return unique
    }

    /// systemd's address_compare (the metric is 0 for addresses).
    static func compare(_ a: Address, _ b: Address) -> Int {
        if a.family == AF_INET && b.family == AF_INET6 { return -1 }
        if a.family == AF_INET6 && b.family == AF_INET { return 1 }
        if a.scope != b.scope { return a.scope < b.scope ? -1 : 1 }
        if a.ifindex != b.ifindex { return a.ifindex < b.ifindex ? -1 : 1 }
        for (x, y) in zip(a.bytes, b.bytes) where x != y { return x < y ? -1 : 1 }
        return 0
    }

    /// The addresses as the list shows them.
    static func formatted(_ addresses: [Address]) -> [String] {
        addresses.compactMap { IPAddressFormatter.format(family: $0.family, bytes: $0.bytes) }
    }
}

/// A NETLINK_ROUTE socket of one network namespace; closed when dropped.
final class RouteSocket {
    let descriptor: FileDescriptor

    init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    deinit { try? descriptor.close() }

    /// Creates one socket in each of `namespaces` (fds of /proc/PID/ns/net) on a short-lived
    /// thread of its own: setns changes the calling thread, which must never be a shared one.
    static func open(in namespaces: [FileDescriptor]) -> [Result<RouteSocket, Errno>] {
        guard !namespaces.isEmpty else { return [] }
        final class Outcome: @unchecked Sendable { var values: [Result<Int32, Errno>] = [] }
        let outcome = Outcome()
        let thread = OSThread {
            for namespace in namespaces {
                guard nspawnctl_setns(namespace.rawValue, nspawnctl_clone_newnet) == 0 else {
                    outcome.values.append(.failure(Errno.last))
                    continue
                }
                let fd = nspawnctl_netlink_route_socket()
                outcome.values.append(fd >= 0 ? .success(fd) : .failure(Errno.last))
            }
        }
        thread.join()
        return outcome.values.map { $0.map { RouteSocket(FileDescriptor(rawValue: $0)) } }
    }

    /// The namespace's addresses, as machined would list them.
    func addresses(timeout: Duration = .seconds(1)) throws(LocalAddresses.ParseError) -> [LocalAddresses.Address] {
        let fd = descriptor.rawValue
        var seconds = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        if setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size)) != 0 { throw .kernel(.last) }
        let request = LocalAddresses.dumpRequest(sequence: 1)
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        let sent = request.withUnsafeBytes { raw in
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                }
            }
        }
        guard sent == request.count else { throw .kernel(sent < 0 ? .last : .ioError) }
        var messages: [LocalAddresses.Message] = []
        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .kernel(.last)
            }
            if count == 0 { throw .malformed }
            let batch = try LocalAddresses.parse(Array(buffer[..<count]))
            messages += batch.messages
            if batch.done { return LocalAddresses.select(messages) }
        }
    }
}
