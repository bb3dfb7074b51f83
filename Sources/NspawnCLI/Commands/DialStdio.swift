import ArgumentParser
import NspawnAPI
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

struct DialStdio: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dial-stdio",
        abstract: "Bridge stdin and stdout to this host's nspawnd socket (what --host runs over ssh).",
        discussion: """
            Another host's `nspawnctl --host ssh://…` runs `ssh HOST nspawnctl dial-stdio` and speaks HTTP \
            through it, so nothing new listens on the network and nspawnd sees the ssh user as its peer. \
            Exits 7 when nothing listens on the socket, 4 when the user may not connect.
            """)

    func run() throws {
        // A client that went away ends the bridge through EPIPE, not a signal.
        signal(SIGPIPE, SIG_IGN)
        let connector = UnixSocketConnector()
        let connection = try connector.connect()
        defer { connection.close() }
        try Self.bridge(input: .standardInput, output: .standardOutput, socket: connection.descriptor)
    }

    /// Copies both ways until the daemon ends the stream, each way on a thread of its own: an
    /// exec stream sends while it receives, and one thread blocked writing to the daemon
    /// (which waits for it to read) would stop both. stdin's end is passed on as a half-close,
    /// so the daemon still answers a request it has read whole.
    static func bridge(input: FileDescriptor, output: FileDescriptor, socket: FileDescriptor) throws(NspawnError) {
        // Not joined: after the daemon has ended it may wait on stdin until ssh closes it.
        OSThread.detach {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while (try? copy(from: input, to: socket, buffer: &buffer, what: "stdin")) == true {}
            try? socket.shutdownSocket(.sending)
        }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while try copy(from: socket, to: output, buffer: &buffer, what: "nspawnd") {}
    }

    /// One read and its write; false at end of stream.
    private static func copy(from source: FileDescriptor, to target: FileDescriptor, buffer: inout [UInt8], what: String) throws(NspawnError) -> Bool {
        do {
            let count = try buffer.withUnsafeMutableBytes { try source.read(into: $0, retryOnInterrupt: true) }
            if count == 0 { return false }
            _ = try buffer[..<count].withUnsafeBytes { try target.writeAll($0) }
            return true
        } catch let error as Errno where error == .connectionReset || error == .brokenPipe {
            return false
        } catch let error as Errno {
            throw .system("dial-stdio: copying from \(what)", error)
        } catch {
            throw .failed("dial-stdio: copying from \(what): \(error)")
        }
    }
}
