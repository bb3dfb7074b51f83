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
    /// 128 + SIGINT, as shells report an interrupted command.
    case cancelled = 130

    init(_ category: NspawnError.Category) {
        switch category {
        case .failure: self = .failure
        case .invalidInput: self = .invalidInput
        case .notFound: self = .notFound
        case .permissionDenied: self = .permissionDenied
        case .conflict: self = .conflict
        case .verificationFailed: self = .verificationFailed
        case .cancelled: self = .cancelled
        }
    }
}
