/// A validated machine or image name.
///
/// Follows machined's rules as the project documents them: 1–64 characters of
/// `[A-Za-z0-9._-]`, no leading dot, no `..`. Validation happens before any bus
/// call is made or any path is built from the name.
public struct MachineName: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public static let maximumLength = 64

    public init(_ rawValue: String) throws(NspawnError) {
        if let reason = Self.problem(with: rawValue) {
            throw NspawnError.invalidName(rawValue, reason: reason)
        }
        self.rawValue = rawValue
    }

    /// For names machined itself reported, which need no second opinion.
    init(unchecked rawValue: String) {
        self.rawValue = rawValue
    }

    /// Why `candidate` is not a valid name, or nil when it is.
    public static func problem(with candidate: String) -> String? {
        if candidate.isEmpty { return "name is empty" }
        let scalars = candidate.unicodeScalars
        if scalars.count > maximumLength { return "longer than \(maximumLength) characters" }
        for scalar in scalars where !isAllowed(scalar) {
            return "character '\(String(scalar).escapedForMessage)' is not allowed (use A-Z a-z 0-9 . _ -)"
        }
        if candidate.hasPrefix(".") { return "must not begin with a dot" }
        if candidate.contains("..") { return "must not contain '..'" }
        return nil
    }

    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": true
        default: false
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        do {
            try self.init(raw)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    public static func < (lhs: MachineName, rhs: MachineName) -> Bool { lhs.rawValue < rhs.rawValue }
}
