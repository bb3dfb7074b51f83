#if canImport(Glibc)
import Glibc
#endif
import NspawnKit
import SystemPackage

/// `import`, `bootstrap`, `plan` and `apply` on the direct path run in `nspawnctl-images`,
/// installed next to nspawnctl (as git runs git-VERB): only it links libcurl and libarchive,
/// whose dependency trees, and the YAML parser with Foundation and ICU (53 MB of the binary),
/// would otherwise be loaded by every nspawnctl command at start.
package enum ImagesHelper {
    package static var executableName: String { ImagesHelperProgram.executableName }
    package static var path: String { ImagesHelperProgram.path }

    /// Replaces this process with the helper, given this invocation's command line (aliases
    /// resolved, argv[0] the name messages use), so its exit status, output, signals and
    /// stdin are the command's own. Returns only by throwing.
    package static func replaceProcess(_ argv: [String] = CommandLine.arguments, for verb: String) throws -> Never {
        let (programName, arguments) = Invocation.resolve(argv)
        let path = path
        let cArguments = ([programName] + arguments).map { strdup($0) } + [nil]
        // The helper starts as a fresh nspawnctl would: with no signal blocked (the Swift
        // runtime blocks some on this thread, and a mask survives execve).
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        execve(path, cArguments, environ)
        let error = Errno(rawValue: errno)
        for argument in cArguments { free(argument) }
        if error == .noSuchFileOrDirectory {
            throw NspawnError.failed("cannot \(verb): '\(path)' is missing (\(executableName) is installed next to nspawnctl)")
        }
        throw NspawnError.failed("cannot \(verb): cannot run '\(path)': \(error)")
    }

    /// Started by nspawnctl (argv[0] is its name, not ours), the process keeps nspawnctl's
    /// name (comm), so `pkill -x nspawnctl` and `ps` see the import as before.
    package static func takeName(_ argv: [String]) {
        let name = invocation(argv).programName
        guard name != executableName, let base = argv.first?.split(separator: "/").last, base != executableName,
              let comm = try? FileDescriptor.open("/proc/self/comm", .writeOnly) else { return }
        _ = try? comm.closeAfter { try comm.writeAll(name.utf8.prefix(15)) }
    }

    /// The program name and arguments the helper was started with (see `replaceProcess`):
    /// when run under its own name, as nspawnd does, messages still say nspawnctl.
    package static func invocation(_ argv: [String]) -> (programName: String, arguments: [String]) {
        guard let first = argv.first else { return ("nspawnctl", []) }
        let base = first.split(separator: "/").last.map(String.init) ?? first
        return (base == executableName ? "nspawnctl" : base, Array(argv.dropFirst()))
    }
}
