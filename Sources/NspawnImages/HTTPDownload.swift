import CCurl
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP GET: where, with which headers, trusting what.
struct HTTPRequest {
    var url: String
    var headers: [String] = []
    /// A 4xx or 5xx fails the transfer as a download error. Off, the status is the caller's to
    /// read, and an error response's body is kept for its message instead of written.
    var failOnError = true
    var limit: Int64?
    /// PEM certificates to trust besides the system's.
    var extraCertificates: [UInt8]?

    init(_ url: String, headers: [String] = [], failOnError: Bool = true, limit: Int64? = nil) {
        self.url = url
        self.headers = headers
        self.failOnError = failOnError
        self.limit = limit
    }
}

/// What the server answered, the last response when redirects were followed.
struct HTTPResponse: Sendable {
    var status = 0
    var headers: [(name: String, value: String)] = []
    /// The start of an error response's body (registries explain themselves in JSON there).
    var errorBody: [UInt8] = []

    func header(_ name: String) -> String? {
        headers.last { $0.name.lowercased() == name.lowercased() }?.value
    }

    var isSuccess: Bool { (200..<300).contains(status) }
}

/// HTTP(S) downloads with libcurl, in-process. Only http and https, also across redirects.
enum HTTPDownload {
    private static let globalInit: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    /// Where Debian keeps the system's trusted certificates, which a registry's own CA joins.
    static let systemCertificates = "/etc/ssl/certs/ca-certificates.crt"

    /// Where the bytes go and what the transfer learned; shared with curl's C callbacks.
    final class Sink: @unchecked Sendable {
        let write: (UnsafeRawBufferPointer) -> Bool
        let cancelled: @Sendable () -> Bool
        let sizeKnown: (Int64) -> Void
        /// Set when `write` refused the bytes, i.e. the reader stopped first; not the download's fault.
        var writeRefused = false
        var response = HTTPResponse()
        fileprivate var keepsErrorBodies = false

        init(write: @escaping (UnsafeRawBufferPointer) -> Bool, cancelled: @escaping @Sendable () -> Bool,
             sizeKnown: @escaping (Int64) -> Void = { _ in }) {
            self.write = write
            self.cancelled = cancelled
            self.sizeKnown = sizeKnown
        }

        fileprivate func header(_ line: UnsafeRawBufferPointer) {
            // Lines end in CRLF, which as one Character is not trimmed as whitespace.
            let text = String(decoding: line.filter { $0 != 0x0d && $0 != 0x0a }, as: UTF8.self).trimmedWhitespace
            if text.hasPrefix("HTTP/") {
                // A new response (after a redirect or a 100): its headers replace the last one's.
                response.headers = []
                response.status = text.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            } else if let colon = text.firstIndex(of: ":") {
                response.headers.append((String(text[..<colon]), String(text[text.index(after: colon)...]).trimmedWhitespace))
            }
        }

        fileprivate func body(_ bytes: UnsafeRawBufferPointer) -> Bool {
            if keepsErrorBodies, response.status >= 300 {
                if response.errorBody.count < 16 << 10 { response.errorBody += bytes.prefix(16 << 10) }
                return true
            }
            if cancelled() || !write(bytes) {
                writeRefused = true
                return false
            }
            return true
        }
    }

    enum Outcome {
        case completed
        case readerStopped
        case cancelled
    }

    /// libcurl's failures of TLS itself: the peer's certificate, or no TLS session at all.
    private static let tlsFailures: Set<UInt32> = [
        CURLE_SSL_CONNECT_ERROR.rawValue, CURLE_PEER_FAILED_VERIFICATION.rawValue, CURLE_SSL_ISSUER_ERROR.rawValue,
        CURLE_SSL_PINNEDPUBKEYNOTMATCH.rawValue, CURLE_SSL_INVALIDCERTSTATUS.rawValue, CURLE_SSL_CERTPROBLEM.rawValue,
    ]

    static func perform(_ url: String, into sink: Sink, limit: Int64? = nil) throws(NspawnError) -> Outcome {
        try perform(HTTPRequest(url, limit: limit), into: sink)
    }

