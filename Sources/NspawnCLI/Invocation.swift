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
        if let prefix = aliases[base] { return (base, prefix + rest) }
        return ("nspawnctl", rest)
    }
}
