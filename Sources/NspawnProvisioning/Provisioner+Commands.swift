import NspawnKit
import SystemPackage

// Commands inside a machine: run quietly or checked, waits, and each package manager's query and install.
extension Provisioner {
    struct Ran: Sendable {
        var outcome: ExitOutcome
        var errorTail: String
    }

    func runQuietly(_ name: MachineName, _ spec: ExecSpec) async throws -> Ran {
        let process = try await manager.exec(name, spec)
        defer { process.close() }
        // A read error ends the output like its end of file; the exit status still tells.
        async let drained: Void = OSThread.run { () throws(NspawnError) in try? process.output.discardToEnd() }
        let tail = try await OSThread.run { () throws(NspawnError) -> [UInt8] in
            guard let errorOutput = process.errorOutput else { return [] }
            var kept: [UInt8] = []
            try? errorOutput.forEachChunk(bufferSize: 16384) { chunk in
                kept += chunk
                if kept.count > 2048 { kept.removeFirst(kept.count - 2048) }
            }
            return kept
        }
        try await drained
        let outcome = try await OSThread.run { () throws(NspawnError) in try process.wait() }
        let text = String(decoding: tail, as: UTF8.self).trimmingWhitespace()
        return Ran(outcome: outcome, errorTail: text)
    }

    func runChecked(_ name: MachineName, _ spec: ExecSpec, label: String) async throws {
        let ran = try await runQuietly(name, spec)
        guard ran.outcome == .exited(0) else {
            let how: String
            switch ran.outcome {
            case .exited(let status): how = "exited with \(status)"
            case .signaled(let signal): how = "was killed by signal \(signal)"
            }
            let lastLine = ran.errorTail.split(separator: "\n").last.map { ": \($0)" } ?? ""
            throw NspawnError.failed("machine '\(name)': \(label) \(how)\(lastLine)")
        }
    }

    /// A machine just started may not take commands at once (its leader is still setting up).
    func waitForGuest(_ name: MachineName) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while true {
            do {
                _ = try await runQuietly(name, ExecSpec(command: ["/bin/true"]))
                return
            } catch {
                if clock.now >= deadline { throw error }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func waitFor(_ wait: WaitCondition, name: MachineName) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(wait.timeout * 1000))
        var last = ""
        while clock.now < deadline {
            if let ran = try? await runQuietly(name, ExecSpec(command: wait.command)) {
                if ran.outcome == .exited(0) { return }
                last = ran.errorTail.split(separator: "\n").last.map { ": \($0)" } ?? ""
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw NspawnError.failed("machine '\(name)': wait (\(wait.command.joined(separator: " "))) did not succeed within \(wait.timeout) s\(last)")
    }

    static func queryCommand(_ manager: String, _ package: String) -> [String] {
        switch manager {
        case "apt": ["/bin/sh", "-c", "dpkg-query -W -f='${Status}' \"$1\" 2>/dev/null | grep -q ' installed$'", "sh", package]
        case "pacman": ["pacman", "-Q", package]
        case "apk": ["apk", "info", "-e", package]
        default: ["rpm", "-q", package]
        }
    }

    static func installCommand(_ manager: String, _ packages: [String]) -> [String] {
        switch manager {
        case "apt": ["apt-get", "install", "-y", "--no-install-recommends"] + packages
        case "pacman": ["pacman", "-S", "--noconfirm", "--needed"] + packages
        case "apk": ["apk", "add"] + packages
        default: ["dnf", "install", "-y"] + packages
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
