/// Reads an os-release file the way machined does (systemd 252 `load_env_file_pairs`), so a
/// file we read ourselves yields the same pairs as machined's GetMachineOSRelease: shell-like
/// quoting and escapes, `#`/`;` comments, the last of a repeated key wins.
enum EnvironmentFile {
    private enum State {
        case preKey, key, preValue, value, valueEscape, singleQuoteValue, doubleQuoteValue, doubleQuoteValueEscape,
             comment, commentEscape
    }

    private static func isWhitespace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
    private static func isNewline(_ c: UInt8) -> Bool { c == 0x0A || c == 0x0D }
    private static func isComment(_ c: UInt8) -> Bool { c == UInt8(ascii: "#") || c == UInt8(ascii: ";") }
    /// `SHELL_NEED_ESCAPE`: unescaped inside double quotes; any other escaped byte keeps its backslash.
    private static func needsEscape(_ c: UInt8) -> Bool {
        c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c == UInt8(ascii: "`") || c == UInt8(ascii: "$")
    }

    /// The file's pairs, or nil where machined's parse fails (a key or value that is not valid
    /// UTF-8). Like systemd, the text ends at the first NUL byte.
    static func pairs(_ bytes: [UInt8]) -> [String: String]? {
        var result: [String: String] = [:]
        var failed = false
        var key: [UInt8] = []
        var value: [UInt8] = []
        var lastKeyWhitespace: Int?
        var lastValueWhitespace: Int?
        var state = State.preKey

        func push(chompValue: Bool) {
            if let cut = lastKeyWhitespace { key.removeSubrange(cut...) }
            if chompValue, let cut = lastValueWhitespace { value.removeSubrange(cut...) }
            guard let name = validUTF8(key), let text = validUTF8(value) else {
                failed = true
                return
            }
            result[name] = text
            key = []
            value = []
        }

        for c in bytes {
            if c == 0 || failed { break }
            switch state {
            case .preKey:
                if isComment(c) {
                    state = .comment
                } else if !isWhitespace(c) {
                    state = .key
                    lastKeyWhitespace = nil
                    key.append(c)
                }
            case .key:
                if isNewline(c) {
                    state = .preKey
                    key = []
                } else if c == UInt8(ascii: "=") {
                    state = .preValue
                    lastValueWhitespace = nil
                } else {
                    if !isWhitespace(c) {
                        lastKeyWhitespace = nil
                    } else if lastKeyWhitespace == nil {
                        lastKeyWhitespace = key.count
                    }
                    key.append(c)
                }
            case .preValue:
                if isNewline(c) {
                    state = .preKey
                    push(chompValue: false)
                } else if c == UInt8(ascii: "'") {
                    state = .singleQuoteValue
                } else if c == UInt8(ascii: "\"") {
                    state = .doubleQuoteValue
                } else if c == UInt8(ascii: "\\") {
                    state = .valueEscape
                } else if !isWhitespace(c) {
                    state = .value
                    value.append(c)
                }
            case .value:
                if isNewline(c) {
                    state = .preKey
                    push(chompValue: true)
                } else if c == UInt8(ascii: "\\") {
                    state = .valueEscape
                    lastValueWhitespace = nil
                } else {
                    if !isWhitespace(c) {
                        lastValueWhitespace = nil
                    } else if lastValueWhitespace == nil {
                        lastValueWhitespace = value.count
                    }
                    value.append(c)
                }
            case .valueEscape:
                state = .value
                // An escaped newline is eaten entirely.
                if !isNewline(c) { value.append(c) }
            case .singleQuoteValue:
                if c == UInt8(ascii: "'") { state = .preValue } else { value.append(c) }
            case .doubleQuoteValue:
                if c == UInt8(ascii: "\"") {
                    state = .preValue
                } else if c == UInt8(ascii: "\\") {
                    state = .doubleQuoteValueEscape
                } else {
                    value.append(c)
                }
            case .doubleQuoteValueEscape:
                state = .doubleQuoteValue
                if needsEscape(c) {
                    value.append(c)
                } else if c != 0x0A {
                    value.append(UInt8(ascii: "\\"))
                    value.append(c)
                }
            case .comment:
                if c == UInt8(ascii: "\\") {
                    state = .commentEscape
                } else if isNewline(c) {
                    state = .preKey
                }
            case .commentEscape:
                state = .comment
            }
        }
        if failed { return nil }
        switch state {
        case .preValue, .value, .valueEscape, .singleQuoteValue, .doubleQuoteValue, .doubleQuoteValueEscape:
            push(chompValue: state == .value)
        case .preKey, .key, .comment, .commentEscape:
            break
        }
        return failed ? nil : result
    }

    /// systemd's `utf8_is_valid`: well-formed UTF-8 without surrogates or noncharacters.
    static func validUTF8(_ bytes: [UInt8]) -> String? {
        guard let text = String(validating: bytes, as: UTF8.self) else { return nil }
        if bytes.allSatisfy({ $0 < 0x80 }) { return text }
        for scalar in text.unicodeScalars {
            let v = scalar.value
            if (0xFDD0...0xFDEF).contains(v) || (v & 0xFFFE) == 0xFFFE { return nil }
        }
        return text
    }
}
