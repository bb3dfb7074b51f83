/// A stream address the host listens on for a machine: `PORT`, `IPV4:PORT` or `[IPV6]:PORT`.
///
/// The same text goes into the host's and the guest's socket unit: the guest's systemd adopts
/// a passed socket only when a unit lists exactly the same address.
public struct ListenAddress: Sendable, Hashable, Codable, CustomStringConvertible {
    public let host: String?
    public let port: UInt16

    public init(parsing text: String) throws(NspawnError) {
        let invalid = NspawnError.invalidArgument(
            "invalid listen address '\(text.escapedForMessage)': expected PORT, IPV4:PORT or [IPV6]:PORT")
        var hostPart: String?
        var portPart = Substring(text)
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { throw invalid }
            let address = String(text[text.index(after: text.startIndex)..<close])
            guard isIPv6(address) else { throw invalid }
            hostPart = address
            portPart = text[text.index(close, offsetBy: 2)...]
        } else if let colon = text.lastIndex(of: ":") {
            let address = String(text[..<colon])
            guard isIPv4(address) else { throw invalid }
            hostPart = address
            portPart = text[text.index(after: colon)...]
        }
        guard portPart.allSatisfy(\.isASCII), let port = UInt16(portPart), port > 0 else {
            throw .invalidArgument("invalid listen address '\(text.escapedForMessage)': '\(String(portPart).escapedForMessage)' is not a port between 1 and 65535")
        }
        host = hostPart
        self.port = port
    }

    /// As written into ListenStream=.
    public var description: String {
        guard let host else { return String(port) }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

private func isIPv4(_ text: String) -> Bool {
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { part in
        !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && UInt8(part) != nil
            && !(part.count > 1 && part.hasPrefix("0"))
    }
}

private func isIPv6(_ text: String) -> Bool {
    guard text.contains(":"), text.count <= 39 else { return false }
    let hex = text.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isASCIIHexDigit || $0 == ":") }
    return hex && text.ranges(of: "::").count <= 1 && text.split(separator: ":").count <= 8
}

/// What answers a connection inside the guest.
public enum ExposeHandler: Sendable, Equatable, Codable {
    /// A command run once per connection (Accept=yes), with the connection on stdin and stdout.
    case exec([String])
    /// An existing guest service that takes the listening sockets itself (Accept=no).
    case unit(String)

    public func validate() throws(NspawnError) {
        switch self {
        case .exec(let command):
            _ = try quoteExecStart(command)
            guard let program = command.first, program.hasPrefix("/") else {
                throw .invalidArgument("the command to run must start with an absolute path, not '\((command.first ?? "").escapedForMessage)'")
            }
        case .unit(let unit):
            let ok = unit.hasSuffix(".service") && unit.count <= 255 && !unit.hasPrefix("nspawnctl-expose")
                && unit.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ":-_.\\@".unicodeScalars.contains($0)) }
            guard ok, unit.count > ".service".count else {
                throw .invalidArgument("invalid unit '\(unit.escapedForMessage)': expected a service name such as web.service")
            }
        }
    }
}

/// The two sides of an exposed machine, as files.
public struct SocketActivation: Sendable, Equatable {
    public var machine: MachineName
    public var addresses: [ListenAddress]
    public var handler: ExposeHandler

    static let guestDirectory = "/etc/systemd/system"
    static let guestSocket = "nspawnctl-expose.socket"
    static let guestService = "nspawnctl-expose@.service"

    public init(machine: MachineName, addresses: [ListenAddress], handler: ExposeHandler) throws(NspawnError) {
        guard !addresses.isEmpty else { throw .invalidArgument("give at least one --listen address") }
        if let duplicate = Dictionary(grouping: addresses, by: \.port).first(where: { $0.value.count > 1 }) {
            throw .invalidArgument("port \(duplicate.key) is given more than once")
        }
        try handler.validate()
        self.machine = machine
        self.addresses = addresses
        self.handler = handler
    }

    static let guestSocketPath = "\(guestDirectory)/\(guestSocket)"
    static let guestServicePath = "\(guestDirectory)/\(guestService)"
    static let guestWantsDirectory = "\(guestDirectory)/sockets.target.wants"
    static let guestWantsLink = "\(guestWantsDirectory)/\(guestSocket)"

    func hostSocketText() -> String { Self.hostSocketText(machine: machine, addresses: addresses) }

    /// The host's socket unit: only addresses, so it can be written from nothing else.
    static func hostSocketText(machine: MachineName, addresses: [ListenAddress]) -> String {
        """
        # Written by 'nspawnctl expose'; removed by 'nspawnctl unexpose'.
        [Unit]
        Description=Sockets of container \(machine.rawValue) (started on the first connection)
        Documentation=man:systemd-nspawn(1)

        [Socket]
        \(addresses.map { "ListenStream=\($0)" }.joined(separator: "\n"))

        [Install]
        WantedBy=sockets.target

        """
    }

    func guestSocketText() -> String {
        var socket = addresses.map { "ListenStream=\($0)" }
        switch handler {
        case .exec: socket.append("Accept=yes")
        case .unit(let unit): socket.append("Service=\(unit)")
        }
        return """
        # Written by 'nspawnctl expose' on the host; removed by 'nspawnctl unexpose'.
        # The addresses must match the host's \(machine.socketUnit) exactly.
        [Unit]
        Description=Sockets passed in by the host

        [Socket]
        \(socket.joined(separator: "\n"))

        [Install]
        WantedBy=sockets.target

        """
    }

    /// The per-connection service for `.exec`, or nil for `.unit`. stderr goes to the connection
    /// too (systemd's default, as with inetd): StandardError=journal cost 8–11 ms per connection
    /// in scripts/bench, doubling the warm reply time.
    func guestServiceText() throws(NspawnError) -> String? {
        guard case .exec(let command) = handler else { return nil }
        let execStart = try quoteExecStart(command)
        return """
        # Written by 'nspawnctl expose' on the host; removed by 'nspawnctl unexpose'.
        [Unit]
        Description=Connection handler for the host's sockets

        [Service]
        ExecStart=\(execStart)
        StandardInput=socket
        StandardOutput=socket

        """
    }

    /// Addresses listed by a host socket unit file.
    static func addresses(inHostUnit text: String) -> [String] {
        UnitFileDocument(parsing: text).values("Socket", "ListenStream")
    }
}
