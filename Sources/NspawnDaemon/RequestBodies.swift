import FoundationEssentials
import NspawnAPI
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// Request bodies: JSON decoded strictly (an explicit null is refused, not read as absent),
/// and the errors a body that does not decode gets.
extension Router {
    /// A required JSON body as `T`.
    func decode<T: Decodable>(_ type: T.Type, _ request: APIRequest) throws -> T {
        guard let body = try decodeOptional(type, request) else { throw BodyError(status: 400, message: "a JSON body is required") }
        return body
    }

    /// A JSON body as `T`, nil when there is none. An explicit null for a field of `T` is
    /// refused, not read as absent: the document has no nullable field, and `"url": null`
    /// beside a recipe must not pass for "no url". Nulls under keys `T` does not know are
    /// ignored with the rest of those values.
    func decodeOptional<T: Decodable>(_ type: T.Type, _ request: APIRequest) throws -> T? {
        if request.body.isEmpty { return nil }
        if let contentType = request.contentType, !contentType.lowercased().hasPrefix("application/json") {
            throw BodyError(status: 415, message: "expected Content-Type application/json, not '\(contentType.escapedForMessage)'")
        }
        do {
            // Each null becomes an object no field takes: a field of T then fails to decode,
            // an unknown key is never looked at.
            let value = try JSONDecoder().decode(JSONValue.self, from: Data(request.body))
            // Every body is an object; `null` is not "no body".
            if value == .null { throw BodyError(status: 400, message: "malformed JSON body: expected an object, not null") }
            let marked = try JSONEncoder().encode(value.replacingNulls())
            return try WireJSON.decoder().decode(T.self, from: marked)
        } catch let error as DecodingError {
            if case .typeMismatch(_, let context) = error, let last = context.codingPath.last,
               (try? JSONDecoder().decode(JSONValue.self, from: Data(request.body)))?.hasNull(at: context.codingPath) == true {
                throw BodyError(status: 400, message: "malformed JSON body: '\(last.stringValue)' must not be null")
            }
            throw BodyError(status: 400, message: "malformed JSON body: \(Self.describe(error))")
        } catch let error as BodyError {
            throw error
        } catch {
            throw BodyError(status: 400, message: "malformed JSON body: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing key '\(key.stringValue)'"
        case DecodingError.valueNotFound(_, let context):
            "'\(context.codingPath.map(\.stringValue).joined(separator: "."))' must not be null"
        case DecodingError.typeMismatch(_, let context):
            "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty:
            "wrong value at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        default: "not valid JSON"
        }
    }
}

/// Any JSON value, kept whole so a body can be re-encoded.
enum JSONValue: Codable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    static let nullMark = JSONValue.object(["nspawnd-null": .bool(true)])

    init(from decoder: any Decoder) throws {
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null }
        else if let value = try? single.decode(Bool.self) { self = .bool(value) }
        else if let value = try? single.decode(Double.self) { self = .number(value) }
        else if let value = try? single.decode(String.self) { self = .string(value) }
        else if let value = try? single.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try single.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var single = encoder.singleValueContainer()
        switch self {
        case .null: try single.encodeNil()
        case .bool(let value): try single.encode(value)
        case .number(let value): try single.encode(value)
        case .string(let value): try single.encode(value)
        case .array(let value): try single.encode(value)
        case .object(let value): try single.encode(value)
        }
    }

    func replacingNulls() -> JSONValue {
        switch self {
        case .null: Self.nullMark
        case .array(let items): .array(items.map { $0.replacingNulls() })
        case .object(let members): .object(members.mapValues { $0.replacingNulls() })
        default: self
        }
    }

    /// Whether the value at a decoding path (snake_case keys converted as the decoder does) was null.
    func hasNull(at path: [any CodingKey]) -> Bool {
        guard let first = path.first else { return self == .null }
        switch self {
        case .object(let members):
            let match = members.first { key, _ in key == first.stringValue || Self.camelCased(key) == first.stringValue }
            return match?.value.hasNull(at: Array(path.dropFirst())) ?? false
        case .array(let items):
            guard let index = first.intValue, items.indices.contains(index) else { return false }
            return items[index].hasNull(at: Array(path.dropFirst()))
        default:
            return false
        }
    }

    static func camelCased(_ key: String) -> String {
        let parts = key.split(separator: "_", omittingEmptySubsequences: false)
        return parts.enumerated().map { $0 == 0 ? String($1) : $1.prefix(1).uppercased() + $1.dropFirst() }.joined()
    }
}

struct BodyError: Error {
    var status: Int
    var message: String
}
