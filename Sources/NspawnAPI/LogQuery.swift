import NspawnKit

/// `GET /v1/machines/{name}/logs?lines=&since=&until=&priority=&boot=&follow=`: a LogRequest
/// as a query string, percent-encoded both ways (times hold spaces and colons).
extension LogRequest {
    public var query: String? {
        var pairs: [(String, String)] = []
        if let lines { pairs.append(("lines", String(lines))) }
        if let since { pairs.append(("since", since)) }
        if let until { pairs.append(("until", until)) }
        if let priority { pairs.append(("priority", priority)) }
        if let boot { pairs.append(("boot", String(boot))) }
        if let follow { pairs.append(("follow", String(follow))) }
        return pairs.isEmpty ? nil : pairs.map { "\($0.0)=\(QueryText.encode($0.1))" }.joined(separator: "&")
    }

    /// Each parameter at most once; anything else is refused with what was expected.
    public init(query: String?) throws(NspawnError) {
        self.init()
        var seen = Set<String>()
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            guard let value = QueryText.decode(parts.count == 2 ? parts[1] : "") else {
                throw .invalidArgument("invalid query parameter '\(String(pair.prefix(80)).escapedForMessage)': bad percent-encoding")
            }
            guard seen.insert(key).inserted else { throw .invalidArgument("query parameter '\(key.escapedForMessage)' given twice") }
            switch key {
            case "lines":
                guard let number = Int(value) else { throw .invalidArgument("lines must be a whole number, not '\(value.escapedForMessage)'") }
                lines = number
            case "since": since = value
            case "until": until = value
            case "priority": priority = value
            case "boot": boot = try Self.flag(key, value)
            case "follow": follow = try Self.flag(key, value)
            default:
                throw .invalidArgument("unknown query parameter '\(String(key.prefix(80)).escapedForMessage)': expected lines, since, until, priority, boot or follow")
            }
        }
    }

    private static func flag(_ key: String, _ value: String) throws(NspawnError) -> Bool {
        switch value {
        case "true", "1": true
        case "false", "0": false
        default: throw .invalidArgument("\(key) must be true or false, not '\(value.escapedForMessage)'")
        }
    }
}

/// Percent-encoding of query values (RFC 3986 unreserved characters stay as they are).
enum QueryText {
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80 && (c.isLetter || c.isNumber || "-._~".contains(c)) {
                out.append(c)
            } else {
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// Nil for a broken escape or bytes that are not UTF-8; `+` is a space, as forms send it.
    static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let first = utf8.index(after: index)
                guard first < utf8.endIndex, utf8.index(after: first) < utf8.endIndex,
                      let value = UInt8(String(decoding: utf8[first...utf8.index(after: first)], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(value)
                index = utf8.index(first, offsetBy: 2)
            } else {
                bytes.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
                index = utf8.index(after: index)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
