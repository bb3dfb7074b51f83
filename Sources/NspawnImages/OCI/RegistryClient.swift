import Crypto
import FoundationEssentials
import NspawnKit
import Synchronization

/// The OCI distribution API (v2) for one repository, as far as a pull needs it: manifests and
/// blobs by GET, with the registry's own authentication: a bearer token from the realm its
/// `WWW-Authenticate` challenge names (anonymous, or with credentials), or basic auth.
final class RegistryClient: @unchecked Sendable {
    let reference: RegistryReference
    let settings: RegistrySettings
    private let baseURL: String
    private let certificates: [UInt8]?
    private let credentials: RegistryCredentials?
    private let authFiles: [String]
    private let cancelled: @Sendable () -> Bool
    /// The Authorization header the last challenge earned; shared by the prefetch thread.
    private let authorization = Mutex<String?>(nil)

    init(_ reference: RegistryReference, environment: [String: String], cancelled: @escaping @Sendable () -> Bool) throws(NspawnError) {
        self.reference = reference
        self.settings = try RegistrySettings.load(for: reference.registry)
        self.certificates = try settings.trustedCertificates(for: reference.registry)
        self.authFiles = RegistryCredentials.authFiles(environment: environment)
        self.credentials = try RegistryCredentials.find(for: reference, files: authFiles)
        self.cancelled = cancelled
        baseURL = "\(settings.plainHTTP ? "http" : "https")://\(reference.apiHost)/v2/\(reference.repository)"
    }

    var label: String { reference.description }

    // MARK: - Documents and blobs

    /// A manifest or index by tag or digest, with the media type the registry gave it.
    func manifest(_ tagOrDigest: String) throws(NspawnError) -> (bytes: [UInt8], mediaType: String?) {
        let accept = "Accept: " + [OCIMediaType.index, OCIMediaType.manifest, OCIMediaType.dockerManifestList,
                                   OCIMediaType.dockerManifest].joined(separator: ", ")
        let (bytes, response) = try document("\(baseURL)/manifests/\(tagOrDigest)", headers: [accept], what: "manifest \(tagOrDigest)")
        let mediaType = response.header("Content-Type").map { String($0.split(separator: ";")[0]).trimmedWhitespace }
        return (bytes, mediaType)
    }

    /// A small blob (a config), checked against its digest.
    func documentBlob(_ descriptor: OCIDescriptor) throws(NspawnError) -> [UInt8] {
        let digest = try OCIDigest(descriptor.digest, source: label)
        guard descriptor.size >= 0, descriptor.size <= OCIImporter.documentLimit else {
            throw .badArchive(source: label, entry: digest.description, reason: "a document of \(descriptor.size) bytes")
        }
        let (bytes, _) = try document("\(baseURL)/blobs/\(digest)", headers: [], what: "blob \(digest)")
        let got = encodeHex(Array(SHA256.hash(data: bytes)))
        guard got == digest.hex, bytes.count == descriptor.size else {
            throw .verificationFailed("digest mismatch in '\(label.escapedForMessage)': blob \(digest) holds sha256:\(got) (\(bytes.count) bytes, \(descriptor.size) expected)")
        }
        return bytes
    }

    /// A layer blob streamed into `write`, at most `size` bytes of it.
    func blob(_ digest: OCIDigest, size: Int64, write: @escaping (UnsafeRawBufferPointer) -> Bool) throws(NspawnError) -> HTTPDownload.Outcome {
        let url = "\(baseURL)/blobs/\(digest)"
        let sink = HTTPDownload.Sink(write: write, cancelled: cancelled)
        return try send(url, headers: [], sink: sink, limit: size, what: "blob \(digest)")
    }

    private func document(_ url: String, headers: [String], what: String) throws(NspawnError) -> ([UInt8], HTTPResponse) {
        let limit = OCIImporter.documentLimit
        let (sink, bytes) = HTTPDownload.memorySink(limit: limit, cancelled: cancelled)
        let outcome = try send(url, headers: headers, sink: sink, limit: Int64(limit), what: what)
        if outcome == .readerStopped {
            throw .badArchive(source: label, entry: what, reason: "larger than \(limit) bytes")
        }
        if outcome == .cancelled { throw .cancelled("pull of '\(label)' cancelled") }
        return (bytes(), sink.response)
    }

    /// One GET, answering an authentication challenge once; a status other than success becomes
    /// the error it means.
    private func send(_ url: String, headers: [String], sink: HTTPDownload.Sink, limit: Int64,
                      what: String) throws(NspawnError) -> HTTPDownload.Outcome {
        var challenged = false
        while true {
            var request = HTTPRequest(url, headers: headers + (authorization.withLock { $0 }.map { ["Authorization: \($0)"] } ?? []),
                                      failOnError: false, limit: limit)
            request.extraCertificates = certificates
            let outcome = try perform(request, into: sink)
            let response = sink.response
            if outcome != .completed || response.isSuccess { return outcome }
            if response.status == 401, !challenged, let challenge = response.header("WWW-Authenticate") {
                challenged = true
                try authenticate(challenge)
                continue
            }
            throw failure(response, url: url, what: what, afterChallenge: challenged)
        }
    }

    private func perform(_ request: HTTPRequest, into sink: HTTPDownload.Sink) throws(NspawnError) -> HTTPDownload.Outcome {
        do {
            return try HTTPDownload.perform(request, into: sink)
        } catch .verificationFailed(let message) {
            let hint = settings.plainHTTP ? "" : "; a registry of your own needs its CA in \(RegistrySettings.directory)/\(reference.registry).conf (CertificateAuthority=) or /etc/containers/certs.d/\(reference.registry)/, or PlainHTTP=yes there if it serves plain http"
            throw .verificationFailed(message + hint)
        }
    }

