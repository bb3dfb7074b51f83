import NspawnKit

/// The documented exit codes. Scripts depend on these; keep them stable and in the README.
public enum ExitStatus: Int32, Sendable, CaseIterable {
    case success = 0
    case failure = 1
    case invalidInput = 2
    case notFound = 3
    case permissionDenied = 4
    case conflict = 5
    case verificationFailed = 6
    /// nspawnd cannot be reached: no socket, an unreachable host, nothing serving it there.
    case unreachable = 7
    /// nspawnd speaks an API level this nspawnctl does not.
    case unsupportedAPI = 8
    /// 128 + SIGINT, as shells report an interrupted command.
    case cancelled = 130

    public init(_ category: NspawnError.Category) {
        switch category {
        case .failure: self = .failure
        case .invalidInput: self = .invalidInput
        case .notFound: self = .notFound
        case .permissionDenied: self = .permissionDenied
        case .conflict: self = .conflict
        case .verificationFailed: self = .verificationFailed
        case .cancelled: self = .cancelled
        case .unreachable: self = .unreachable
        case .unsupportedAPI: self = .unsupportedAPI
        }
    }

    /// The category an exit code stands for; nil for success.
    public var category: NspawnError.Category? {
        NspawnError.Category.allCases.first { ExitStatus($0) == self }
    }
}
