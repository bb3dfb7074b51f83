import CLinux
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Downloads an image's layers in order, on a thread of its own, into unnamed files in the
/// image store (O_TMPFILE: whatever ends the import, nothing is left on disk), while the import
/// applies the ones already here. Memory stays at curl's buffers; disk holds the compressed layers.
final class LayerPrefetch: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let arrived = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var results: [Result<FileDescriptor, NspawnError>?]
    private var taken: Set<Int> = []
    private var stopped = false
    private var thread: OSThread?

    init(client: RegistryClient, layers: [(digest: OCIDigest, size: Int64)], spoolDirectory: Directory,
         spoolLabel: String) throws(NspawnError) {
        results = Array(repeating: nil, count: layers.count)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(arrived, nil)
        let box = UncheckedSendable(self)
        let spool = UncheckedSendable(spoolDirectory)
        thread = OSThread {
            for (number, layer) in layers.enumerated() {
                if box.value.isStopped { break }
                let result = box.value.download(layer.digest, size: layer.size, client: client,
                                                into: spool.value, label: spoolLabel)
                box.value.publish(number, result)
                if case .failure = result { break }
            }
        }
    }

    deinit {
        pthread_cond_destroy(arrived)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        arrived.deallocate()
    }

    private var isStopped: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return stopped
    }

    /// Layer `number`'s file, read from its start, once it is all here.
    func take(_ number: Int) throws(NspawnError) -> FileDescriptor {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while results[number] == nil {
            // A failure of an earlier layer ends the downloads; it is the error to report.
            if let failed = results.prefix(number).firstIndex(where: { if case .failure = $0 { true } else { false } }),
               case .failure(let error) = results[failed] {
                throw error
            }
            pthread_cond_wait(arrived, mutex)
        }
        taken.insert(number)
        return try results[number]!.get()
    }

    /// Ends the downloads and closes what was never taken.
    func stop() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_mutex_unlock(mutex)
        thread?.join()
        thread = nil
        for (number, result) in results.enumerated() where !taken.contains(number) {
            if case .success(let fd) = result { try? fd.close() }
        }
    }

    private func publish(_ number: Int, _ result: Result<FileDescriptor, NspawnError>) {
        pthread_mutex_lock(mutex)
        results[number] = result
        pthread_cond_broadcast(arrived)
        pthread_mutex_unlock(mutex)
    }

    private func download(_ digest: OCIDigest, size: Int64, client: RegistryClient, into directory: Directory,
                          label: String) -> Result<FileDescriptor, NspawnError> {
        let fd: FileDescriptor
        do throws(Errno) {
            fd = try FileDescriptor.opening { nspawnctl_open_tmpfile(directory.descriptor.rawValue) }
        } catch {
            return .failure(.system("cannot make a file for layer \(digest) in '\(label)'", error))
        }
        final class Progress { var bytes: Int64 = 0; var failure: Errno?; var tooLarge = false }
        let progress = Progress()
        let outcome: HTTPDownload.Outcome
        do throws(NspawnError) {
            outcome = try client.blob(digest, size: size) { [self] chunk in
                if isStopped { return false }
                progress.bytes += Int64(chunk.count)
                if progress.bytes > size { progress.tooLarge = true; return false }
                do throws(Errno) { try fd.writeFully(chunk) } catch { progress.failure = error; return false }
                return true
            }
        } catch {
            try? fd.close()
            return .failure(error)
        }
        func fail(_ error: NspawnError) -> Result<FileDescriptor, NspawnError> {
            try? fd.close()
            return .failure(error)
        }
        switch outcome {
        case .cancelled:
            return fail(.cancelled("pull of '\(client.label)' cancelled"))
        case .readerStopped:
            if let failure = progress.failure { return fail(.system("cannot write layer \(digest) to '\(label)'", failure)) }
            if progress.tooLarge {
                return fail(.verificationFailed("digest mismatch in '\(client.label.escapedForMessage)': blob \(digest) is larger than the \(size) bytes its manifest names"))
            }
            return fail(.cancelled("pull of '\(client.label)' stopped"))
        case .completed:
            guard lseek(fd.rawValue, 0, SEEK_SET) == 0 else {
                return fail(.system("cannot rewind layer \(digest) in '\(label)'", Errno(rawValue: errno)))
            }
            return .success(fd)
        }
    }
}
