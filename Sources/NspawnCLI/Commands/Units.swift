import ArgumentParser
import NspawnAPI
import NspawnKit

/// Settings flags shared by `config` and `create`; each adds to the machine's .nspawn file.
struct SettingsOptions: ParsableArguments {
    @Option(name: .customLong("bind"), help: ArgumentHelp("Bind-mount a host path (Bind=).", valueName: "SRC[:DST[:OPTS]]"))
    var binds: [String] = []

    @Option(name: .customLong("bind-ro"), help: ArgumentHelp("Bind-mount a host path read-only (BindReadOnly=).", valueName: "SRC[:DST[:OPTS]]"))
    var readOnlyBinds: [String] = []

    @Option(name: .customLong("port"), help: ArgumentHelp("Forward a host port to the container (Port=).", valueName: "[tcp|udp:]HOST[:CONTAINER]"))
    var ports: [String] = []

    @Option(help: ArgumentHelp("Networking: veth, private, host, bridge=BRIDGE or zone=ZONE.", valueName: "MODE"))
    var network: String?

    @Option(name: .customLong("env"), help: ArgumentHelp("Set an environment variable for the payload (Environment=).", valueName: "NAME=VALUE"))
    var environment: [String] = []

    @Option(help: ArgumentHelp("Apply a resource flavor (a drop-in for systemd-nspawn@NAME.service).", valueName: "FLAVOR"))
    var flavor: String?

    @Option(name: .customLong("restart"), help: ArgumentHelp("What systemd does when the machine ends: no, on-failure or always (Restart= in a drop-in).",
                                                             valueName: "POLICY"))
    var restartPolicy: String?

    @Option(help: ArgumentHelp("Wait this long before restarting (RestartSec=).", valueName: "SPAN"))
    var restartDelay: String?

    @Option(help: ArgumentHelp("Stop restarting after N starts within INTERVAL (StartLimitBurst=, StartLimitIntervalSec=).", valueName: "N/INTERVAL"))
    var restartMax: String?

    @Option(help: ArgumentHelp("Check the machine's health with this shell command inside it (/bin/sh -c), run by a host timer; exit 0 is healthy.",
                               valueName: "COMMAND"))
    var healthCmd: String?

    @Option(help: ArgumentHelp("Time between health checks (default 30s).", valueName: "SPAN"))
    var healthInterval: String?

    @Option(help: ArgumentHelp("Kill a health check still running after this long; it counts as failed (default 10s).", valueName: "SPAN"))
    var healthTimeout: String?

    @Option(help: ArgumentHelp("Failed checks in a row that make the machine unhealthy (default 3).", valueName: "N"))
    var healthRetries: Int?

    @Option(help: ArgumentHelp("Failed checks this soon after a start do not count (default 0s).", valueName: "SPAN"))
    var healthStartPeriod: String?

    @Flag(inversion: .prefixedNo, help: "Restart the machine when its health check turns unhealthy.")
    var restartOnUnhealthy: Bool?

    @Flag(help: "Remove the machine's health check.")
    var noHealth = false

    /// The flags as the API's settings change; empty lists stay absent.
    var change: SettingsChange {
        SettingsChange(bind: binds.nilIfEmpty, bindRo: readOnlyBinds.nilIfEmpty, port: ports.nilIfEmpty, network: network,
                       env: environment.nilIfEmpty, flavor: flavor, restart: restartPolicy, restartDelay: restartDelay, restartMax: restartMax,
                       healthCmd: healthCmd, healthInterval: healthInterval, healthTimeout: healthTimeout, healthStartPeriod: healthStartPeriod,
                       healthRetries: healthRetries, restartOnUnhealthy: restartOnUnhealthy, noHealth: noHealth ? true : nil)
    }
}

