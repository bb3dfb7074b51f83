import Foundation
import Testing

/// What a command run inside the testbed printed and returned.
struct CommandResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var trimmed: String { stdout.trimmingCharacters(in: .whitespacesAndNewlines) }

    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// The real systemd host booted by `scripts/testbed`, where machined and systemd run.
///
/// Everything runs through `scripts/testbed exec`, so the commands see exactly what a user
/// on a systemd host sees. `scripts/test` boots the testbed and sets `NSPAWNCTL_TESTBED`.
enum Testbed {
    static let configuredName = ProcessInfo.processInfo.environment["NSPAWNCTL_TESTBED"]
    /// Another instance for the calls made inside `withMachinesOn`.
    @TaskLocal static var instance: String?
    static var name: String? { instance ?? configuredName }
    static var isConfigured: Bool { configuredName != nil }

    /// Runs `body` against the instance whose /var/lib/machines is a loop-mounted `fileSystem`
    /// (btrfs, xfs or ext4): `scripts/test` boots it as NAME-FS next to NAME.
    static func withMachinesOn(_ fileSystem: String, _ body: () throws -> Void) throws {
        guard let configuredName else { throw TestbedError.notConfigured }
        let instance = "\(configuredName)-\(fileSystem)"
        let script = repositoryRoot.appendingPathComponent("scripts/testbed").path
        guard try runLocal([script, "status", instance]).status == 0 else {
            Issue.record("testbed '\(instance)' is not up; scripts/test boots it with: scripts/testbed up --machines-fs \(fileSystem) \(instance)")
            throw TestbedError.notConfigured
        }
        try $instance.withValue(instance) { try body() }
    }

    /// Where the host sees the current instance's /var/lib/machines (scripts/lib/testbed.sh's DATA_BASE).
    static var hostMachinesDirectory: String { "\(hostDataDirectory)/machines" }

    /// The host side of the instance's /testbed/share, for fixtures made with host tools.
    static var hostShareDirectory: String { "\(hostDataDirectory)/share" }

    private static var hostDataDirectory: String {
        let base = ProcessInfo.processInfo.environment["NSPAWNCTL_TESTBED_DATA"] ?? "/var/tmp/nspawnctl-testbed"
        return "\(base)/\(name ?? "-")"
    }

    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs `arguments` inside the testbed as root.
    @discardableResult
    static func run(_ arguments: [String], stdin: String? = nil) throws -> CommandResult {
        guard let name else { throw TestbedError.notConfigured }
        let script = repositoryRoot.appendingPathComponent("scripts/testbed").path
        return try runLocal([script, "exec", "--name", name, "--"] + arguments, stdin: stdin)
    }

    /// Runs a shell script inside the testbed.
    @discardableResult
    static func sh(_ script: String) throws -> CommandResult {
        try run(["/bin/sh", "-c", script])
    }

    /// Runs a shell script that must succeed.
    @discardableResult
    static func mustSh(_ script: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> CommandResult {
        let result = try sh(script)
        if result.status != 0 {
            Issue.record("setup step failed: \(script)\n\(result)", sourceLocation: sourceLocation)
            throw TestbedError.setupFailed(script)
        }
        return result
    }

    /// Runs the installed nspawnctl inside the testbed.
    @discardableResult
    static func nspawnctl(_ arguments: String...) throws -> CommandResult {
        try run(["nspawnctl"] + arguments)
    }

    static func runLocal(_ arguments: [String], stdin: String? = nil) throws -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("out")
        let errURL = directory.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try process.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
        }
        process.waitUntilExit()
        try out.close()
        try err.close()
        return CommandResult(
            status: process.terminationStatus,
            stdout: String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
            stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }
}

enum TestbedError: Error {
    case notConfigured
    case setupFailed(String)
}

/// Decodes JSON printed by a command.
func decodeJSON<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    decoder.dateDecodingStrategy = .iso8601
    return try decoder.decode(T.self, from: Data(text.utf8))
}
