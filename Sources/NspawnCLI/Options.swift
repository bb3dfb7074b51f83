import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import NspawnAPI
import NspawnKit

package struct OutputOptions: ParsableArguments {
    @Flag(help: "Print machine-readable JSON on stdout (and errors as JSON on stderr).")
    package var json = false

    @Flag(help: "Go through nspawnd (/run/nspawnd/nspawnd.sock, or $NSPAWND_SOCKET); the default when not root.")
    package var api = false

    @Option(name: [.customShort("H"), .long], help: ArgumentHelp(
        "Run against another host's nspawnd over ssh (also $NSPAWNCTL_HOST).", valueName: "ssh://[USER@]HOST[:PORT]"))
    package var host: String?

    package init() {}

    /// How this invocation reaches the machines.
    package enum Route {
        /// The library in this process (`LocalService`).
        case direct(any NspawnService)
        case daemon(APIClient)

        /// Tests put a recorder, or a client of an in-process router, in place of the real thing.
        @TaskLocal static var override: Route?
    }

    package var route: Route {
        get throws {
            if let override = Route.override { return override }
            let host = host ?? ProcessInfo.processInfo.environment["NSPAWNCTL_HOST"].flatMap { $0.isEmpty ? nil : $0 }
            if let host {
                let connector = SSHConnector(destination: try SSHDestination(parsing: host))
                return .daemon(APIClient(transport: StreamTransport(connector: connector)))
            }
            // Root calls the library directly, so the daemon is never required.
            return api || geteuid() != 0 ? .daemon(.local()) : .direct(LocalService())
        }
    }

    /// Every verb's calls: the library in this process, or nspawnd.
    var service: any NspawnService {
        get throws {
            switch try route {
            case .direct(let service): service
            case .daemon(let client): client
            }
        }
    }
}

/// A machine name argument, validated before any bus call.
package func parseMachineName(_ text: String) throws -> MachineName {
    try MachineName(text)
}

/// A `--timeout` as a number; the request's `validate()` in the service checks its range.
func parseSeconds(_ text: String) throws -> Double {
    try StopTimeout.number(text)
}

/// A duration as systemd writes short ones: `30s`, `90m`, `24h`, `7d`, or plain seconds.
func parseDuration(_ text: String) throws -> Double {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    var digits = Substring(text)
    var factor = 1.0
    if let last = digits.last, let unit = units[last] {
        factor = unit
        digits = digits.dropLast()
    }
    guard let number = Double(digits), number.isFinite, number >= 0 else {
        throw NspawnError.invalidArgument("invalid duration '\(text.escapedForMessage)': expected a number with s, m, h or d (24h, 90m)")
    }
    return number * factor
}

func parseBool(_ text: String) throws -> Bool {
    switch text.lowercased() {
    case "1", "yes", "y", "true", "t", "on": return true
    case "0", "no", "n", "false", "f", "off": return false
    default: throw NspawnError.invalidArgument("invalid boolean '\(text)': expected yes or no")
    }
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
