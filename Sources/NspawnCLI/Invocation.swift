/// Maps the name the binary was invoked under to the arguments it stands for.
///
/// The classic shell-function names (`nspawn-ls`, `nspawn-start NAME`, …) are symlinks to
/// this binary; each expands to an `nspawnctl` command line.
public enum Invocation {
    public static let aliases: [String: [String]] = [
        "nspawn-ls": ["ls"],
        "nspawn-start": ["start"],
        "nspawn-stop": ["stop"],
        "nspawn-del": ["remove"],
        "nspawn-arch": ["bootstrap", "archlinux"],
    ]

    /// The program name to use in messages, and the arguments to parse (without argv[0]).
    public static func resolve(_ argv: [String]) -> (programName: String, arguments: [String]) {
        guard let first = argv.first else { return ("nspawnctl", []) }
        let base = first.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? first
        let rest = Array(argv.dropFirst())
        if let prefix = aliases[base] { return (base, hoistingGlobalOptions(prefix + rest)) }
        return ("nspawnctl", hoistingGlobalOptions(rest))
    }

    /// `nspawnctl --host H ls` means `nspawnctl ls --host H`: options that choose where a verb
    /// runs may come before it, as with ssh and docker. They go right after the verb, ahead of
    /// anything that takes the rest of the line (`--exec`).
    static func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
        var global: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--api" {
                global.append(argument)
                index += 1
            } else if (argument == "--host" || argument == "-H"), index + 1 < arguments.count {
                global += [argument, arguments[index + 1]]
                index += 2
            } else if argument.hasPrefix("--host=") {
                global.append(argument)
                index += 1
            } else {
                break
            }
        }
        guard !global.isEmpty, index < arguments.count else { return arguments }
        let verb = arguments[index]
        return [verb] + global + arguments[(index + 1)...]
    }
}
