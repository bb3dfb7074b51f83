import NspawnKit
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Bootstraps a named image from a recipe.
public struct Bootstrapper: Sendable {
    public var importer: ImageImporter

    public init(importer: ImageImporter = ImageImporter()) { self.importer = importer }

    public struct Request: Sendable {
        public var recipe: Recipe
        public var name: MachineName
        public var mirror: String?
        /// A local tarball in place of the download (offline use).
        public var tarball: String?
        /// Overrides of the recipe's verification.
        public var signature: String?
        public var keyring: String?
        public var checksum: String?
        public var verify = true
        public var force = false

        public init(recipe: Recipe, name: MachineName, mirror: String? = nil, tarball: String? = nil, signature: String? = nil,
                    keyring: String? = nil, checksum: String? = nil, verify: Bool = true, force: Bool = false) {
            self.recipe = recipe
            self.name = name
            self.mirror = mirror
            self.tarball = tarball
            self.signature = signature
            self.keyring = keyring
            self.checksum = checksum
            self.verify = verify
            self.force = force
        }
    }

    /// The source and options an import needs for this request; fetches and checks a signed checksum list.
    public func plan(_ request: Request) throws(NspawnError) -> (ImageSource, ImportOptions) {
        let recipe = try request.recipe.resolved(mirror: request.mirror)
        let source: ImageSource = request.tarball.map { .file($0) } ?? .url(recipe.url)
        var options = ImportOptions(checksum: request.checksum, force: request.force, setup: recipe.setup)
        guard request.verify else { return (source, options) }
        let keyring = request.keyring ?? recipe.keyring
        func requireKeyring() throws(NspawnError) -> String {
            guard let keyring else {
                throw .invalidArgument("recipe '\(recipe.name)' names no keyring; pass --keyring FILE or --no-verify")
            }
            guard access(keyring, R_OK) == 0 else {
                throw .unusableInput("recipe '\(recipe.name)' verifies with keyring '\(keyring)' (install it, pass --keyring FILE, or say --no-verify)", .last)
            }
            return keyring
        }
        if let signature = request.signature ?? (request.tarball == nil ? recipe.signatureURL : nil) {
            options.signature = signature
            options.keyring = try requireKeyring()
        } else if let list = recipe.checksumsURL, let listSignature = recipe.checksumsSignatureURL, options.checksum == nil {
            let check = SignatureCheck(signature: try SignatureCheck.load(listSignature, what: "signature"),
                                       keyring: try SignatureCheck.checkedKeyring(try requireKeyring()))
            let bytes = try SignatureCheck.load(list, what: "checksum list")
            try check.verify(bytes, what: list)
            let fileName = String(recipe.url.split(separator: "/").last ?? "")
            guard let digest = Recipe.digest(in: String(decoding: bytes, as: UTF8.self), for: fileName) else {
                throw .verificationFailed("checksum list '\(list)' has no entry for '\(fileName)'")
            }
            options.checksum = "sha256:" + digest
        } else if options.checksum == nil {
            throw .invalidArgument("nothing verifies '\(source)': give --signature (with the recipe's keyring), --checksum, or say --no-verify")
        }
        return (source, options)
    }
}
