import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import NspawnKit

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print machine-readable JSON on stdout (and errors as JSON on stderr).")
    var json = false

    @Flag(help: "Go through nspawnd (/run/nspawnd/nspawnd.sock, or $NSPAWND_SOCKET); the default when not root.")
    var api = false

    /// nspawnd for callers who are not root (or ask for it); the library directly for root, so
    /// the daemon is never required.
    var machines: any MachineService {
        api || geteuid() != 0 ? APIClient() : MachineManager()
    }
}

/// A machine name argument, validated before any bus call.
func parseMachineName(_ text: String) throws -> MachineName {
    try MachineName(text)
}

func parseSeconds(_ text: String) throws -> Duration {
    guard let seconds = Double(text), seconds.isFinite, seconds >= 0, seconds <= 86_400 * 365 else {
        throw NspawnError.invalidArgument("invalid timeout '\(text)': expected seconds between 0 and 31536000")
    }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

func parseBool(_ text: String) throws -> Bool {
    switch text.lowercased() {
    case "1", "yes", "y", "true", "t", "on": return true
    case "0", "no", "n", "false", "f", "off": return false
    default: throw NspawnError.invalidArgument("invalid boolean '\(text)': expected yes or no")
    }
}

/// The result of an action on one machine, as `--json` prints it.
struct ActionResult: Encodable {
    var name: String
    var result: String
}

/// Runs `body` for every name concurrently and reports every failure, not just the first.
func fanOut(_ names: [MachineName], _ body: @escaping @Sendable (MachineName) async throws -> Void) async throws {
    let failures = await withTaskGroup(of: (String, NspawnError?).self) { group in
        for name in names {
            group.addTask {
                do {
                    try await body(name)
                    return (name.rawValue, nil)
                } catch let error as NspawnError {
                    return (name.rawValue, error)
                } catch {
                    return (name.rawValue, NspawnError.failed("machine '\(name)': \(error)"))
                }
            }
        }
        var failures: [(name: String, error: NspawnError)] = []
        for await (name, error) in group {
            if let error { failures.append((name, error)) }
        }
        return failures
    }
    if !failures.isEmpty {
        // Report in the order the names were given.
        let order = Dictionary(names.enumerated().map { ($1.rawValue, $0) }, uniquingKeysWith: { a, _ in a })
        throw PartialFailure(failures: failures.sorted { (order[$0.name] ?? 0) < (order[$1.name] ?? 0) })
    }
}

/// One or more machine names, validated before any work; a name given twice would race with itself.
struct MachineNames: ParsableArguments {
    @Argument(help: "Machine names.", transform: parseMachineName)
    var names: [MachineName] = []

    func validate() throws {
        if names.isEmpty { throw ValidationError("give at least one machine name") }
        var seen = Set<MachineName>()
        for name in names where !seen.insert(name).inserted {
            throw ValidationError("machine '\(name)' is named more than once")
        }
    }
}

/// Runs an action on every named machine and, with --json, prints one result per name.
func runAction(
    on machines: MachineNames, output: OutputOptions, result: String,
    _ body: @escaping @Sendable (MachineName) async throws -> Void
) async throws {
    try await fanOut(machines.names, body)
    if output.json {
        printOut(Renderer.json(machines.names.map { ActionResult(name: $0.rawValue, result: result) }))
    }
}
