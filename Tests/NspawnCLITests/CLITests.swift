import ArgumentParser
import Foundation
import Testing
@testable import NspawnCLI
@testable import NspawnKit

@Suite struct InvocationTests {
    static let cases: [([String], [String])] = [
        (["/usr/local/bin/nspawn-ls"], ["ls"]),
        (["nspawn-start", "web"], ["start", "web"]),
        (["/usr/bin/nspawn-stop", "web", "--timeout", "5"], ["stop", "web", "--timeout", "5"]),
        (["nspawn-del", "web"], ["remove", "web"]),
        (["/usr/local/bin/nspawnctl", "status", "web"], ["status", "web"]),
        (["./some-other-name", "ls"], ["ls"]),
    ]

    @Test(arguments: cases)
    func argv0SelectsTheCommand(_ argv: [String], _ expected: [String]) {
        #expect(Invocation.resolve(argv).arguments == expected)
    }

    @Test func aliasesNameThemselvesInMessages() {
        #expect(Invocation.resolve(["/usr/bin/nspawn-stop", "x"]).programName == "nspawn-stop")
        #expect(Invocation.resolve(["/opt/nspawnctl", "ls"]).programName == "nspawnctl")
    }

    @Test func aliasedArgumentsParseToTheRightCommand() throws {
        let command = try Nspawnctl.parseAsRoot(Invocation.resolve(["nspawn-stop", "web", "--timeout", "2.5"]).arguments)
        let stop = try #require(command as? Stop)
        #expect(stop.machines.names.map(\.rawValue) == ["web"])
        #expect(stop.timeout == 2.5)
        #expect(try Nspawnctl.parseAsRoot(Invocation.resolve(["nspawn-del", "x"]).arguments) is Remove)
    }
}

@Suite struct ParsingTests {
    static let badArguments: [[String]] = [
        ["start", "../etc"], ["stop", "web", "--timeout", "-1"], ["stop", "web", "--timeout", "soon"],
        ["kill", "--signal", "NOPE", "web"], ["read-only", "web", "maybe"], ["start"], ["rename", "a"],
        ["stop", ".host"], ["kill", "--kill-whom", "everyone", "web"], ["stop", "web", "web"],
        ["resize", "web"], ["resize", "web", "--flavor", "small", "--confirm"], ["resize", "--confirm", "--revert", "web"],
        ["resize", "web", "--flavor", "small", "--confirm-after", "-5"], ["resize", "web", "--flavor", "small", "--confirm-after", "5x"],
        ["resize", "--confirm", "web", "--confirm-after", "1h"], ["hook", "bogus", "web"], ["hook", "pre-create", "web"],
        ["hook", "pre-start", "../x"],
    ]

    @Test(arguments: badArguments)
    func badInputIsRejectedBeforeAnyWork(_ arguments: [String]) {
        #expect(throws: (any Error).self) { try Nspawnctl.parseAsRoot(arguments) }
    }

    @Test func badInputMapsToTheInvalidInputExitCode() {
        do {
            _ = try Nspawnctl.parseAsRoot(["start", "bad/name"])
            Issue.record("parsed")
        } catch {
            #expect(Nspawnctl.exitCode(for: error) == .validationFailure)
            #expect(Nspawnctl.fullMessage(for: error).contains("invalid machine name 'bad/name'"))
        }
    }

    @Test func exitCodesAreDistinct() {
        let codes = ExitStatus.allCases.map(\.rawValue)
        #expect(Set(codes).count == codes.count)
        #expect(ExitStatus(NspawnError.noSuchImage("x").category) == .notFound)
        #expect(ExitStatus(NspawnError.notRunning("x").category) == .conflict)
        #expect(ExitStatus(NspawnError.alreadyExists("x").category) == .conflict)
    }

    @Test func partialFailuresKeepASharedCategory() {
        let same = PartialFailure(failures: [("a", .noSuchImage("a")), ("b", .noSuchImage("b"))])
        #expect(same.exitStatus == .notFound)
        let mixed = PartialFailure(failures: [("a", .noSuchImage("a")), ("b", .notRunning("b"))])
        #expect(mixed.exitStatus == .failure)
    }
}

