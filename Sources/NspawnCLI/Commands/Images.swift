import ArgumentParser
import NspawnKit

/// `nspawnctl images remote`: what an image server offers, as `incus image list images:` shows it.
struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "Images offered by an image server.",
        subcommands: [RemoteImages.self])
}

struct RemoteImages: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "remote",
        abstract: "List an image server's container images (distribution, release, variant, architecture, newest build).",
        discussion: """
            The server is --remote, else URL= in /etc/nspawnctl/image-server.conf, else \
            images.linuxcontainers.org. Import one with 'nspawnctl import NAME images:DISTRIBUTION/RELEASE[/VARIANT]'.
            """)

    @OptionGroup var output: OutputOptions

    @Option(help: ArgumentHelp("The image server (a simplestreams URL).", valueName: "URL"))
    var remote: String?

    @Argument(help: "Only images whose distribution, release, variant, architecture or alias contains this word.")
    var filter: String?

    func run() async throws {
        if output.api || output.host != nil {
            throw NspawnError.invalidArgument("images remote reads the image server from this host; it has no --api or --host")
        }
        let rows = try await ImagesHelper().remoteImages(remote: remote, filter: filter).get()
        if output.json {
            printOut(Renderer.json(rows))
            return
        }
        printOut(Renderer.table(headers: ["DISTRIBUTION", "RELEASE", "VARIANT", "ARCH", "BUILD", "ALIASES"], rows: rows.map {
            [$0.distribution, $0.release, $0.variant, $0.architecture, $0.version, $0.aliases.joined(separator: ",")]
        }))
    }
}
