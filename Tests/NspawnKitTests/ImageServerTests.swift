import Testing
@testable import NspawnKit

@Suite struct ImageServerTests {
    static let catalog = """
    {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": {
      "debian:bookworm:amd64:default": {"aliases": "debian/bookworm/default,debian/bookworm,debian/12/default,debian/12",
        "arch": "amd64", "os": "Debian", "release": "bookworm", "variant": "default", "versions": {
          "20261201_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "path": "images/debian/bookworm/amd64/default/20261201_05:24/rootfs.tar.xz",
                                                       "sha256": "\(String(repeating: "a", count: 64))", "size": 10}}},
          "20261203_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "path": "images/debian/bookworm/amd64/default/20261203_05:24/rootfs.tar.xz",
                                                       "sha256": "\(String(repeating: "b", count: 64))", "size": 11}}},
          "20261204_05:24": {"items": {"lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "x/lxd.tar.xz", "sha256": "\(String(repeating: "c", count: 64))"}}}}},
      "debian:bookworm:amd64:cloud": {"aliases": "debian/bookworm/cloud,debian/12/cloud", "arch": "amd64", "os": "Debian",
        "release": "bookworm", "variant": "cloud", "versions": {"20261201_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz",
        "path": "images/cloud.tar.xz", "sha256": "\(String(repeating: "d", count: 64))"}}}}},
      "debian:bookworm:arm64:default": {"aliases": "debian/12", "arch": "arm64", "os": "Debian", "release": "bookworm", "variant": "default",
        "versions": {"20261201_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "path": "images/arm.tar.xz", "sha256": "\(String(repeating: "e", count: 64))"}}}}},
      "evil:1:amd64:default": {"arch": "amd64", "os": "Evil", "release": "1", "variant": "default",
        "versions": {"1": {"items": {"root.tar.xz": {"path": "../../etc/shadow", "sha256": "\(String(repeating: "f", count: 64))"}}}}}
    }}
    """

    static func parsed() throws -> ImageServerCatalog {
        try ImageServerCatalog(products: Array(catalog.utf8), server: "http://127.0.0.1:8089", path: "streams/v1/images.json")
    }

    @Test func theNewestRootTarballOfTheNamedProductIsChosen() throws {
        for name in ["debian/12", "debian/bookworm", "Debian/Bookworm/default"] {
            let choice = try Self.parsed().choose(try StreamReference(parsing: name), architecture: "amd64")
            #expect(choice.product == "debian:bookworm:amd64:default" && choice.version == "20261203_05:24", "\(name)")
            #expect(choice.url == "http://127.0.0.1:8089/images/debian/bookworm/amd64/default/20261203_05:24/rootfs.tar.xz")
            #expect(choice.sha256 == String(repeating: "b", count: 64) && choice.size == 11)
        }
        let cloud = try Self.parsed().choose(try StreamReference(parsing: "debian/12/cloud"), architecture: "amd64")
        #expect(cloud.product == "debian:bookworm:amd64:cloud")
        let arm = try Self.parsed().choose(try StreamReference(parsing: "debian/12"), architecture: "arm64")
        #expect(arm.url.hasSuffix("/images/arm.tar.xz"))
    }

    @Test func whatTheServerDoesNotHaveIsNotFound() throws {
        for (name, message) in [("debian/13", "debian has: bookworm"), ("debian/12/minimal", "no such image for amd64"), ("alpine/3.20", "no such image")] {
            #expect {
                try Self.parsed().choose(try StreamReference(parsing: name), architecture: "amd64")
            } throws: { error in
                guard let error = error as? NspawnError, case .noSuchSourceImage(let text) = error else { return false }
                return text.contains(message) && text.contains("images:\(name)")
            }
        }
        // A path that leaves the server's tree is no tarball of it.
        #expect(throws: NspawnError.self) { try Self.parsed().choose(try StreamReference(parsing: "evil/1"), architecture: "amd64") }
    }

    @Test func theListingShowsEachProductWithItsNewestBuild() throws {
        let rows = try Self.parsed().rows(filter: nil)
        #expect(rows.map { "\($0.distribution) \($0.release) \($0.variant) \($0.architecture) \($0.version)" } == [
            "debian bookworm cloud amd64 20261201_05:24", "debian bookworm default amd64 20261203_05:24",
            "debian bookworm default arm64 20261201_05:24", "evil 1 default amd64 1",
        ])
        #expect(try Self.parsed().rows(filter: "cloud").count == 1)
        #expect(try Self.parsed().rows(filter: "ARM64").count == 1)
        #expect(try Self.parsed().rows(filter: "12").count == 3)
    }

    @Test func theIndexNamesTheProductsFile() throws {
        let index = #"{"format": "index:1.0", "index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}}"#
        #expect(try ImageServerCatalog.productsPath(index: Array(index.utf8), server: "s") == "streams/v1/images.json")
        for bad in [#"{"index": {"images": {"datatype": "image-downloads", "path": "../x.json"}}}"#, #"{"index": {}}"#, "[]"] {
            #expect(throws: NspawnError.self) { try ImageServerCatalog.productsPath(index: Array(bad.utf8), server: "s") }
        }
        #expect(throws: NspawnError.self) { try ImageServerCatalog(products: Array("nope".utf8), server: "s", path: "p") }
    }

    @Test(arguments: ["debian", "debian/12/cloud/x", "/12", "debian/", "-x/1", "debian/1 2", "debian/../x", "a/" + String(repeating: "b", count: 65)])
    func malformedStreamNamesAreRefused(_ text: String) {
        #expect(throws: NspawnError.self) { try StreamReference(parsing: text) }
    }

    @Test func sourcesAndServersAreNamedAsLXCDoes() throws {
        #expect(ImageSource("images:debian/12") == .stream("debian/12"))
        #expect(try StreamReference(parsing: "Debian/12").description == "images:debian/12")
        #expect(try StreamReference(parsing: "alpine/3.20/cloud").description == "images:alpine/3.20/cloud")
        #expect(try ImageServerLocation.resolve("http://127.0.0.1:8089/", configurationFile: "/nonexistent") == "http://127.0.0.1:8089")
        #expect(try ImageServerLocation.resolve(nil, configurationFile: "/nonexistent") == "https://images.linuxcontainers.org")
        #expect(throws: NspawnError.self) { try ImageServerLocation.resolve("ftp://x", configurationFile: "/nonexistent") }
        #expect(ImportJob.stream("images:debian/12", remote: "http://r", force: true).arguments(name: try MachineName("web"))
                == ["import", "--json", "--remote=http://r", "--force", "--", "web", "images:debian/12"])
    }
}
