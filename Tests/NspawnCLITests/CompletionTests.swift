import ArgumentParser
import Testing
@testable import NspawnCLI

/// scripts/install installs what `nspawnctl --generate-completion-script SHELL` prints; every verb a
/// person types must be offered (not `hook` and `health-check`, which systemd runs, nor
/// `receive-machine`, which `copy-machine --refresh` runs over ssh).
@Suite struct CompletionTests {
    static let verbs = Nspawnctl.configuration.subcommands.filter { $0.configuration.shouldDisplay }.map { $0._commandName }

    @Test func onlyWhatNspawnctlAndSystemdRunAreHidden() {
        #expect(Nspawnctl.configuration.subcommands.filter { !$0.configuration.shouldDisplay }.map { $0._commandName }
                == ["receive-machine", "hook", "health-check"])
    }

    /// Whether the script offers `verb` as a subcommand, in the form each shell's generator writes it.
    static func offers(_ script: String, _ verb: String, shell: CompletionShell) -> Bool {
        switch shell {
        case .bash:
            // compgen -W 'ls status start …' -- "${cur}"
            script.split(separator: "\n").contains { line in
                guard let list = line.split(separator: "compgen -W '", maxSplits: 1).dropFirst().first else { return false }
                return list.prefix { $0 != "'" }.split(separator: " ").contains(Substring(verb))
            }
        case .zsh:
            // 'ls:List machines and images together.'
            script.contains("'\(verb):")
        case .fish:
            // complete -c 'nspawnctl' -n '…' -fa 'ls' -d '…'
            script.contains("-fa '\(verb)'")
        default:
            false
        }
    }

    @Test(arguments: CompletionShell.allCases)
    func everyVerbIsOffered(_ shell: CompletionShell) throws {
        try #require(Self.verbs.count > 1)
        let script = Nspawnctl.completionScript(for: shell)
        let missing = Self.verbs.filter { !Self.offers(script, $0, shell: shell) }
        #expect(missing.isEmpty, "\(shell.rawValue) completion does not offer these verbs")
    }
}