    private func failure(_ response: HTTPResponse, url: String, what: String, afterChallenge: Bool) -> NspawnError {
        let detail = Self.registryMessage(response.errorBody)
        switch response.status {
        case 401, 403:
            let used = credentials.map { "the credentials for '\($0.user.escapedForMessage)' from \($0.file)" }
                ?? "no credentials (none for \(reference.registry) in \(authFiles.joined(separator: ", ")))"
            return .registryDenied("registry \(reference.registry) refused access to \(reference.repository) with \(used)"
                                   + (detail.map { ": \($0)" } ?? ""))
        case 404:
            if what.hasPrefix("blob") {
                return .badArchive(source: label, entry: String(what.dropFirst(5)), reason: "the blob is missing from the registry")
            }
            return .noSuchSourceImage("no image '\(reference.manifestReference.escapedForMessage)' in \(reference.registry)/\(reference.repository)"
                                   + (detail.map { ": \($0)" } ?? ""))
        default:
            return .downloadFailed(url: url, reason: "HTTP \(response.status)" + (detail.map { ": \($0)" } ?? ""))
        }
    }

    /// The first message of a registry's `{"errors": [{"code", "message"}]}` body.
    static func registryMessage(_ body: [UInt8]) -> String? {
        struct Errors: Decodable {
            struct Entry: Decodable { var code: String?; var message: String? }
            var errors: [Entry]?
        }
        guard let first = (try? JSONDecoder().decode(Errors.self, from: Data(body)))?.errors?.first else { return nil }
        return [first.code, first.message].compactMap { $0 }.joined(separator: ": ").escapedForMessage
    }

    // MARK: - Authentication

    private func authenticate(_ header: String) throws(NspawnError) {
        guard let challenge = AuthChallenge(parsing: header) else {
            throw .registryDenied("registry \(reference.registry) asks for an authentication nspawnctl cannot give: \(header.escapedForMessage)")
        }
        let basic = credentials.map { "Basic " + Data("\($0.user):\($0.password)".utf8).base64EncodedString() }
        switch challenge.scheme {
        case "basic":
            guard let basic else {
                throw .registryDenied("registry \(reference.registry) needs credentials for \(reference.repository), and none were found in \(authFiles.joined(separator: ", "))")
            }
            authorization.withLock { $0 = basic }
        case "bearer":
            guard let realm = challenge.parameters["realm"], ImageSource.isURL(realm) else {
                throw .registryDenied("registry \(reference.registry) names no usable token realm: \(header.escapedForMessage)")
            }
            let query = ["service": challenge.parameters["service"], "scope": challenge.parameters["scope"] ?? "repository:\(reference.repository):pull"]
                .compactMap { key, value in value.map { "\(key)=\(Self.percentEncoded($0))" } }.sorted()
            let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
            var request = HTTPRequest(url, headers: basic.map { ["Authorization: \($0)"] } ?? [], failOnError: false, limit: 1 << 20)
            request.extraCertificates = certificates
            let (bytes, response) = try HTTPDownload.fetch(request)
            guard response.isSuccess else {
                let used = credentials.map { "with the credentials for '\($0.user.escapedForMessage)' from \($0.file)" }
                    ?? "without credentials (none for \(reference.registry) in \(authFiles.joined(separator: ", ")))"
                throw .registryDenied("the token service of \(reference.registry) refused a pull of \(reference.repository) \(used): HTTP \(response.status)"
                                      + (Self.registryMessage(response.errorBody).map { ": \($0)" } ?? ""))
            }
            struct Token: Decodable { var token: String?; var access_token: String? }
            guard let token = (try? JSONDecoder().decode(Token.self, from: Data(bytes))).flatMap({ $0.token ?? $0.access_token }),
                  !token.isEmpty, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                throw .registryDenied("the token service of \(reference.registry) gave no token")
            }
            authorization.withLock { $0 = "Bearer \(token)" }
        default:
            throw .registryDenied("registry \(reference.registry) asks for '\(challenge.scheme)' authentication, which nspawnctl does not speak")
        }
    }

    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "~") {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "%" + encodeHex([byte]).uppercased()
            }
        }
        return out
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (RFC 7235), one challenge.
struct AuthChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    init?(parsing header: String) {
        let text = Array(header.utf8)
        var index = 0
        while index < text.count, text[index] != UInt8(ascii: " ") { index += 1 }
        scheme = String(decoding: text[..<index], as: UTF8.self).lowercased()
        guard !scheme.isEmpty else { return nil }
        parameters = [:]
        while index < text.count {
            while index < text.count, [0x20, 0x09, 0x0d, 0x0a, 0x2c].contains(text[index]) { index += 1 }
            guard index < text.count else { break }
            let keyStart = index
            while index < text.count, text[index] != UInt8(ascii: "=") { index += 1 }
            guard index < text.count else { return nil }
            let key = String(decoding: text[keyStart..<index], as: UTF8.self).trimmedWhitespace.lowercased()
            index += 1
            var value: [UInt8] = []
            if index < text.count, text[index] == UInt8(ascii: "\"") {
                index += 1
                while index < text.count, text[index] != UInt8(ascii: "\"") {
                    if text[index] == UInt8(ascii: "\\"), index + 1 < text.count { index += 1 }
                    value.append(text[index])
                    index += 1
                }
                guard index < text.count else { return nil }
                index += 1
            } else {
                while index < text.count, ![0x20, 0x09, 0x0d, 0x0a, 0x2c].contains(text[index]) { value.append(text[index]); index += 1 }
            }
            parameters[key] = String(decoding: value, as: UTF8.self)
        }
    }
}
