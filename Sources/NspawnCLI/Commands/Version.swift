import ArgumentParser
import NspawnAPI
import NspawnKit

/// `docker version`'s shape: this client, and through --api or --host the daemon that answers.
struct Version: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "Show nspawnctl's version and, through nspawnd (--api, --host), the daemon's.")

    @OptionGroup var output: OutputOptions

    struct Versions: Encodable {
        var client: VersionInfo
        var server: VersionInfo?
        /// Where the server answered: "nspawnd at /run/nspawnd/nspawnd.sock", "nspawnd on HOST".
        var serverAddress: String?
    }

    func run() async throws {
        var versions = Versions(client: VersionInfo(name: "nspawnctl"))
        if case .daemon(let client) = try output.route {
            versions.server = try await client.version()
            versions.serverAddress = client.transport.peerName
        }
        if output.json {
            printOut(Renderer.json(versions))
            return
        }
        printOut("client: \(versions.client.name) \(versions.client.version) (API \(versions.client.api))")
        if let server = versions.server {
            printOut("server: \(server.name) \(server.version) (API \(server.api))" + (versions.serverAddress.map { ", \($0)" } ?? ""))
        }
    }
}
