import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// The descriptor syscalls the Swift code makes, each wrapped once: a signal's EINTR is retried,
// a failure is thrown as swift-system's Errno, and callers hold a FileDescriptor, never an Int32.
// Only the C shims (Sources/CLinux) and code after fork work on raw descriptors.

extension Errno {
    /// The calling thread's errno, read right after the C call that failed.
    package static var last: Errno { Errno(rawValue: Glibc.errno) }
}

/// Which way of a socket a call is about.
package enum SocketDirection: Sendable {
    case receiving
    case sending
    case both
}

extension FileDescriptor {
    // MARK: Opening

    /// Runs an open-like C call, again after a signal, and takes over the descriptor it returns.
    package static func opening(_ body: () -> Int32) throws(Errno) -> FileDescriptor {
        while true {
            let result = body()
            if result >= 0 { return FileDescriptor(rawValue: result) }
            if errno != EINTR { throw Errno.last }
        }
    }

    /// pipe2(O_CLOEXEC): children get only the ends handed to them on purpose.
    package static func closeOnExecPipe() throws(Errno) -> (read: FileDescriptor, write: FileDescriptor) {
        var ends: [Int32] = [-1, -1]
        guard nspawnctl_pipe_cloexec(&ends) == 0 else { throw Errno.last }
        return (FileDescriptor(rawValue: ends[0]), FileDescriptor(rawValue: ends[1]))
    }

    /// A close-on-exec duplicate numbered 3 or above, so never a child's stdin, stdout or stderr.
    package func closeOnExecDuplicate() throws(Errno) -> FileDescriptor {
        try FileDescriptor.opening { fcntl(rawValue, F_DUPFD_CLOEXEC, 3) }
    }

