/// `{"error": {"code": "...", "message": "...", "bus_error": "..."}}`: how `nspawnctl --json`
/// and nspawnd report an error, and what the CLI's API client reads back.
public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var busError: String?

        public init(code: String, message: String, busError: String? = nil) {
            self.code = code
            self.message = message
            self.busError = busError
        }
    }

    public var error: Detail

    public init(_ error: NspawnError) {
        self.error = Detail(code: error.category.rawValue, message: error.description, busError: error.busErrorName)
    }

    public init(code: String, message: String, busError: String? = nil) {
        self.error = Detail(code: code, message: message, busError: busError)
    }

    /// The error this body reports, with its category (failure for a code this side does not
    /// know) and D-Bus error name: what nspawnd or an nspawnctl child said, as ours.
    public var nspawnError: NspawnError {
        .remote(NspawnError.Category(rawValue: error.code) ?? .failure, message: error.message, busError: error.busError)
    }
}