struct Config: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show or change a machine's settings (/etc/systemd/nspawn/NAME.nspawn).",
        discussion: """
            Without changes, shows the settings. Every value is checked before anything is written, \
            and the file is replaced atomically; lines nspawnctl does not model are kept as they are. \
            Settings apply from the machine's next start; a flavor applies at once.
            Settable keys: \(SettingKey.all.map(\.id).joined(separator: ", ")).
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Option(name: .customLong("set"), help: ArgumentHelp("Set a key, replacing all its values.", valueName: "[SECTION.]KEY=VALUE"))
    var assignments: [String] = []

    @Option(name: .customLong("unset"), help: ArgumentHelp("Remove a key.", valueName: "[SECTION.]KEY"))
    var removals: [String] = []

    @OptionGroup var settings: SettingsOptions

    @Flag(help: "Boot the image's init (Boot=yes).")
    var boot = false

    @Option(parsing: .remaining, help: ArgumentHelp("Run this command instead of booting (Boot=no, Parameters=); takes the rest of the line.", valueName: "CMD"))
    var exec: [String] = []

    var request: ConfigRequest {
        var change = settings.change
        change.set = assignments.nilIfEmpty
        change.unset = removals.nilIfEmpty
        change.boot = boot ? true : nil
        change.exec = exec.nilIfEmpty
        return change
    }

    func validate() throws {
        if boot && !exec.isEmpty { throw ValidationError("--boot and --exec exclude each other") }
    }

    // Values are checked in run(), so a bad one is invalid input (exit 2) with the key named,
    // the same as the daemon's answer.
    func run() async throws {
        try request.validate()
        let service = try output.service
        // Reading needs no more than group nspawn; only a change goes to the settings call.
        let config = request.isEmpty ? try await service.config(name) : try await service.configure(name, request)
        printOut(output.json ? Renderer.json(config) : Renderer.configText(config))
    }
}

/// `--listen` and the guest-side handler, shared by `expose` and `create`.
struct ListenOptions: ParsableArguments {
    @Option(name: .customLong("listen"), help: ArgumentHelp("Address the host listens on; the same address is used inside.", valueName: "[ADDR:]PORT"))
    var addresses: [String] = []

    @Option(help: ArgumentHelp("An existing guest service that takes the sockets (Accept=no).", valueName: "UNIT"))
    var unit: String?

    @Option(parsing: .remaining, help: ArgumentHelp("A guest command run per connection on its stdin/stdout (Accept=yes); takes the rest of the line.", valueName: "CMD"))
    var exec: [String] = []

    var isEmpty: Bool { addresses.isEmpty && unit == nil && exec.isEmpty }

    var spec: ListenSpec { ListenSpec(listen: addresses, unit: unit, exec: exec.nilIfEmpty) }
}

struct Expose: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "expose",
        abstract: "Start a machine on the first connection to a host port (socket activation).",
        discussion: """
            Writes /etc/systemd/system/systemd-nspawn@NAME.socket on the host and a matching socket unit \
            inside the machine (nspawnctl-expose.socket), then enables and starts the host's socket. \
            The machine must boot systemd. Exposing again replaces the addresses.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Flag(help: "Stop a running machine first and start it again afterwards.")
    var restart = false

    @Option(help: "Seconds to wait for a clean shutdown with --restart (default 90).", transform: parseSeconds)
    var timeout: Double?

    @OptionGroup var listen: ListenOptions

    var request: ExposeRequest {
        ExposeRequest(listen: listen.addresses, unit: listen.unit, exec: listen.exec.nilIfEmpty, restart: restart ? true : nil, timeout: timeout)
    }

    func run() async throws {
        try request.validate(for: name)
        let result = try await output.service.expose(name, request)
        if output.json {
            printOut(Renderer.json(result))
        } else {
            printOut("\(result.name): listening on \(result.addresses.joined(separator: ", ")) (\(result.socketUnit))")
        }
    }
}

struct Unexpose: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "unexpose",
        abstract: "Stop listening for a machine and remove the socket units of both sides.")

    @OptionGroup var output: OutputOptions

    @Flag(help: "Stop a running machine first (it holds the sockets) and start it again afterwards.")
    var restart = false

    @Option(help: "Seconds to wait for a clean shutdown with --restart (default 90).", transform: parseSeconds)
    var timeout: Double?

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    func run() async throws {
        try await output.service.unexpose(name, UnexposeRequest(restart: restart ? true : nil, timeout: timeout))
        if output.json { printOut(Renderer.json(ActionResult(name: name.rawValue, result: "unexposed"))) }
    }
}

