import ArgumentParser
import NspawnAPI
import NspawnKit

struct Rename: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "rename", abstract: "Rename a stopped machine's image.")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Current name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "New name.", transform: parseMachineName)
    var newName: MachineName

    func run() async throws {
        try await output.service.rename(name, RenameRequest(name: newName.rawValue))
        if output.json { printOut(Renderer.json(ActionResult(name: newName.rawValue, result: "renamed from \(name)"))) }
    }
}

struct Clone: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(commandName: "clone", abstract: "Copy an image under a new name.")

    @OptionGroup var output: OutputOptions

    @Flag(help: "Make the copy read-only.")
    var readOnly = false

    @Argument(help: "Source image.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "Name of the copy.", transform: parseMachineName)
    var newName: MachineName

    func run() async throws {
        try await output.service.clone(name, CloneRequest(name: newName.rawValue, readOnly: readOnly ? true : nil))
        if output.json { printOut(Renderer.json(ActionResult(name: newName.rawValue, result: "cloned from \(name)"))) }
    }
}

struct ReadOnly: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "read-only",
        abstract: "Mark an image read-only, or writable again with 'no'.")

    @OptionGroup var output: OutputOptions

    @Argument(help: "Image name.", transform: parseMachineName)
    var name: MachineName

    @Argument(help: "yes or no.", transform: parseBool)
    var value: Bool = true

    func run() async throws {
        try await output.service.setReadOnly(name, ReadOnlyRequest(readOnly: value))
        if output.json { printOut(Renderer.json(ActionResult(name: name.rawValue, result: value ? "read-only" : "writable"))) }
    }
}
