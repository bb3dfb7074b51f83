import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Applies setup steps to a root, touching files only through `ContainedRoot`.
struct SetupRunner {
    let name: MachineName
    let root: Directory
    let rootPath: String
    let counters: ImportCounters

    func run(_ steps: [SetupStep]) throws(NspawnError) {
        let files = ContainedRoot(root: root)
        for step in steps {
            if counters.isCancelled { throw .cancelled("import of '\(name)' cancelled") }
            do throws(NspawnError) {
                try apply(step, files: files)
            } catch {
                throw error.within("setting up '\(name)': \(step)")
            }
        }
    }

    private func text(_ path: String, files: ContainedRoot) throws(NspawnError) -> String? {
        do {
            return try files.read(path).map { String(decoding: $0, as: UTF8.self) }
        } catch {
            throw .system("cannot read \(path)", error)
        }
    }

    private func write(_ path: String, _ text: String, files: ContainedRoot, mode: mode_t = 0o644) throws(NspawnError) {
        do { try files.write(path, Array(text.utf8), mode: mode) } catch { throw .system("cannot write \(path)", error) }
    }

    private func apply(_ step: SetupStep, files: ContainedRoot) throws(NspawnError) {
        switch step {
        case .prependLine(let path, let line):
            let old = try text(path, files: files) ?? ""
            if old.split(separator: "\n").contains(where: { $0 == line }) { return }
            try write(path, line + "\n" + old, files: files)
        case .commentOut(let path, let key):
            guard let old = try text(path, files: files) else { throw .failed("\(path) does not exist") }
            let lines = old.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                let word = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "=" }).first
                return word.map(String.init) == key ? "#" + line : String(line)
            }
            try write(path, lines.joined(separator: "\n"), files: files)
        case .appendLineIfExists(let path, let line):
            guard let old = try text(path, files: files) else { return }
            if old.split(separator: "\n").contains(where: { $0 == line }) { return }
            try write(path, old + (old.isEmpty || old.hasSuffix("\n") ? "" : "\n") + line + "\n", files: files)
        case .setHostname:
            try write("/etc/hostname", name.rawValue + "\n", files: files)
        case .emptyMachineID:
            try write("/etc/machine-id", "", files: files, mode: 0o444)
        case .run(let argv):
            let command = [
                "systemd-nspawn", "--quiet", "--register=no", "--pipe", "--private-network",
                "--resolv-conf=off", "--timezone=off", "--link-journal=no",
                "--machine=\(name)", "--directory=\(rootPath)", "--",
            ] + argv
            let (termination, output) = try ChildProcess.run(command)
            guard termination.succeeded else {
                throw .failed("\(termination): \(output.split(separator: "\n").suffix(5).joined(separator: "; "))")
            }
        }
    }
}
