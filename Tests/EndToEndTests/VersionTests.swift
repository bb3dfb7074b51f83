import Foundation
import Testing

extension EndToEndTests {
    /// `--version` and `version` (client, and through nspawnd the daemon) agree, from one constant.
    @Test func versionsComeFromOnePlaceAndTheDaemonReportsItsOwn() throws {
        let cli = try Testbed.nspawnctl("--version")
        #expect(cli.status == Exit.ok && cli.stdout.hasPrefix("nspawnctl "), "\(cli)")
        let version = String(cli.trimmed.dropFirst("nspawnctl ".count))
        #expect(!version.isEmpty)
        let daemon = try Testbed.run(["/usr/local/bin/nspawnd", "--version"])
        #expect(daemon.status == Exit.ok && daemon.trimmed == "nspawnd \(version)", "\(daemon)")

        let direct = try Testbed.nspawnctl("version")
        #expect(direct.status == Exit.ok && direct.trimmed == "client: nspawnctl \(version) (API v1)", "\(direct)")
        let through = try Testbed.nspawnctl("version", "--api", "--json")
        #expect(through.status == Exit.ok, "\(through)")
        struct Versions: Decodable {
            struct Info: Decodable, Equatable { var name: String; var version: String; var api: String }
            var client: Info
            var server: Info?
            var serverAddress: String?
        }
        let versions = try decodeJSON(Versions.self, from: through.stdout)
        #expect(versions.client == .init(name: "nspawnctl", version: version, api: "v1"))
        #expect(versions.server == .init(name: "nspawnd", version: version, api: "v1"))
        // Cross-checked with a client we did not write.
        let raw = try API.request("GET", "/v1/version")
        #expect(raw.status == 200 && raw.body.contains("\"version\":\"\(version)\""), "\(raw)")
        let text = try Testbed.nspawnctl("version", "--api")
        #expect(text.stdout.contains("server: nspawnd \(version) (API v1), nspawnd at /run/nspawnd/nspawnd.sock"), "\(text)")
    }
}
