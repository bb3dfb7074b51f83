import CCurl
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// HTTP(S) downloads with libcurl, in-process. Only http and https, also across redirects.
enum HTTPDownload {
    private static let globalInit: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK

    /// Where the bytes go and what the transfer learned; shared with curl's C callbacks.
    final class Sink: @unchecked Sendable {
        let write: (UnsafeRawBufferPointer) -> Bool
        let cancelled: @Sendable () -> Bool
        let sizeKnown: (Int64) -> Void
        /// Set when `write` refused the bytes, i.e. the reader stopped first; not the download's fault.
        var writeRefused = false

        init(write: @escaping (UnsafeRawBufferPointer) -> Bool, cancelled: @escaping @Sendable () -> Bool,
             sizeKnown: @escaping (Int64) -> Void = { _ in }) {
            self.write = write
            self.cancelled = cancelled
            self.sizeKnown = sizeKnown
        }
    }

    enum Outcome {
        case completed
        case readerStopped
        case cancelled
    }

    /// Transfers `url` into `sink`, blocking. Throws a message naming the URL on any HTTP or network failure.
    static func perform(_ url: String, into sink: Sink, limit: Int64? = nil) throws(NspawnError) -> Outcome {
        guard globalInit, let handle = curl_easy_init() else { throw .failed("cannot initialise libcurl") }
        defer { curl_easy_cleanup(handle) }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let context = Unmanaged.passUnretained(sink).toOpaque()

        let code: CURLcode = errorBuffer.withUnsafeMutableBufferPointer { errorPointer in
            nspawnctl_curl_setopt_string(handle, CURLOPT_URL, url)
            nspawnctl_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
            nspawnctl_curl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
            nspawnctl_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10)
            nspawnctl_curl_setopt_long(handle, CURLOPT_FAILONERROR, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, 30)
            // A stalled server fails after a minute below 1 byte/s instead of hanging forever.
            nspawnctl_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1)
            nspawnctl_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, 60)
            nspawnctl_curl_setopt_string(handle, CURLOPT_USERAGENT, "nspawnctl")
            if let limit { nspawnctl_curl_setopt_long(handle, CURLOPT_MAXFILESIZE, Int(limit)) }
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorPointer.baseAddress)
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
            nspawnctl_curl_setopt_write_function(handle) { data, size, count, context in
                let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
                let bytes = UnsafeRawBufferPointer(start: data, count: size * count)
                if sink.cancelled() || !sink.write(bytes) {
                    sink.writeRefused = true
                    return 0
                }
                return size * count
            }
            nspawnctl_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
            nspawnctl_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context)
            nspawnctl_curl_setopt_xferinfo_function(handle) { context, total, _, _, _ in
                let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
                if total > 0 { sink.sizeKnown(Int64(total)) }
                return sink.cancelled() ? 1 : 0
            }
            return curl_easy_perform(handle)
        }
        if code == CURLE_OK { return .completed }
        if sink.cancelled() { return .cancelled }
        if code == CURLE_WRITE_ERROR && sink.writeRefused { return .readerStopped }
        let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmedWhitespace
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        throw .downloadFailed(url: url, reason: message)
    }

    /// Downloads a small document (a signature, a checksum list) into memory.
    static func fetch(_ url: String, limit: Int) throws(NspawnError) -> [UInt8] {
        final class Buffer: @unchecked Sendable { var bytes: [UInt8] = [] }
        let buffer = Buffer()
        let sink = Sink(write: { chunk in
            buffer.bytes += chunk
            return buffer.bytes.count <= limit
        }, cancelled: { false })
        if try perform(url, into: sink, limit: Int64(limit)) == .readerStopped {
            throw .downloadFailed(url: url, reason: "larger than \(limit) bytes")
        }
        return buffer.bytes
    }
}
