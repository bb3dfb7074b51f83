import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension Walk {
    func copyFile(_ name: String, in source: Directory, status st: stat, to destinationName: String, in destination: Directory,
                  sourcePath: String, destinationPath: String) throws(NspawnError) -> ino_t {
        let sourceFD = source.descriptor.rawValue
        let input: FileDescriptor
        do throws(Errno) {
            // O_NONBLOCK: a fifo swapped in after the lstat must not hang the copy.
            input = try FileDescriptor.opening { openat(sourceFD, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) }
        } catch {
            throw .system("cannot open '\(sourcePath)'", error)
        }
        defer { try? input.close() }
        let opened: stat
        do throws(Errno) { opened = try input.status() } catch { throw .system("cannot read '\(sourcePath)'", error) }
        guard opened.fileType == S_IFREG, opened.st_ino == st.st_ino, opened.st_dev == st.st_dev else {
            throw .system("cannot copy '\(sourcePath)': it changed while being copied", .resourceBusy)
        }
        let destinationFD = destination.descriptor.rawValue
        let output: FileDescriptor
        do throws(Errno) {
            output = try FileDescriptor.opening { openat(destinationFD, destinationName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        } catch {
            throw .system("cannot create '\(destinationPath)'", error)
        }
        defer { try? output.close() }
        if opened.st_size > 0 {
            let method = try copyData(from: input, to: output, size: opened.st_size, sourcePath: sourcePath, destinationPath: destinationPath)
            summary.filesByMethod[method.rawValue, default: 0] += 1
            summary.bytes += UInt64(opened.st_size)
        }
        try applyMetadata(from: input, status: opened, to: output, sourcePath: sourcePath, destinationPath: destinationPath)
        do throws(Errno) { return try output.status().st_ino } catch { throw .system("cannot read '\(destinationPath)'", error) }
    }

    /// A reflink when allowed and possible, else copy_file_range (one file system), else
    /// sendfile (across them), else read and write. Each call moves both offsets, so a later
    /// method carries on where an earlier one stopped.
    func copyData(from input: FileDescriptor, to output: FileDescriptor, size: off_t,
                  sourcePath: String, destinationPath: String) throws(NspawnError) -> TreeCopier.DataMethod {
        let context = "cannot copy '\(sourcePath)' to '\(destinationPath)'"
        let remember = options.oneFileSystem
        if options.reflink && !unsupported.contains(.reflink) {
            if nspawnctl_ficlone(output.rawValue, input.rawValue) == 0 { return .reflink }
            let cause = Errno.last
            // Not this file system, not across these two, or not this kind of file: copy instead.
            guard Self.meansUnsupported(cause) else { throw .system(context, cause) }
            if remember && cause != .invalidArgument { unsupported.insert(.reflink) }
        }
        if options.kernelCopy {
            for (method, call) in [(TreeCopier.DataMethod.copyFileRange, nspawnctl_copy_file_range), (.sendfile, nspawnctl_sendfile)]
            where !unsupported.contains(method) {
                var copiedAny = false
                while true {
                    let copied = call(input.rawValue, output.rawValue, 1 << 30)
                    if copied > 0 { copiedAny = true; continue }
                    // Some file systems answer 0 at once for files that have data: read them instead.
                    if copied == 0 { if copiedAny { return method }; break }
                    let cause = Errno.last
                    if cause == .interrupted { continue }
                    guard Self.meansUnsupported(cause) else { throw .system(context, cause) }
                    // EINVAL can be about this one file (a swap file, say); the rest are not.
                    if remember && cause != .invalidArgument { unsupported.insert(method) }
                    break
                }
            }
        }
        // O_NONBLOCK does not apply to a regular file's reads (copyFile checked it is one).
        do throws(Errno) { try input.pump(to: output, bufferSize: 256 * 1024) } catch { throw .system(context, error) }
        return .readWrite
    }

    static func meansUnsupported(_ errno: Errno) -> Bool {
        switch errno {
        case .notSupported, .noFunction, .invalidArgument, .improperLink, .badFileDescriptor, .notSupportedOnSocket,
             .inappropriateIOCTLForDevice, .textFileBusy:
            true
        default:
            false
        }
    }
}
