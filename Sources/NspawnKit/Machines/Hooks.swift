import FoundationEssentials
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// When site code runs: before and after a machine starts, stops, is created, rebuilt,
/// resized or removed (Nova's named hooks; libvirt's /etc/libvirt/hooks/qemu).
public enum HookEvent: String, Sendable, CaseIterable {
    case preStart = "pre-start", postStart = "post-start", preStop = "pre-stop", postStop = "post-stop"
    case preCreate = "pre-create", postCreate = "post-create", preRebuild = "pre-rebuild", postRebuild = "post-rebuild"
    case preResize = "pre-resize", postResize = "post-resize", preRemove = "pre-remove", postRemove = "post-remove"

    /// A failing `pre-` hook stops the action; a failing `post-` hook is only reported.
    public var stopsTheAction: Bool { rawValue.hasPrefix("pre-") }
}

/// The executables in `/etc/nspawnctl/hooks/EVENT.d/`, run one after the other in name order
/// (run-parts style: hidden names, names ending in `~` and files without an execute bit are
/// skipped). Each runs as root with a clean environment, `/` as its working directory, its
/// arguments NAME and EVENT, and `timeout` to finish (then SIGTERM to its process group, SIGKILL
/// 5 s later). A hook that is not a regular file owned by root, or is writable by group or
/// others, in a directory with the same faults, is refused and not run: it fails as a hook that
/// failed would.
public struct Hooks: Sendable {
    public static let systemDirectory = "/etc/nspawnctl/hooks"
    /// `[Hooks]` with `TimeoutSec=`; absent: 90 s, as systemd's default start timeout.
    public static let configurationFile = "/etc/nspawnctl/hooks.conf"

    public var directory: String
    public var timeout: Duration

    public init(directory: String = systemDirectory, timeout: Duration? = nil) {
        self.directory = directory
        self.timeout = timeout ?? Self.configuredTimeout()
    }

    static func configuredTimeout() -> Duration {
        guard let text = try? AtomicFile.read(configurationFile, limit: 64 * 1024),
              let value = UnitFileDocument(parsing: text).value("Hooks", "TimeoutSec"),
              let seconds = Double(value.hasSuffix("s") ? String(value.dropLast()) : value), seconds > 0, seconds <= 86400
        else { return .seconds(90) }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// What a hook learns about the machine besides its name and the event.
    public struct Context: Sendable {
        public var image: String?
        public var flavor: String?

        public init(image: String? = nil, flavor: String? = nil) {
            self.image = image
            self.flavor = flavor
        }
    }

    /// One hook that failed, with what it said last.
    public struct Failure: Sendable, Equatable {
        public var event: HookEvent
        public var hook: String
        public var reason: String
        public var output: String

        public var description: String {
            "\(event.rawValue) hook '\(hook)' \(reason)" + (output.isEmpty ? "" : ": \(output)")
        }
    }

    /// Runs the event's hooks. A `pre-` hook's failure ends the run and is thrown (the action
    /// must not happen); `post-` failures are returned after every hook has run.
    @discardableResult
    public func run(_ event: HookEvent, machine: MachineName, context: Context = Context()) throws(NspawnError) -> [Failure] {
        var failures: [Failure] = []
        for hook in try hooks(for: event) {
            guard let failure = run(hook, event: event, machine: machine, context: context) else { continue }
            if event.stopsTheAction { throw .hookFailed(machine.rawValue, failure.description) }
            failures.append(failure)
        }
        return failures
    }

    /// The event's hooks in order: paths to run, or a refusal (path and why).
    func hooks(for event: HookEvent) throws(NspawnError) -> [(path: String, refusal: String?)] {
        let path = "\(directory)/\(event.rawValue).d"
        let hooksDirectory: Directory
        do {
            hooksDirectory = try Directory(path: path)
        } catch .noSuchFileOrDirectory {
            return []
        } catch {
            throw .system("cannot open the hook directory '\(path)'", error)
        }
        let names: [String]
        let directoryStatus: stat?
        do {
            names = try hooksDirectory.entries().sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            directoryStatus = try Directory(path: directory).status("\(event.rawValue).d")
        } catch {
            throw .system("cannot read the hook directory '\(path)'", error)
        }
        let directoryFault = directoryStatus.flatMap { Self.fault(of: $0, what: "its directory") }
        var found: [(String, String?)] = []
        for name in names where !name.hasPrefix(".") && !name.hasSuffix("~") {
            // The file the name leads to (a symlink is followed, as run-parts does).
            let st: stat
            do throws(Errno) {
                guard let status = try hooksDirectory.statusFollowingLinks(name) else {
                    found.append(("\(path)/\(name)", "leads nowhere (a dangling symlink)"))
                    continue
                }
                st = status
            } catch {
                found.append(("\(path)/\(name)", "cannot be read (\(error))"))
                continue
            }
            guard st.st_mode & S_IFMT == S_IFREG else { continue }
            guard st.st_mode & 0o111 != 0 else { continue }
            found.append(("\(path)/\(name)", directoryFault ?? Self.fault(of: st, what: "it")))
        }
        return found
    }

    /// Why a file or directory with this status may not hold or be a hook; nil when it may.
    static func fault(of status: stat, what: String) -> String? {
        if status.st_uid != 0 { return "is refused: \(what) is owned by uid \(status.st_uid), not root" }
        if status.st_mode & 0o022 != 0 { return "is refused: \(what) is writable by group or others (mode \(String(status.st_mode & 0o7777, radix: 8)))" }
        return nil
    }

    /// Runs one hook to its end or its timeout; nil when it succeeded.
    func run(_ hook: (path: String, refusal: String?), event: HookEvent, machine: MachineName, context: Context) -> Failure? {
        if let refusal = hook.refusal { return Failure(event: event, hook: hook.path, reason: refusal, output: "") }
        var environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                           "NSPAWNCTL_MACHINE=\(machine.rawValue)", "NSPAWNCTL_EVENT=\(event.rawValue)", "NSPAWNCTL_HOOK=\(hook.path)"]
        if let image = context.image { environment.append("NSPAWNCTL_IMAGE=\(image)") }
        if let flavor = context.flavor { environment.append("NSPAWNCTL_FLAVOR=\(flavor)") }
        let output: MemoryFile
        let child: ChildProcess
        do throws(NspawnError) {
            output = try MemoryFile()
            child = try ChildProcess.spawnIsolated([hook.path, machine.rawValue, event.rawValue], environment: environment,
                                                   stdout: output.descriptor, stderr: output.descriptor)
        } catch {
            return Failure(event: event, hook: hook.path, reason: "could not run (\(error))", output: "")
        }
        var timedOut = false
        if !child.waitUntilExited(timeout: timeout) {
            timedOut = true
            child.signalGroup(SIGTERM)
            if !child.waitUntilExited(timeout: .seconds(5)) { child.signalGroup(SIGKILL) }
        }
        let termination = child.wait()
        // What the hook said last, a few lines, for the message.
        let said = output.text(limit: 2048).split(separator: "\n").suffix(5).joined(separator: " / ")
        if timedOut {
            return Failure(event: event, hook: hook.path, reason: "did not finish in \(timeout) and was killed", output: said)
        }
        return termination.succeeded ? nil : Failure(event: event, hook: hook.path, reason: "\(termination)", output: said)
    }
}

