import FoundationEssentials
import NspawnAPI
import NspawnKit

/// One decoded HTTP request, as the router sees it.
public struct APIRequest: Sendable {
    public var method: String
    /// The path without the query; percent-decoding is not applied (names never need it).
    public var path: String
    public var query: String?
    public var body: [UInt8]
    public var contentType: String?
    public var peer: Peer

    public init(method: String, path: String, query: String? = nil, body: [UInt8] = [], contentType: String? = nil, peer: Peer) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.contentType = contentType
        self.peer = peer
    }

    /// Splits a request target into path and query.
    public init(method: String, target: String, body: [UInt8] = [], contentType: String? = nil, peer: Peer) {
        let withoutFragment = target.prefix { $0 != "#" }
        let path = withoutFragment.prefix { $0 != "?" }
        let query = path.endIndex < withoutFragment.endIndex ? String(withoutFragment[withoutFragment.index(after: path.endIndex)...]) : nil
        self.init(method: method, path: String(path), query: query, body: body, contentType: contentType, peer: peer)
    }
}

public struct APIResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var headers: [(String, String)] = []

    public init(status: Int, body: [UInt8], headers: [(String, String)] = []) {
        self.status = status
        self.body = body
        self.headers = headers
    }

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        do {
            return APIResponse(status: status, body: Array(try WireJSON.encoder(pretty: false).encode(value)) + [0x0A])
        } catch {
            return .error(status: 500, code: "failure", message: "cannot encode the response: \(error)")
        }
    }

    static func error(status: Int, code: String, message: String, busError: String? = nil) -> APIResponse {
        json(ErrorBody(code: code, message: message, busError: busError), status: status)
    }

    static func error(_ error: NspawnError) -> APIResponse {
        .error(status: ErrorMapping.httpStatus(error.category), code: error.category.rawValue, message: error.description, busError: error.busErrorName)
    }
}
