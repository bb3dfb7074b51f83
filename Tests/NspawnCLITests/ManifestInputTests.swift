import Foundation
@testable import NspawnCLI
import NspawnKit
import Testing

/// Where a manifest comes from on the command line, and hostile ones: a clear error naming the
/// file, exit 2, and nothing read past the limit.
@Suite("Manifest input")
struct ManifestInputTests {
    static func options(_ file: String) throws -> ManifestOptions {
        let apply = try #require(try Nspawnctl.parseAsRoot(["apply", "-f", file]) as? Apply)
        return apply.manifest
    }

    @Test func aRelativePathIsMadeAbsoluteSoMessagesNameTheFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("manifest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "machines: {}\n".write(to: directory.appendingPathComponent("site.yaml"), atomically: true, encoding: .utf8)
        // Relative to the working directory, without changing it under other tests.
        let depth = FileManager.default.currentDirectoryPath.split(separator: "/").count
        let relative = String(repeating: "../", count: depth) + directory.appendingPathComponent("site.yaml").path.dropFirst()
        let (text, file) = try Self.options(relative).read()
        #expect(text == "machines: {}\n")
        #expect(file.hasPrefix("/") && file.hasSuffix("/site.yaml"))
    }

    @Test(arguments: [
        ("/nonexistent/site.yaml", "cannot read the manifest '/nonexistent/site.yaml': no such file"),
        ("/", "cannot read '/'"),
        ("/dev/zero", "'/dev/zero' is larger than 4194304 bytes"),
    ])
    func unreadableManifestsAreInvalidInputNamingTheFile(_ path: String, _ expected: String) throws {
        let error = #expect(throws: NspawnError.self) { _ = try Self.options(path).read() }
        #expect(error?.category == .invalidInput)
        #expect("\(error.map { "\($0)" } ?? "")".contains(expected), "\(String(describing: error))")
    }

    @Test func planAndApplyTakeTheirOptions() throws {
        let apply = try #require(try Nspawnctl.parseAsRoot(["apply", "-f", "x.yaml", "--prune", "--keep-going", "--json"]) as? Apply)
        #expect(apply.manifest.prune && apply.keepGoing && apply.output.json)
        let plan = try #require(try Nspawnctl.parseAsRoot(["plan", "--file", "x.yaml", "--explain", "web1"]) as? Plan)
        #expect(plan.explain?.rawValue == "web1")
        #expect(throws: (any Error).self) { try Nspawnctl.parseAsRoot(["apply"]) }
        #expect(throws: (any Error).self) { try Nspawnctl.parseAsRoot(["plan", "-f", "x.yaml", "--explain", "bad/name"]) }
    }
}