struct Resize: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "resize",
        abstract: "Apply a resource flavor, live when the machine runs; confirm or revert it later.",
        discussion: """
            As in OpenStack Nova, a resize is pending until confirmed (--confirm keeps the new flavor) or \
            reverted (--revert puts the old drop-in back, live when the machine runs). A systemd timer \
            confirms it after --confirm-after (default 24h; 0 confirms at once), with no nspawnctl or \
            nspawnd running. While a resize is pending, another resize, config --flavor and rename exit 5. \
            Flavors are read from /etc/nspawnctl/flavors, then PREFIX/share/nspawnctl/flavors (NAME.flavor).
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Machine name.", transform: parseMachineName)
    var name: MachineName

    @Option(help: "Flavor name.")
    var flavor: String?

    @Option(help: ArgumentHelp("How long the resize waits to be confirmed or reverted (24h, 90m, 30s, 1d; 0: confirmed at once).",
                               valueName: "DURATION"), transform: parseDuration)
    var confirmAfter: Double?

    @Flag(help: "Keep the pending resize's flavor and forget the old one.")
    var confirm = false

    @Flag(help: "Put the flavor from before the pending resize back.")
    var revert = false

    func validate() throws {
        let modes = [flavor != nil, confirm, revert].filter { $0 }.count
        if modes != 1 { throw ValidationError("give exactly one of --flavor, --confirm and --revert") }
        if confirmAfter != nil && flavor == nil { throw ValidationError("--confirm-after goes with --flavor") }
    }

    func run() async throws {
        let service = try output.service
        let result: ResizeResult
        if confirm {
            result = try await service.confirmResize(name)
        } else if revert {
            result = try await service.revertResize(name)
        } else {
            result = try await service.resize(name, ResizeRequest(flavor: flavor ?? "", confirmAfter: confirmAfter))
        }
        if output.json { return printOut(Renderer.json(result)) }
        let live = result.limits.map { " applied live (\(Renderer.limitsText($0)))" } ?? " applies at the next start"
        switch result.action {
        case .resized:
            printOut("\(name): flavor \(result.flavor?.name ?? "none")\(live)")
            if let pending = result.pending {
                printOut("\(name): resize pending: \(pending.text); 'nspawnctl resize --confirm \(name)' keeps it, '--revert' undoes it")
            }
        case .confirmed:
            printOut("\(name): resize to \(result.flavor?.name ?? "no flavor") confirmed")
        case .reverted:
            printOut("\(name): resize reverted: flavor \(result.flavor?.name ?? "none")\(live)")
        }
    }
}

struct Create: AsyncParsableCommand, JSONCapable {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a machine from an image in one step: clone, settings, flavor, sockets, start.",
        discussion: """
            Clones IMAGE with machined, then writes the settings, the flavor's drop-in and, with --listen, \
            the socket units. If any step fails, every earlier step is undone.
            """)

    @OptionGroup var output: OutputOptions

    @Argument(help: "Name of the new machine.", transform: parseMachineName)
    var name: MachineName

    @Option(help: "The image to clone.", transform: parseMachineName)
    var image: MachineName

    @Flag(help: "Start the machine once it is created.")
    var start = false

    @OptionGroup var settings: SettingsOptions

    @OptionGroup var listen: ListenOptions

    var request: CreateRequest {
        let settings = settings.change
        return CreateRequest(name: name.rawValue, image: image.rawValue, start: start ? true : nil,
                             settings: settings.isEmpty ? nil : settings, expose: listen.isEmpty ? nil : listen.spec)
    }

    func run() async throws {
        try request.validate()
        let status = try await output.service.create(request)
        printOut(output.json ? Renderer.json(status) : Renderer.statusText(status))
    }
}

extension Array {
    /// Absent rather than empty, as the API's requests write "not given".
    var nilIfEmpty: Self? { isEmpty ? nil : self }
}
