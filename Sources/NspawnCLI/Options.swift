import ArgumentParser
import NspawnKit

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print machine-readable JSON on stdout (and errors as JSON on stderr).")
    var json = false
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

/// Rejects the same name given twice, which would race with itself.
func uniqueNames(_ names: [MachineName]) throws -> [MachineName] {
    var seen = Set<MachineName>()
    for name in names where !seen.insert(name).inserted {
        throw NspawnError.invalidArgument("machine '\(name)' is named more than once")
    }
    return names
}