    /// fstat.
    package func status() throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        if fstat(rawValue, &st) != 0 { throw Errno.last }
        return st
    }

    // MARK: Reading

    /// One read(2): the byte count, 0 at end of file.
    package func readSome(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        while true {
            let count = Glibc.read(rawValue, buffer.baseAddress, buffer.count)
            if count >= 0 { return count }
            if errno != EINTR { throw Errno.last }
        }
    }

    /// Reads to end of file, handing `body` each chunk as it comes.
    package func forEachChunk(bufferSize: Int = 64 * 1024, _ body: (UnsafeRawBufferPointer) throws(Errno) -> Void) throws(Errno) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = try readSome(into: buffer)
            if count == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }

    /// Reads to end of file; more than `limit` bytes is an error (EFBIG), never a silent cut.
    package func readAll(limit: Int) throws(Errno) -> [UInt8] {
        var bytes: [UInt8] = []
        try forEachChunk { chunk throws(Errno) in
            bytes += chunk
            if bytes.count > limit { throw Errno.fileTooLarge }
        }
        return bytes
    }

    /// Reads to end of file and drops what it read: a writer at the other end can finish.
    package func discardToEnd() throws(Errno) {
        try forEachChunk { _ in }
    }

    // MARK: Writing

    /// Writes all of `bytes` (swift-system's `writeAll`, with a typed error).
    package func writeFully(_ bytes: UnsafeRawBufferPointer) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.write(rawValue, bytes.baseAddress! + offset, bytes.count - offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw Errno.last
            }
            offset += count
        }
    }

    package func writeFully(_ bytes: [UInt8]) throws(Errno) {
        // withUnsafeBytes rethrows untyped; the Result carries the Errno out.
        try bytes.withUnsafeBytes { buffer in Result { () throws(Errno) in try writeFully(buffer) } }.get()
    }

    /// Writes all of `bytes` at `offset`, leaving the file's position where it was (pwrite).
    package func writeFully(_ bytes: [UInt8], atOffset offset: Int64) throws(Errno) {
        try bytes.withUnsafeBytes { buffer in
            Result { () throws(Errno) in
                var done = 0
                while done < buffer.count {
                    let count = Glibc.pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
                    if count < 0 {
                        if errno == EINTR { continue }
                        throw Errno.last
                    }
                    done += count
                }
            }
        }.get()
    }

    /// Copies everything up to end of file to `target`; returns how many bytes that was.
    @discardableResult
    package func pump(to target: FileDescriptor, bufferSize: Int = 64 * 1024) throws(Errno) -> Int {
        var total = 0
        try forEachChunk(bufferSize: bufferSize) { chunk throws(Errno) in
            try target.writeFully(chunk)
            total += chunk.count
        }
        return total
    }

    // MARK: Sockets

    /// Writes all of `bytes` to a socket. A peer that has gone away is EPIPE, never SIGPIPE:
    /// a daemon or an ssh that hung up must not kill the client.
    package func sendAll(_ bytes: UnsafeRawBufferPointer) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.send(rawValue, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if count < 0 {
                if errno == EINTR { continue }
                throw Errno.last
            }
            offset += count
        }
    }

    public func sendAll(_ bytes: [UInt8]) throws(Errno) {
        try bytes.withUnsafeBytes { buffer in Result { () throws(Errno) in try sendAll(buffer) } }.get()
    }

    /// Waits until the descriptor is readable (or at end, or in error), for at most `timeout`.
    /// False when the time ran out.
    public func waitReadable(timeout: Duration) throws(Errno) -> Bool {
        var entry = pollfd(fd: rawValue, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        while true {
            let ready = Glibc.poll(&entry, 1, max(0, milliseconds))
            if ready >= 0 { return ready > 0 }
            if errno != EINTR { throw Errno.last }
        }
    }

    /// Ends one way of a socket (or both): the peer reads end of file, or our reads do.
    package func shutdownSocket(_ direction: SocketDirection) throws(Errno) {
        let how = switch direction {
        case .receiving: Int32(SHUT_RD)
        case .sending: Int32(SHUT_WR)
        case .both: Int32(SHUT_RDWR)
        }
        if Glibc.shutdown(rawValue, how) != 0 { throw Errno.last }
    }

    /// SO_RCVBUF or SO_SNDBUF (or both); the kernel may round the size.
    package func setSocketBufferSize(_ bytes: Int32, for direction: SocketDirection) throws(Errno) {
        let options = switch direction {
        case .receiving: [SO_RCVBUF]
        case .sending: [SO_SNDBUF]
        case .both: [SO_RCVBUF, SO_SNDBUF]
        }
        var size = bytes
        for option in options {
            if Glibc.setsockopt(rawValue, SOL_SOCKET, option, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 { throw Errno.last }
        }
    }
}

/// An anonymous in-memory file (memfd): collects a child's output without a reader thread, or
/// hands a child a small document by descriptor.
package final class MemoryFile {
    package let descriptor: FileDescriptor

    package init() throws(NspawnError) {
        do {
            descriptor = try FileDescriptor.opening { nspawnctl_memfd_create("nspawnctl-output") }
        } catch {
            throw .system("cannot create a buffer for child output", error)
        }
    }

    /// A document to hand a child as its stdin: written, then read from its start.
    package convenience init(contents: some Sequence<UInt8>) throws(NspawnError) {
        try self.init()
        do throws(Errno) {
            let failure: Errno? = Array(contents).withUnsafeBytes { bytes in
                do throws(Errno) {
                    try descriptor.writeFully(bytes)
                    return nil
                } catch {
                    return error
                }
            }
            if let failure { throw failure }
            guard lseek(descriptor.rawValue, 0, SEEK_SET) == 0 else { throw Errno.last }
        } catch {
            throw .system("cannot write a document for a child", error)
        }
    }

    deinit { try? descriptor.close() }

    /// The last `limit` bytes written to it, as text.
    package func text(limit: Int) -> String {
        let size = lseek(descriptor.rawValue, 0, SEEK_END)
        guard size > 0 else { return "" }
        let start = max(0, Int(size) - limit)
        var bytes = [UInt8](repeating: 0, count: Int(size) - start)
        let count = bytes.withUnsafeMutableBytes { pread(descriptor.rawValue, $0.baseAddress, $0.count, off_t(start)) }
        return String(decoding: bytes.prefix(max(0, count)), as: UTF8.self).trimmedWhitespace
    }
}
