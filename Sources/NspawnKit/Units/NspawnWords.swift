/// Quotes words for a `.nspawn` value (Parameters=, Environment=). nspawn unquotes but keeps
/// backslashes as they are, so a word is wrapped in the quote it does not contain; one with
/// both quotes, or with a backslash, cannot be written faithfully and is refused.
package func quoteNspawnWords(_ words: [String], what: String) throws(NspawnError) -> String {
    guard !words.isEmpty else { throw .invalidArgument("the \(what) is empty") }
    return try words.map { word throws(NspawnError) -> String in
        if word.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': control characters are not allowed")
        }
        if word.contains("\\") {
            throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': backslashes are not supported in .nspawn files")
        }
        if isPlainWord(word) { return word }
        if !word.contains("\"") { return "\"\(word)\"" }
        if !word.contains("'") { return "'\(word)'" }
        throw .invalidArgument("invalid \(what) '\(word.escapedForMessage)': it holds both kinds of quote")
    }.joined(separator: " ")
}

/// Splits a `.nspawn` value into words the way nspawn does for the values we write; nil for
/// unbalanced quotes or backslashes, which we never write.
package func splitNspawnWords(_ text: String) -> [String]? {
    var words: [String] = []
    var current = ""
    var inWord = false
    var quote: Character?
    for character in text {
        if character == "\\" { return nil }
        if let open = quote {
            if character == open { quote = nil } else { current.append(character) }
        } else if character == "\"" || character == "'" {
            quote = character
            inWord = true
        } else if character == " " || character == "\t" {
            if inWord { words.append(current); current = ""; inWord = false }
        } else {
            current.append(character)
            inWord = true
        }
    }
    if quote != nil { return nil }
    if inWord { words.append(current) }
    return words
}

private func isPlainWord(_ word: String) -> Bool {
    !word.isEmpty && word.unicodeScalars.allSatisfy {
        $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/._-+=,@%:".unicodeScalars.contains($0))
    }
}

/// Quotes a command line for ExecStart= in a unit file, which unescapes C-style within double
/// quotes and expands `%` specifiers and `$` variables even there.
func quoteExecStart(_ words: [String]) throws(NspawnError) -> String {
    guard !words.isEmpty else { throw .invalidArgument("the command to run is empty") }
    return try words.map { word throws(NspawnError) -> String in
        if word.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw .invalidArgument("invalid command word '\(word.escapedForMessage)': control characters are not allowed")
        }
        let literal = word.replacing("%", with: "%%").replacing("$", with: "$$")
        if isPlainWord(word) && !word.contains("%") { return literal }
        let escaped = literal.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
        return "\"\(escaped)\""
    }.joined(separator: " ")
}
