/// A systemd-style INI file (units, `.nspawn` settings) edited line by line.
///
/// Every line keeps its original text until it is changed, so comments, unknown keys, odd
/// whitespace and repeated keys survive a parse/render round trip byte for byte.
public struct UnitFileDocument: Sendable, Equatable {
    enum Line: Sendable, Equatable {
        /// `[Name]`
        case section(String, raw: String)
        /// `Key=Value`; `raw` holds the line(s) as written, continuation lines included.
        case entry(key: String, value: String, raw: String)
        /// Comments, blank lines and anything systemd would ignore.
        case other(String)
    }

    private(set) var lines: [Line]
    private var endsWithNewline: Bool

    public init() {
        lines = []
        endsWithNewline = true
    }

    /// Parses `text`. Lines before the first section header belong to the section "".
    public init(parsing text: String) {
        lines = []
        endsWithNewline = text.isEmpty || text.hasSuffix("\n")
        var physical = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if text.isEmpty || text.hasSuffix("\n") { physical.removeLast() }
        var index = 0
        while index < physical.count {
            let raw = physical[index]
            index += 1
            let trimmed = raw.trimmedWhitespace
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix(";") {
                lines.append(.other(raw))
            } else if trimmed.hasPrefix("[") && trimmed.hasSuffix("]") {
                lines.append(.section(String(trimmed.dropFirst().dropLast()), raw: raw))
            } else if let equals = trimmed.firstIndex(of: "=") {
                // An odd number of backslashes at the very end continues the line, as systemd
                // counts them; comment lines inside a continuation are skipped.
                var rawLines = [raw]
                var value = String(trimmed[trimmed.index(after: equals)...])
                var continues = endsWithEscape(raw)
                while continues, index < physical.count {
                    value = String(value.dropLast()).trimmedWhitespace
                    let next = physical[index]
                    index += 1
                    rawLines.append(next)
                    let nextTrimmed = next.trimmedWhitespace
                    if nextTrimmed.hasPrefix("#") || nextTrimmed.hasPrefix(";") { value += "\\"; continue }
                    value += " " + nextTrimmed
                    continues = endsWithEscape(next)
                }
                let key = String(trimmed[..<equals]).trimmedWhitespace
                lines.append(.entry(key: key, value: value.trimmedWhitespace, raw: rawLines.joined(separator: "\n")))
            } else {
                lines.append(.other(raw))
            }
        }
    }

    /// Whether systemd would read the line as continued: an odd run of trailing backslashes.
    private func endsWithEscape(_ line: String) -> Bool {
        line.reversed().prefix { $0 == "\\" }.count % 2 == 1
    }

    /// Whether rewriting the file would change bytes nobody asked to change: carriage returns
    /// (Swift reads "\r\n" as one character, so lines would not split) or text that is not UTF-8.
    public static func rewriteProblem(_ bytes: [UInt8]) -> String? {
        if bytes.contains(UInt8(ascii: "\r")) { return "it has carriage returns (CRLF line ends)" }
        if String(validating: bytes, as: UTF8.self) == nil { return "it is not valid UTF-8" }
        return nil
    }

    public func rendered() -> String {
        let body = lines.map { line -> String in
            switch line {
            case .section(_, let raw), .entry(_, _, let raw), .other(let raw): raw
            }
        }.joined(separator: "\n")
        if lines.isEmpty { return "" }
        return endsWithNewline ? body + "\n" : body
    }

    /// The section each line belongs to.
    private var sectionOfLine: [String] {
        var current = ""
        return lines.map { line in
            if case .section(let name, _) = line { current = name }
            return current
        }
    }

    /// All values of `key` in `section`, in file order (a section may appear more than once).
    /// An empty assignment (`Key=`) resets the list, as in systemd.
    public func values(_ section: String, _ key: String) -> [String] {
        var result: [String] = []
        for (line, lineSection) in zip(lines, sectionOfLine) {
            guard lineSection == section, case .entry(key, let value, _) = line else { continue }
            if value.isEmpty { result.removeAll() } else { result.append(value) }
        }
        return result
    }

    /// The value that counts for a single-valued key: the last one, as systemd reads it;
    /// nil when unset or reset to empty.
    public func value(_ section: String, _ key: String) -> String? {
        values(section, key).last
    }

    /// Every (section, key, value) in file order.
    public var entries: [(section: String, key: String, value: String)] {
        zip(lines, sectionOfLine).compactMap { line, section in
            guard case .entry(let key, let value, _) = line else { return nil }
            return (section, key, value)
        }
    }

    /// Makes `values` the key's only values: the first existing line is rewritten in place,
    /// further values follow it, and any other lines of the key are dropped.
    public mutating func set(_ section: String, _ key: String, to values: [String]) {
        let sections = sectionOfLine
        let positions = lines.indices.filter { sections[$0] == section && lines[$0].isEntry(key) }
        let newLines = values.map { Line.entry(key: key, value: $0, raw: "\(key)=\($0)") }
        if let first = positions.first {
            for position in positions.reversed() { lines.remove(at: position) }
            lines.insert(contentsOf: newLines, at: first)
        } else if !newLines.isEmpty {
            insertAtEndOfSection(section, newLines)
        }
    }

    public mutating func set(_ section: String, _ key: String, to value: String) {
        set(section, key, to: [value])
    }

    public mutating func remove(_ section: String, _ key: String) {
        set(section, key, to: [])
    }

    /// Appends one more value after the key's last line (or at the end of the section).
    public mutating func add(_ section: String, _ key: String, _ value: String) {
        let sections = sectionOfLine
        let line = Line.entry(key: key, value: value, raw: "\(key)=\(value)")
        if let last = lines.indices.last(where: { sections[$0] == section && lines[$0].isEntry(key) }) {
            lines.insert(line, at: last + 1)
        } else {
            insertAtEndOfSection(section, [line])
        }
    }

    private mutating func insertAtEndOfSection(_ section: String, _ newLines: [Line]) {
        let sections = sectionOfLine
        // After the section's last entry, so trailing comments and blank lines stay where they were.
        if let lastEntry = lines.indices.last(where: { sections[$0] == section && lines[$0].isAnyEntry }) {
            lines.insert(contentsOf: newLines, at: lastEntry + 1)
        } else if let header = lines.indices.last(where: { if case .section(section, _) = lines[$0] { true } else { false } }) {
            lines.insert(contentsOf: newLines, at: header + 1)
        } else {
            if !lines.isEmpty, case .other(let raw) = lines[lines.count - 1], raw.trimmedWhitespace.isEmpty {
                // A blank line already separates the new section.
            } else if !lines.isEmpty {
                lines.append(.other(""))
            }
            if !section.isEmpty { lines.append(.section(section, raw: "[\(section)]")) }
            lines.append(contentsOf: newLines)
            endsWithNewline = true
        }
    }
}

extension UnitFileDocument.Line {
    func isEntry(_ key: String) -> Bool {
        if case .entry(key, _, _) = self { return true }
        return false
    }

    var isAnyEntry: Bool {
        if case .entry = self { return true }
        return false
    }
}
