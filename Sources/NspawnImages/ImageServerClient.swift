import NspawnKit

/// Reads a simplestreams image server: its index, then the products file it names.
struct ImageServerClient {
    let server: String
    /// The products file of a busy server is several MB; far more is not a catalog.
    static let catalogLimit = 64 << 20

    init(remote: String?) throws(NspawnError) {
        server = try ImageServerLocation.resolve(remote)
    }

    func catalog() throws(NspawnError) -> ImageServerCatalog {
        let index = try HTTPDownload.fetch("\(server)/streams/v1/index.json", limit: 1 << 20)
        let path = try ImageServerCatalog.productsPath(index: index, server: server)
        let products = try HTTPDownload.fetch("\(server)/\(path)", limit: Self.catalogLimit)
        return try ImageServerCatalog(products: products, server: server, path: path)
    }

    func resolve(_ reference: StreamReference) throws(NspawnError) -> ImageServerCatalog.Choice {
        try catalog().choose(reference, architecture: ImageServerCatalog.hostArchitecture)
    }
}

/// `nspawnctl images remote`: what an image server offers for this host.
public enum ImageServerListing {
    public static func rows(remote: String?, filter: String?) throws(NspawnError) -> [ImageServerCatalog.Row] {
        try ImageServerClient(remote: remote).catalog().rows(filter: filter)
    }
}