@Suite struct RendererTests {
    @Test func tableAlignsColumnsWithoutTrailingBlanks() {
        let text = Renderer.table(headers: ["NAME", "STATE"], rows: [["a", "running"], ["longer-name", "stopped"]])
        #expect(text == """
            NAME         STATE
            a            running
            longer-name  stopped
            """)
    }

    @Test func listShowsEveryColumn() {
        let text = Renderer.listTable([
            MachineSummary(name: "web", state: .running, os: "Debian GNU/Linux 12 (bookworm)", addresses: ["10.0.0.2", "fe80::1"],
                           usage: 1_610_612_736, readOnly: false, enabled: true),
            MachineSummary(name: "bare", state: .stopped),
        ])
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0].hasPrefix("NAME"))
        for header in Renderer.listHeaders { #expect(lines[0].contains(header)) }
        #expect(lines[1].contains("10.0.0.2,fe80::1") && lines[1].contains("1.5G") && lines[1].hasSuffix("yes"))
        #expect(lines[2].split(separator: " ", omittingEmptySubsequences: true) == ["bare", "stopped", "-", "-", "-", "-", "-", "no"])
    }

    static let sizes: [(UInt64, String)] = [
        (0, "0B"), (1023, "1023B"), (1024, "1.0K"), (1536, "1.5K"), (10_485_760, "10.0M"), (314_572_800, "300M"),
    ]

    @Test(arguments: sizes)
    func sizesUseBinaryUnits(_ bytes: UInt64, _ text: String) {
        #expect(Renderer.humanSize(bytes) == text)
    }

    @Test func jsonIsSortedSnakeCase() {
        let json = Renderer.json(MachineSummary(name: "web", state: .running, readOnly: true, machineClass: "container"))
        #expect(json.contains("\"machine_class\" : \"container\""))
        #expect(json.contains("\"read_only\" : true"))
        let keys = json.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.hasPrefix("\"") ? String(t.split(separator: "\"")[0]) : nil
        }
        #expect(keys == keys.sorted())
    }
}

@Suite struct GuestCommandTests {
    @Test func execTakesTheCommandAfterTheTerminatorUntouched() throws {
        let command = try Nspawnctl.parseAsRoot(["exec", "web", "-u", "alice", "-e", "A=1", "-e", "B=2", "-w", "/tmp", "-it",
                                                 "--", "ls", "-la", "--user", "--", "x"])
        let exec = try #require(command as? Exec)
        #expect(exec.name.rawValue == "web")
        #expect(exec.command == ["ls", "-la", "--user", "--", "x"])
        #expect(exec.spec.user == "alice" && exec.spec.environment == ["A=1", "B=2"] && exec.spec.workingDirectory == "/tmp")
        #expect(exec.spec.interactive && exec.spec.tty)
    }

    @Test func execWithoutTtyHasNoTerminal() throws {
        let exec = try #require(try Nspawnctl.parseAsRoot(["exec", "web", "--", "true"]) as? Exec)
        #expect(!exec.spec.tty && !exec.spec.interactive && exec.spec.terminal == nil && exec.spec.size == nil)
    }

    static let badExec: [[String]] = [
        ["exec", "web"], ["exec", "web", "--"], ["exec", "bad/name", "--", "true"], ["exec", "web", "-e", "NOPE", "--", "true"],
        ["exec", "web", "-w", "relative", "--", "true"], ["exec", "web", "--bogus", "--", "true"], ["shell"], ["shell", "a", "b"],
    ]

    @Test(arguments: badExec)
    func badUsageIsRejected(_ arguments: [String]) {
        #expect(throws: (any Error).self) { try Nspawnctl.parseAsRoot(arguments) }
        #expect(GuestCommand.isGuestCommand(arguments))
    }

    @Test func shellIsAnInteractiveTerminalWithoutCommand() throws {
        let shell = try #require(try Nspawnctl.parseAsRoot(["shell", "web", "--user", "1000"]) as? Shell)
        #expect(shell.spec.command.isEmpty && shell.spec.tty && shell.spec.interactive && shell.spec.user == "1000")
    }

    @Test func ownFailuresCannotBeMistakenForTheCommands() {
        #expect(GuestCommand.exitStatus(for: .notRunning("web")) == 5)
        // The same machine through nspawnd: its 409 comes back as a conflict.
        #expect(GuestCommand.exitStatus(for: .remote(.conflict, message: "machine 'web' is not running", busError: nil)) == 5)
        #expect(GuestCommand.exitStatus(for: .remote(.permissionDenied, message: "x", busError: nil)) == 125)
        #expect(GuestCommand.exitStatus(for: .noSuchImage("web")) == 125)
        #expect(GuestCommand.exitStatus(for: .invalidArgument("x")) == 125)
        #expect(GuestCommand.exitStatus(for: .system("x", .permissionDenied)) == 125)
        #expect(!GuestCommand.isGuestCommand(["ls"]) && !GuestCommand.isGuestCommand([]))
        #expect(GuestCommand.isGuestCommand(Invocation.resolve(["nspawnctl", "--api", "exec", "web", "--", "ls"]).arguments))
    }
}

@Suite struct StartupCostTests {
    /// A command without a `commandName` is named through `String(describing:)` of its type,
    /// which scans every protocol conformance in the binary on each run: about 4 ms of
    /// `nspawnctl start` went there.
    @Test func everySubcommandNamesItself() {
        var names: [String] = []
        var unnamed: [String] = []
        for command in Nspawnctl.configuration.subcommands {
            let configuration = command.configuration
            if let name = configuration.commandName { names.append(name) } else { unnamed.append("\(command)") }
        }
        #expect(unnamed.isEmpty, "\(unnamed)")
        #expect(Set(names).count == names.count)
        #expect(names.contains("snapshot-remove") && names.contains("copy-to") && names.contains("ls"))
    }
}

@Suite struct ProgressBarTests {
    @Test func anOCIImportShowsItsLayer() {
        var progress = ImportProgress(phase: .extract, bytes: 512 << 10, totalBytes: 1 << 20, entries: 7, bytesPerSecond: 1_048_576,
                                      etaSeconds: 0.5, elapsedSeconds: 0.5)
        #expect(!ProgressDisplay.bar(progress).contains("layer"))
        progress.layer = 2
        progress.layers = 3
        let bar = ProgressDisplay.bar(progress)
        #expect(bar.hasPrefix("extract    layer 2/3 [###############---------------] 50%"), "\(bar)")
    }
}
