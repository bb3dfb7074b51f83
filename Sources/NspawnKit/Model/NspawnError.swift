import SystemPackage

/// Every error NspawnKit throws. Messages are lowercase and name the machine or file.
public enum NspawnError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidName(String, reason: String)
    case invalidArgument(String)
    case noSuchMachine(String)
    case noSuchImage(String)
    case noSuchUnit(String)
    case noSuchSnapshot(machine: String, snapshot: String)
    /// No recipe of that name in any of the directories searched.
    case noSuchRecipe(String, searched: [String])
    /// A tag, image or platform an OCI source or an image server does not have; the message says which.
    case noSuchSourceImage(String)
    /// A registry refused the credentials, or asked for some and none were found.
    case registryDenied(String)
    case notRunning(String)
    case notExposed(String)
    case alreadyExists(String)
    case busy(String, reason: String)
    /// A resize waits for its confirmation; another change of flavor must wait for it.
    case resizePending(String, PendingResize)
    case noPendingResize(String)
    /// The machine's file system cannot hold it to a disk limit, or the limit is below its use.
    case diskLimit(String, reason: String)
    /// A site hook (/etc/nspawnctl/hooks) failed; a `pre-` hook's failure stopped the action.
    case hookFailed(String, String)
    /// The machine's image is read-only and the request would write to it.
    case readOnly(String)
    case permissionDenied(String, cause: BusError)
    /// `result` is the job's, `unitResult` the service's own ("exit-code", "start-limit-hit", …).
    case jobFailed(unit: String, result: String, unitResult: String?)
    case timedOut(String, waitedSeconds: Double)
    /// Any other bus failure, with what we were doing.
    case bus(BusError, context: String)
    case malformedReply(String)
    /// A download failed; `reason` is curl's own message (HTTP status, connection error, …).
    case downloadFailed(url: String, reason: String)
    /// The archive is corrupt, truncated or hostile; `entry` names the offending member.
    case badArchive(source: String, entry: String?, reason: String)
    /// A checksum or OpenPGP signature did not match.
    case verificationFailed(String)
    /// Stopped on request (a signal, or the daemon's cancel); nothing was left behind.
    case cancelled(String)
    /// A failure outside the bus, described in full.
    case failed(String)
    /// A system call failed: what we were doing (lowercase, naming the file or machine) and the
    /// errno that says why. Build it with the errno of the call itself (`Errno.last`).
    case system(String, Errno)
    /// An error nspawnd or an nspawnctl child reported, with its category and message as it sent them.
    case remote(Category, message: String, busError: String?)

    /// The broad class of an error, which decides the CLI's exit code and the daemon's HTTP status.
    public enum Category: String, Sendable, Codable, CaseIterable {
        case failure
        case invalidInput = "invalid_input"
        case notFound = "not_found"
        case permissionDenied = "permission_denied"
        case conflict
        case verificationFailed = "verification_failed"
        case cancelled
        /// nspawnd cannot be reached: no socket, no host, no nspawnctl or nspawnd on the remote.
        case unreachable
        /// nspawnd speaks an API level this client does not.
        case unsupportedAPI = "unsupported_api"
    }

    public var category: Category {
        switch self {
        case .invalidName, .invalidArgument, .badArchive: .invalidInput
        case .verificationFailed: .verificationFailed
        case .cancelled: .cancelled
        case .noSuchMachine, .noSuchImage, .noSuchUnit, .noSuchSnapshot, .noSuchRecipe, .noSuchSourceImage: .notFound
        case .notRunning, .notExposed, .alreadyExists, .busy, .readOnly, .resizePending, .noPendingResize, .diskLimit: .conflict
        case .permissionDenied, .registryDenied: .permissionDenied
        case .jobFailed, .timedOut, .bus, .malformedReply, .downloadFailed, .failed, .hookFailed: .failure
        case .system(_, let errno): Self.category(of: errno)
        case .remote(let category, _, _): category
        }
    }

    /// EACCES and EPERM are a permission problem whatever the call; EEXIST and EBUSY mean another
    /// file or user holds what we wanted; anything else is a failure.
    static func category(of errno: Errno) -> Category {
        switch errno {
        case .permissionDenied, .notPermitted: .permissionDenied
        case .fileExists, .resourceBusy: .conflict
        default: .failure
        }
    }

    /// A path the caller named could not be used. A path that leads nowhere is their input's
    /// fault; anything else (permission, I/O) is the system's, and keeps its category.
    package static func unusableInput(_ context: String, _ errno: Errno) -> NspawnError {
        switch errno {
        case .noSuchFileOrDirectory, .notDirectory, .isDirectory, .tooManySymbolicLinkLevels, .fileNameTooLong:
            .invalidArgument(NspawnError.system(context, errno).description)
        default:
            .system(context, errno)
        }
    }

    /// This error as the cause of a larger step: a system error keeps its errno (and category),
    /// any other becomes a failure that tells both.
    package func within(_ context: String) -> NspawnError {
        if case .system(let inner, let errno) = self { return .system("\(context): \(inner)", errno) }
        return .failed("\(context): \(description)")
    }

    /// The bus error behind this one, if any, with its D-Bus error name intact.
    /// The D-Bus error name behind this one, also when nspawnd reported it.
    public var busErrorName: String? {
        if case .remote(_, _, let name) = self { return name }
        return busError?.name
    }

    public var busError: BusError? {
        switch self {
        case .permissionDenied(_, let cause): cause
        case .bus(let cause, _): cause
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .invalidName(let name, let reason):
            "invalid machine name '\(name.escapedForMessage)': \(reason)"
        case .invalidArgument(let message):
            message
        case .noSuchMachine(let name):
            "no machine '\(name)' is running"
        case .noSuchImage(let name):
            "no machine or image '\(name)' exists"
        case .noSuchUnit(let unit):
            "no unit '\(unit)' is known to systemd"
        case .noSuchSnapshot(let machine, let snapshot):
            "machine '\(machine)' has no snapshot '\(snapshot)'"
        case .noSuchRecipe(let name, let searched):
            "no recipe '\(name.escapedForMessage)' in \(searched.joined(separator: ", "))"
        case .readOnly(let name):
            "machine '\(name)' is read-only; make it writable first with 'nspawnctl read-only \(name) no'"
        case .notRunning(let name):
            "machine '\(name)' is not running"
        case .notExposed(let name):
            "machine '\(name)' is not exposed"
        case .alreadyExists(let name):
            "machine or image '\(name)' already exists"
        case .busy(let name, let reason):
            "machine '\(name)' is busy: \(reason)"
        case .resizePending(let name, let pending):
            "machine '\(name)' has a pending resize (\(pending.text)); confirm it with 'nspawnctl resize --confirm \(name)' or revert it with 'nspawnctl resize --revert \(name)'"
        case .noPendingResize(let name):
            "machine '\(name)' has no pending resize"
        case .diskLimit(let name, let reason):
            "cannot limit the disk space of machine '\(name)': \(reason)"
        case .hookFailed(let name, let what):
            "machine '\(name)': \(what)"
        case .permissionDenied(let what, let cause):
            "permission denied: \(what): \(cause)"
        case .jobFailed(let unit, let result, let unitResult):
            "job for \(unit) finished with result '\(result)'"
                + (unitResult.map { " (unit result '\($0)')" } ?? "")
                + "; see 'journalctl -u \(unit)'"
        case .timedOut(let what, let seconds):
            "timed out after \(seconds)s: \(what)"
        case .bus(let cause, let context):
            "\(context): \(cause)"
        case .malformedReply(let what):
            "unexpected reply from the bus: \(what)"
        case .downloadFailed(let url, let reason):
            "download of '\(url.escapedForMessage)' failed: \(reason)"
        case .badArchive(let source, let entry, let reason):
            "archive '\(source.escapedForMessage)'"
                + (entry.map { ": entry '\($0.escapedForMessage)'" } ?? "")
                + ": \(reason)"
        case .noSuchSourceImage(let message), .registryDenied(let message):
            message
        case .verificationFailed(let message), .cancelled(let message):
            message
        case .failed(let message), .remote(_, let message, _):
            message
        case .system(let context, let errno):
            "\(context): \(errno)"
        }
    }
}

extension String {
    /// Keeps control characters in hostile input from reaching a terminal raw.
    package var escapedForMessage: String {
        var out = ""
        for scalar in unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\x" + String(scalar.value, radix: 16).leftPadded(to: 2)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    public func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }

    public func rightPadded(to width: Int, with pad: Character = " ") -> String {
        count >= width ? self : self + String(repeating: pad, count: width - count)
    }
}

extension NspawnError {
    /// A cancelled import, in the one wording every route gives (the stage it stopped in is
    /// nobody's business but the importer's).
    public static func importCancelled(_ name: String) -> NspawnError {
        .cancelled("import of '\(name)' cancelled; what it wrote was removed")
    }
}
