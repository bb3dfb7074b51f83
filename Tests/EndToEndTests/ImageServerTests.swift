import Foundation
import Testing

/// `import NAME images:…` and `images remote` against a simplestreams server the test makes
/// inside the testbed (/var/tmp/fx-streams, served by busybox httpd on 127.0.0.1:8091): the LXC
/// layout (streams/v1/index.json, images.json, images/DISTRO/RELEASE/ARCH/VARIANT/BUILD/), an
/// older build and the newest one, a root tarball (xz) of the testbed's debootstrapped root,
/// and a product whose tarball does not match the sha256 the catalog gives.
extension EndToEndTests {
    private static let imageServer: Result<String, TestbedError> = {
        let made = try? Testbed.sh(#"""
            set -e
            www=/var/tmp/fx-streams
            base=images/debian/bookworm/amd64/default
            rm -rf $www && mkdir -p $www/streams/v1 $www/$base/20261201_05:24 $www/$base/20261203_05:24 $www/images/debian/tampered/x $www/extra/etc
            echo 20261203_05:24 > $www/extra/etc/stream-build
            tar -C /testbed/image --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
                --exclude=./usr/share/info --exclude=./var/cache/apt --exclude=./var/lib/apt/lists --numeric-owner \
                -cf - . -C $www/extra ./etc/stream-build | xz -T0 -1 > $www/$base/20261203_05:24/rootfs.tar.xz
            mkdir -p $www/old/etc && echo old > $www/old/etc/stream-build
            tar -C $www/old -cJf $www/$base/20261201_05:24/rootfs.tar.xz .
            cp $www/$base/20261201_05:24/rootfs.tar.xz $www/images/debian/tampered/x/rootfs.tar.xz
            python3 - $www <<'PY'
            import hashlib, json, os, sys
            www = sys.argv[1]
            def item(path, sha=None):
                data = open(os.path.join(www, path), "rb").read()
                return {"ftype": "root.tar.xz", "path": path, "sha256": sha or hashlib.sha256(data).hexdigest(), "size": len(data)}
            base = "images/debian/bookworm/amd64/default"
            products = {
                "debian:bookworm:amd64:default": {"aliases": "debian/bookworm/default,debian/bookworm,debian/12/default,debian/12",
                    "arch": "amd64", "os": "Debian", "release": "bookworm", "release_title": "bookworm", "variant": "default",
                    "versions": {v: {"items": {"root.tar.xz": item(f"{base}/{v}/rootfs.tar.xz")}} for v in ["20261201_05:24", "20261203_05:24"]}},
                "debian:tampered:amd64:default": {"aliases": "debian/tampered", "arch": "amd64", "os": "Debian", "release": "tampered",
                    "variant": "default", "versions": {"1": {"items": {"root.tar.xz": item("images/debian/tampered/x/rootfs.tar.xz", "0" * 64)}}}},
            }
            json.dump({"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": products},
                      open(f"{www}/streams/v1/images.json", "w"))
            json.dump({"format": "index:1.0", "index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json",
                      "format": "products:1.0", "products": list(products)}}}, open(f"{www}/streams/v1/index.json", "w"))
            PY
            systemctl -q is-active nspawnctl-fx-streams || systemd-run --quiet --collect --unit=nspawnctl-fx-streams busybox httpd -f -p 127.0.0.1:8091 -h $www
            for i in $(seq 1 50); do busybox wget -q -O /dev/null http://127.0.0.1:8091/streams/v1/index.json && break; sleep 0.1; done
            busybox wget -q -O /dev/null http://127.0.0.1:8091/streams/v1/index.json
            """#)
        guard made?.status == 0 else { return .failure(.setupFailed("the image server: \(made.map { "\($0)" } ?? "")")) }
        return .success("http://127.0.0.1:8091")
    }()

    private static func server() throws -> String { try imageServer.get() }

    @Test func anImageServerImageImportsItsNewestBuild() throws {
        let server = try Self.server()
        let name = "e2e-stream"
        try Fixture.with([name]) {
            let imported = try Testbed.nspawnctl("import", "--json", "--remote", server, name, "images:debian/12")
            #expect(imported.status == Exit.ok, "\(imported)")
            struct Result: Decodable {
                struct Stream: Decodable { var product: String; var version: String; var url: String; var sha256: String }
                var stream: Stream?
                var verified: [String]
                var source: String
                var sha256: String
            }
            let result = try decodeJSON(Result.self, from: imported.stdout)
            #expect(result.stream?.product == "debian:bookworm:amd64:default" && result.stream?.version == "20261203_05:24", "\(imported.stdout)")
            #expect(result.verified == ["sha256"] && result.sha256 == result.stream?.sha256 && result.source == "images:debian/12")
            #expect(try Testbed.sh("cat /var/lib/machines/\(name)/etc/stream-build").stdout == "20261203_05:24\n")
            // The debootstrapped root, as it went in.
            for tree in ["usr/bin", "usr/sbin", "usr/lib/systemd"] {
                let ours = try Testbed.mustSh("/nspawnctl/Tests/Fixtures/tree-list /var/lib/machines/\(name)/\(tree)").stdout
                let theirs = try Testbed.mustSh("/nspawnctl/Tests/Fixtures/tree-list /testbed/image/\(tree)").stdout
                #expect(!ours.isEmpty && ours == theirs, "\(tree)")
            }
            #expect(try Testbed.run(["machinectl", "show-image", name]).status == Exit.ok)
        }
    }

    /// The server from /etc/nspawnctl/image-server.conf: imports by alias, `images remote`
    /// lists it, nspawnd and a manifest use it.
    @Test func theConfiguredImageServerServesEveryRoute() throws {
        let server = try Self.server()
        let names = ["e2e-stream-conf", "e2e-stream-api", "e2e-stream-mf"]
        defer { _ = try? Testbed.sh("rm -f /etc/nspawnctl/image-server.conf") }
        try Fixture.with(names) {
            try Testbed.mustSh("mkdir -p /etc/nspawnctl && printf '[ImageServer]\\nURL=\(server)/\\n' >/etc/nspawnctl/image-server.conf")
            let byAlias = try Testbed.nspawnctl("import", names[0], "images:debian/bookworm")
            #expect(byAlias.status == Exit.ok && byAlias.stderr.contains("images:debian/bookworm is debian:bookworm:amd64:default version 20261203_05:24"), "\(byAlias)")
            let listed = try Testbed.nspawnctl("images", "remote")
            #expect(listed.status == Exit.ok && listed.stdout.contains("debian") && listed.stdout.contains("20261203_05:24")
                    && listed.stdout.contains("debian/12"), "\(listed)")
            let filtered = try Testbed.nspawnctl("images", "remote", "--json", "tampered")
            struct Row: Decodable { var distribution: String; var release: String; var variant: String; var architecture: String; var version: String }
            let rows = try decodeJSON([Row].self, from: filtered.stdout)
            #expect(rows.map { "\($0.distribution) \($0.release) \($0.variant) \($0.architecture) \($0.version)" } == ["debian tampered default amd64 1"], "\(filtered)")
            let viaAPI = try Testbed.nspawnctl("import", "--api", names[1], "images:debian/12")
            #expect(viaAPI.status == Exit.ok, "\(viaAPI)")
            #expect(try Testbed.sh("cat /var/lib/machines/\(names[1])/etc/stream-build").stdout == "20261203_05:24\n")
            let manifest = "name: e2e-stream\nmachines:\n  \(names[2]):\n    image: { stream: debian/12 }\n    state: stopped\n"
            try manifest.write(toFile: "\(Testbed.hostShareDirectory)/e2e-stream.yaml", atomically: true, encoding: .utf8)
            let applied = try Testbed.nspawnctl("apply", "-f", "/testbed/share/e2e-stream.yaml")
            #expect(applied.status == Exit.ok, "\(applied)")
            #expect(try Testbed.sh("cat /var/lib/machines/\(names[2])/etc/stream-build").stdout == "20261203_05:24\n")
        }
    }

    @Test(arguments: [
        ("images:debian/tampered", Int32(6), "checksum mismatch"),
        ("images:debian/13", Exit.notFound, "images:debian/13 on http://127.0.0.1:8091: no such image for amd64; debian has: bookworm, tampered"),
        ("images:debian/12/cloud", Exit.notFound, "no such image for amd64"),
        ("images:debian", Exit.invalidInput, "expected images:DISTRIBUTION/RELEASE[/VARIANT]"),
    ])
    func whatTheImageServerCannotGiveIsRefusedAndLeavesNothing(_ source: String, _ code: Int32, _ message: String) throws {
        let server = try Self.server()
        let name = "e2e-stream-bad"
        try Fixture.with([name]) {
            let refused = try Testbed.nspawnctl("import", "--remote", server, name, source)
            #expect(refused.status == code && refused.stderr.contains(message), "\(source): \(refused)")
            try Self.expectNoImportLeftovers(name)
        }
        let unreachable = try Testbed.nspawnctl("import", "--remote", "http://127.0.0.1:1", name, "images:debian/12")
        #expect(unreachable.status == 1 && unreachable.stderr.contains("127.0.0.1:1/streams/v1/index.json"), "\(unreachable)")
    }
}
