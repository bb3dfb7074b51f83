/// An OCI image's origin, and what its config asks of the machine that runs it.
public struct OCIImageInfo: Sendable, Codable, Equatable {
    /// The source as given (`oci:DIR:REF`, …).
    public var reference: String
    /// The image manifest's digest; nil for a `docker save` archive, which has none.
    public var manifestDigest: String?
    /// linux/amd64, as the spec writes it.
    public var platform: String
    public var layers: Int
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var environment: [String]
    public var workingDirectory: String?
    /// The user as the image's /etc/passwd names it.
    public var user: String?
    public var stopSignal: String?
    /// What the config holds that has no nspawn meaning, and what to do instead.
    public var unmapped: [String]
    /// Whether /etc/systemd/nspawn/NAME.nspawn was written from it (an existing one is kept
    /// unless the import replaces the image).
    public var settingsWritten: Bool

    package init(reference: String, manifestDigest: String?, platform: String, layers: Int) {
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.platform = platform
        self.layers = layers
        environment = []
        unmapped = []
        settingsWritten = false
    }

    /// The payload: Entrypoint followed by Cmd, as a container runtime runs them.
    public var command: [String] { (entrypoint ?? []) + (cmd ?? []) }

    /// The [Exec] section that runs the image as it intends: no init, its command, environment,
    /// directory, user and stop signal. A value a .nspawn file cannot hold is left out and listed.
    package mutating func settingsText() -> String {
        var lines = ["# Written by nspawnctl from the config of OCI image \(reference)"
                     + (manifestDigest.map { " (\($0))" } ?? "") + "; 'nspawnctl config' edits it.",
                     "[Exec]", "Boot=no"]
        if !command.isEmpty {
            do {
                lines.append("Parameters=" + (try quoteNspawnWords(command, what: "image command")))
            } catch {
                unmapped.append("Entrypoint/Cmd \(command): \(error.description); set Parameters= with 'nspawnctl config'")
            }
        }
        for variable in environment {
            do {
                lines.append("Environment=" + (try quoteNspawnWords([variable], what: "environment variable")))
            } catch {
                unmapped.append("Env \(variable.escapedForMessage): \(error.description)")
            }
        }
        if let workingDirectory { lines.append("WorkingDirectory=\(workingDirectory)") }
        if let user { lines.append("User=\(user)") }
        if let stopSignal { lines.append("KillSignal=\(stopSignal)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes the settings for image `name`; an existing file stays unless `replace`.
    package mutating func writeSettings(for name: MachineName, replace: Bool) throws(NspawnError) {
        let text = settingsText()
        if !replace, try AtomicFile.readBytes(name.settingsPath) != nil { return }
        try AtomicFile.write(name.settingsPath, text)
        settingsWritten = true
    }
}