// MARK: - Start and stop hooks, run by systemd

extension Hooks {
    /// Where `nspawnctl hook pre-start NAME`, run by the unit, leaves its failure for the
    /// `nspawnctl start` whose job it made fail.
    static let failureDirectory = "/run/nspawnctl/hooks"

    static func failureFile(_ machine: MachineName, _ event: HookEvent) -> String {
        "\(machine.rawValue).\(event.rawValue).failed"
    }

    static func failurePath(_ machine: MachineName, _ event: HookEvent) -> String {
        "\(failureDirectory)/\(failureFile(machine, event))"
    }

    /// `nspawnctl hook EVENT NAME`, which the drop-in on systemd-nspawn@.service runs (so
    /// start and stop hooks run however the machine starts or stops). The machine's recorded
    /// image and its flavor go to the hooks.
    public func runForUnit(_ event: HookEvent, machine: MachineName) throws(NspawnError) -> [Failure] {
        var context = Context(flavor: try? MachineManager.flavorName(of: machine))
        if let root = try? Directory(path: "\(ImageStore.system.directory)/\(machine.rawValue)") {
            context.image = (try? ImageOrigin.read(from: root))??.rawValue
        }
        let record = Self.failurePath(machine, event)
        do {
            let failures = try run(event, machine: machine, context: context)
            _ = try? AtomicFile.remove(record)
            return failures
        } catch {
            if case .hookFailed(_, let what) = error { try? AtomicFile.write(record, what + "\n", mode: 0o600) }
            throw error
        }
    }

    /// A start that failed because a pre-start hook did says so, with the hook's own words.
    static func explainStart(_ error: NspawnError, machine: MachineName, since: Date) -> NspawnError {
        guard case .jobFailed = error else { return error }
        let path = failurePath(machine, .preStart)
        guard let st = try? Directory(path: failureDirectory).status(failureFile(machine, .preStart)) ?? nil,
              Double(st.st_mtim.tv_sec) >= since.timeIntervalSince1970.rounded(.down),
              let what = try? AtomicFile.read(path, limit: 8192) else { return error }
        return .hookFailed(machine.rawValue, what.trimmedWhitespace)
    }

    /// Post-hook failures: the action stands, so they are warnings on stderr (a terminal, or
    /// nspawnd's journal).
    static func report(_ failures: [Failure], machine: MachineName) {
        for failure in failures {
            _ = try? FileDescriptor.standardError.writeAll("nspawnctl: warning: machine '\(machine)': \(failure.description)\n".utf8)
        }
    }
}

extension MachineManager {
    /// Runs `body` between the machine's `pre` and `post` hooks: a failing pre hook means
    /// `body` never runs; a failing post hook is reported and the result stands.
    func hooked<T: Sendable>(_ pre: HookEvent, _ post: HookEvent, _ name: MachineName, context: Hooks.Context,
                             _ body: () async throws -> T) async throws -> T {
        let hooks = Hooks()
        try await OSThread.run { () throws(NspawnError) in _ = try hooks.run(pre, machine: name, context: context) }
        let result = try await body()
        let failures = await OSThread.run { (try? hooks.run(post, machine: name, context: context)) ?? [] }
        Hooks.report(failures, machine: name)
        return result
    }
}
