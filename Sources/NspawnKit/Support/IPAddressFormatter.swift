#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Formats addresses as machined reports them: an address family and raw bytes.
enum IPAddressFormatter {
    static func format(family: Int32, bytes: [UInt8]) -> String? {
        let expected: Int
        switch family {
        case AF_INET: expected = 4
        case AF_INET6: expected = 16
        default: return nil
        }
        guard bytes.count == expected else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
