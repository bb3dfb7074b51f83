import ArgumentParser
import Logging
import NspawnAPI
import NspawnDaemon
import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// nspawnd: NspawnKit over HTTP/1.1 + JSON on a unix socket. Started by nspawnd.socket, it
/// serves the socket systemd passes; started by hand, it binds --socket itself.
@main
struct Nspawnd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nspawnd",
        abstract: "Serve the nspawnctl API on a unix socket (socket-activated by nspawnd.socket).",
        version: "nspawnd \(NspawnctlVersion.current)")

    @Option(help: "Exit after this many seconds without a connection; 0 never exits.")
    var idleTimeout: Double = 60

    @Option(help: "Socket path to bind when not socket-activated.")
    var socket = "/run/nspawnd/nspawnd.sock"

    @Option(help: "Mode of a socket bound by hand, in octal.")
    var socketMode = "0660"

    @Option(help: "Seconds a client has to send a whole request; a connection silent this long is closed.")
    var requestTimeout: Double = 10

    @Option(help: "Group whose members may read and run machines.")
    var group = "nspawn"

    @Flag(help: "Log every request.")
    var verbose = false

    func validate() throws {
        guard idleTimeout.isFinite, idleTimeout >= 0, idleTimeout <= 86_400 else {
            throw ValidationError("--idle-timeout must be between 0 and 86400 seconds")
        }
        guard requestTimeout.isFinite, requestTimeout > 0, requestTimeout <= 3600 else {
            throw ValidationError("--request-timeout must be between 0 and 3600 seconds")
        }
        guard mode_t(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be an octal mode such as 0660")
        }
    }

    func run() async throws {
        let verbose = verbose
        // stderr lands in the journal when systemd runs us.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = verbose ? .debug : .info
            return handler
        }
        let logger = Logger(label: "nspawnd")
        do {
            let fd: FileDescriptor
            var metrics: [FileDescriptor] = []
            if let inherited = try ListenSocket.inherited() {
                fd = inherited.api
                metrics = inherited.metrics
            } else {
                fd = try ListenSocket.bind(path: socket, mode: mode_t(socketMode, radix: 8)!)
                logger.info("not socket-activated; listening on \(socket)")
            }
            var configuration = DaemonServer.Configuration(idleTimeout: idleTimeout > 0 ? .milliseconds(Int64(idleTimeout * 1000)) : nil)
            configuration.maximumBodySize = 64 * 1024
            configuration.requestTimeout = .milliseconds(Int64(requestTimeout * 1000))
            let server = DaemonServer(configuration: configuration,
                                      router: Router(service: LocalService(manager: MachineManager(detailsCache: MachineDetailsCache())), authorizer: Authorizer(group: group)),
                                      logger: logger)
            try await server.run(listeningSocket: fd, metricsSockets: metrics)
        } catch let error as NspawnError {
            logger.error("\(error.description)")
            throw ExitCode.failure
        }
    }
}

