import CLinux
import SystemPackage
import NspawnKit
#if canImport(Glibc)
import Glibc
#endif

/// A detached OpenPGP signature checked with gpgv, the standard tool for it, while the data streams.
struct SignatureCheck {
    /// Signatures and checksum lists are small; anything bigger is not one.
    static let sizeLimit = 1 << 20

    let signature: [UInt8]
    let keyring: String

    /// Loads the signature (file or URL) and checks the keyring, before any image work starts.
    static func prepare(signature: String?, keyring: String?) throws(NspawnError) -> SignatureCheck? {
        switch (signature, keyring) {
        case (nil, nil): return nil
        case (nil, .some): throw .invalidArgument("a keyring was given without a signature to check")
        case (.some, nil): throw .invalidArgument("a signature needs a keyring to check it against (--keyring FILE)")
        case (.some(let signature), .some(let keyring)):
            return SignatureCheck(signature: try load(signature, what: "signature"), keyring: try checkedKeyring(keyring))
        }
    }

    static func checkedKeyring(_ keyring: String) throws(NspawnError) -> String {
        // gpgv looks up names without a slash in its home directory; always hand it a path.
        let path = keyring.hasPrefix("/") ? keyring : "./" + keyring
        var st = stat()
        guard stat(path, &st) == 0 else { throw .unusableInput("cannot read keyring '\(keyring.escapedForMessage)'", .last) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw .invalidArgument("keyring '\(keyring.escapedForMessage)' is not a regular file")
        }
        return path
    }

    /// Reads a small document from a file or URL.
    static func load(_ location: String, what: String) throws(NspawnError) -> [UInt8] {
        if ImageSource.isURL(location) { return try HTTPDownload.fetch(location, limit: sizeLimit) }
        let fd: FileDescriptor
        do { fd = try FileDescriptor.opening { open(location, O_RDONLY | O_CLOEXEC) } } catch {
            throw .unusableInput("cannot read \(what) '\(location.escapedForMessage)'", error)
        }
        defer { try? fd.close() }
        do throws(Errno) {
            return try fd.readAll(limit: sizeLimit)
        } catch .fileTooLarge {
            throw .invalidArgument("\(what) '\(location.escapedForMessage)' is larger than \(sizeLimit) bytes")
        } catch {
            throw .system("cannot read \(what) '\(location.escapedForMessage)'", error)
        }
    }

    /// Starts gpgv reading the data on a socket we feed.
    func start() throws(NspawnError) -> RunningSignatureCheck {
        let signatureFile = try MemoryFile()
        do { try signatureFile.descriptor.writeFully(signature, atOffset: 0) } catch {
            throw .system("cannot hand the signature to gpgv", error)
        }
        let output = try MemoryFile()
        let (reader, writer) = try makeStreamPair()
        defer { try? reader.close() }
        let child = try ChildProcess.spawn(["gpgv", "--keyring", keyring, "/dev/fd/3", "-"],
                                           stdin: reader, stdout: output.descriptor, stderr: output.descriptor,
                                           extra: [signatureFile.descriptor])
        return RunningSignatureCheck(child: child, input: writer, output: output, check: self)
    }

    /// Checks a document held in memory (a checksum list).
    func verify(_ data: [UInt8], what: String) throws(NspawnError) {
        let running = try start()
        // gpgv may stop reading early; its verdict says why.
        try? running.input.sendAll(data)
        try running.finish(source: what)
    }
}

final class RunningSignatureCheck {
    let child: ChildProcess
    let input: FileDescriptor
    let output: MemoryFile
    let check: SignatureCheck
    private var done = false

    init(child: ChildProcess, input: FileDescriptor, output: MemoryFile, check: SignatureCheck) {
        self.child = child
        self.input = input
        self.output = output
        self.check = check
    }

    /// Ends the data and waits for gpgv's verdict.
    func finish(source: String) throws(NspawnError) {
        guard !done else { return }
        done = true
        try? input.close()
        let termination = child.wait()
        guard termination.succeeded else {
            let detail = output.text(limit: 2048).split(separator: "\n").suffix(3).joined(separator: "; ")
            throw .verificationFailed("signature check of '\(source.escapedForMessage)' with keyring '\(check.keyring)' failed (gpgv \(termination)): \(detail)")
        }
    }

    func abandon() {
        guard !done else { return }
        done = true
        try? input.close()
        child.signal(SIGKILL)
        _ = child.wait()
    }
}