    /// Transfers the request's URL into `sink`, blocking. Throws a message naming the URL on any
    /// network failure, on an HTTP error when the request fails on them, and a verification
    /// failure when TLS cannot be established or trusted.
    static func perform(_ request: HTTPRequest, into sink: Sink) throws(NspawnError) -> Outcome {
        guard globalInit, let handle = curl_easy_init() else { throw .failed("cannot initialise libcurl") }
        defer { curl_easy_cleanup(handle) }
        var headerList: UnsafeMutablePointer<curl_slist>?
        for header in request.headers { headerList = curl_slist_append(headerList, header) }
        defer { curl_slist_free_all(headerList) }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let context = Unmanaged.passUnretained(sink).toOpaque()
        sink.keepsErrorBodies = !request.failOnError
        sink.response = HTTPResponse()

        let code: CURLcode = errorBuffer.withUnsafeMutableBufferPointer { errorPointer in
            nspawnctl_curl_setopt_string(handle, CURLOPT_URL, request.url)
            nspawnctl_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
            nspawnctl_curl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
            nspawnctl_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10)
            nspawnctl_curl_setopt_long(handle, CURLOPT_FAILONERROR, request.failOnError ? 1 : 0)
            nspawnctl_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, 30)
            // A stalled server fails after a minute below 1 byte/s instead of hanging forever.
            nspawnctl_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, 60)
            nspawnctl_curl_setopt_string(handle, CURLOPT_USERAGENT, "nspawnctl")
            if let headerList { nspawnctl_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList) }
            // curl's limit would cut an error response too, before its status could explain it:
            // a request that reads error bodies leaves the limit to its sink.
            if let limit = request.limit, request.failOnError { nspawnctl_curl_setopt_long(handle, CURLOPT_MAXFILESIZE, Int(limit)) }
            if let pem = request.extraCertificates {
                pem.withUnsafeBytes { _ = nspawnctl_curl_setopt_ca_blob(handle, $0.baseAddress, $0.count) }
            }
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorPointer.baseAddress)
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)
            nspawnctl_curl_setopt_header_function(handle) { data, size, count, context in
                Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue().header(UnsafeRawBufferPointer(start: data, count: size * count))
                return size * count
            }
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
            nspawnctl_curl_setopt_write_function(handle) { data, size, count, context in
                let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
                return sink.body(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
            }
            nspawnctl_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context)
            nspawnctl_curl_setopt_xferinfo_function(handle) { context, total, _, _, _ in
                let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
                if total > 0, sink.response.isSuccess { sink.sizeKnown(Int64(total)) }
                return sink.cancelled() ? 1 : 0
            }
            return curl_easy_perform(handle)
        }
        if code == CURLE_OK { return .completed }
        if sink.cancelled() { return .cancelled }
        if code == CURLE_WRITE_ERROR && sink.writeRefused { return .readerStopped }
        let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmedWhitespace
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        if tlsFailures.contains(code.rawValue) {
            throw .verificationFailed("tls failure for '\(request.url.escapedForMessage)': \(message)")
        }
        throw .downloadFailed(url: request.url, reason: message)
    }

    /// Downloads a small document (a signature, a checksum list) into memory.
    static func fetch(_ url: String, limit: Int) throws(NspawnError) -> [UInt8] {
        let (bytes, _) = try fetch(HTTPRequest(url, limit: Int64(limit)))
        return bytes
    }

    /// A small document into memory, with the response; larger than the request's limit fails.
    static func fetch(_ request: HTTPRequest) throws(NspawnError) -> ([UInt8], HTTPResponse) {
        let limit = Int(request.limit ?? Int64(Int.max))
        let (sink, bytes) = memorySink(limit: limit, cancelled: { false })
        if try perform(request, into: sink) == .readerStopped {
            throw .downloadFailed(url: request.url, reason: "larger than \(limit) bytes")
        }
        return (bytes(), sink.response)
    }

    /// A sink keeping what arrives in memory, and what it kept; past `limit` bytes it stops the
    /// transfer (`.readerStopped`).
    static func memorySink(limit: Int, cancelled: @escaping @Sendable () -> Bool) -> (Sink, () -> [UInt8]) {
        final class Buffer: @unchecked Sendable { var bytes: [UInt8] = [] }
        let buffer = Buffer()
        let sink = Sink(write: { chunk in
            buffer.bytes += chunk
            return buffer.bytes.count <= limit
        }, cancelled: cancelled)
        return (sink, { buffer.bytes })
    }
}
