import ArgumentParser
import NspawnAPI
import NspawnKit

struct Rebuild: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Replace a machine's root with a fresh copy of its image, keeping the machine.",
        discussion: """
            The name, settings, flavor, exposure, boot-time enablement and machine-id stay; everything \
            else in the root is replaced. The image is the one recorded by 'create' unless --image names \
            another. The new root is swapped in atomically. A running machine is stopped, rebuilt and \
            started again.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Option(help: "The image to copy (default: the one the machine was created from).", transform: parseMachineName)
    var image: MachineName?

    @Option(help: "Seconds to wait for a running machine's clean shutdown (default 90, at most 86400).", transform: parseSeconds)
    var timeout: Double?

    @Flag(help: "Pull the image's OCI reference again first, when its digest has moved (an image imported from docker:// or oci:).")
    var pull = false

    func run() async throws {
        let request = RebuildRequest(image: image?.rawValue, timeout: timeout, pull: pull ? true : nil)
        try request.validate()
        let result = try await output.service.rebuild(name, request)
        if output.json {
            printOut(Renderer.json(result))
        } else {
            let pulled = result.pulled.map { $0 ? ", pulled \(result.manifestDigest ?? "a new manifest") first" : ", its image was current (\(result.manifestDigest ?? ""))" } ?? ""
            printOut("\(name): rebuilt from \(result.image) (\(result.method))" + pulled + (result.restarted ? ", started again" : ""))
        }
    }
}
