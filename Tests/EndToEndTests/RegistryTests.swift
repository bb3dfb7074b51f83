import Foundation
import Testing

/// `import NAME docker://…` against real registries (Tests/Fixtures/start-registries: Debian's
/// docker-registry in the testbed's network, plain on :5000 and TLS with htpasswd on :5443),
/// filled by skopeo with the images of make-oci-images.
extension EndToEndTests {
    private static let registries: Result<String, TestbedError> = {
        guard (try? ociFixture()) != nil, let testbed = Testbed.name else { return .failure(.setupFailed("make-oci-images")) }
        let script = Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/start-registries").path
        guard let started = try? Testbed.runLocal([script, testbed, Testbed.hostShareDirectory]), started.status == 0 else {
            return .failure(.setupFailed("Tests/Fixtures/start-registries"))
        }
        // The plain registry is opted in by name; the TLS one is trusted per test.
        guard (try? Testbed.sh("mkdir -p /etc/nspawnctl/registries && printf '[Registry]\\nPlainHTTP=yes\\n' >/etc/nspawnctl/registries/127.0.0.1:5000.conf"))?.status == 0 else {
            return .failure(.setupFailed("registries.conf"))
        }
        return .success("\(Testbed.hostShareDirectory)/registry")
    }()

    private static func registryDirectory() throws -> String { try registries.get() }

    private static let plain = "docker://127.0.0.1:5000/nspawnctl"

    @Test(arguments: [
        ("layered", "layered", 3),
        ("layered@DIGEST", "layered", 3),
        ("zstd", "layered", 3),
        ("multi", "base", 1),
    ])
    func aRegistryImagePullsAsUmociUnpacksIt(_ repository: String, _ expected: String, _ layers: Int) throws {
        let directory = try Self.registryDirectory()
        let digest = try String(contentsOfFile: "\(directory)/layered.digest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let reference = "\(Self.plain)/\(repository.replacingOccurrences(of: "DIGEST", with: digest))"
        let name = "e2e-reg-tree"
        try Fixture.with([name]) {
            let imported = try Testbed.nspawnctl("import", "--json", name, reference)
            #expect(imported.status == Exit.ok, "\(reference): \(imported)")
            guard imported.status == Exit.ok else { return }
            struct Result: Decodable {
                struct Image: Decodable { var reference: String; var manifestDigest: String; var layers: Int; var settingsWritten: Bool }
                var image: Image?
                var verified: [String]
            }
            let result = try decodeJSON(Result.self, from: imported.stdout)
            #expect(result.image?.layers == layers && result.image?.settingsWritten == true && result.verified == ["digests"], "\(imported.stdout)")
            #expect(result.image?.reference == (repository.contains("@") ? reference : "\(reference):latest"))
            // Progress names the layer being applied.
            #expect(imported.stderr.contains("\"layer\":\(layers),\"layers\":\(layers)"), "\(imported.stderr)")
            if expected == "layered" && repository != "zstd" { #expect(result.image?.manifestDigest == digest) }
            let ours = try Self.treeList("\(Testbed.hostMachinesDirectory)/\(name)")
            let theirs = try Self.treeList("\(Testbed.hostShareDirectory)/oci/\(expected).rootfs")
            #expect(ours == theirs, "\(reference): the trees differ")
            // The config ran through the same mapping as any OCI source.
            #expect(try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn").stdout.contains("\nParameters=/bin/httpd -f -p 8080 -h /www\n"))
        }
    }

    /// `import --force` of the same reference pulls again only when the tag now names another
    /// manifest; machinectl sees the replaced image.
    @Test func aRegistryImageIsPulledAgainOnlyWhenItsDigestMoved() throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-moving"
        let reference = "\(Self.plain)/moving:latest"
        try Fixture.with([name]) {
            try Self.push("oci:\(Testbed.hostShareDirectory)/oci/layout:base", to: "127.0.0.1:5000/nspawnctl/moving:latest")
            #expect(try Testbed.nspawnctl("import", name, reference).status == Exit.ok)
            let again = try Testbed.nspawnctl("import", "--force", name, reference)
            #expect(again.status == Exit.ok && again.stderr.contains("nothing changed"), "\(again)")
            try Self.push("oci:\(Testbed.hostShareDirectory)/oci/layout:layered", to: "127.0.0.1:5000/nspawnctl/moving:latest")
            let moved = try Testbed.nspawnctl("import", "--json", "--force", name, reference)
            #expect(moved.status == Exit.ok && moved.stdout.contains("\"replaced\" : true"), "\(moved)")
            try Self.expectLayeredTree(name)
            #expect(try Testbed.run(["machinectl", "show-image", name]).status == Exit.ok)
            #expect(try Testbed.nspawnctl("status", name).stdout.contains("OCI image: \(reference) (sha256:"))
        }
    }

    /// `rebuild --pull` pulls the image a machine was created from when its tag moved, then
    /// rebuilds from it; with the tag where it was it only rebuilds. Through nspawnd too.
    @Test func rebuildPullTakesTheImagesNewDigest() throws {
        _ = try Self.registryDirectory()
        let (image, machine, plain) = ("e2e-reg-tmpl", "e2e-reg-rebuilt", "e2e-reg-plain")
        let reference = "\(Self.plain)/rebuild:latest"
        try Fixture.with([machine, image, plain]) {
            try Self.push("oci:\(Testbed.hostShareDirectory)/oci/layout:base", to: "127.0.0.1:5000/nspawnctl/rebuild:latest")
            #expect(try Testbed.nspawnctl("import", image, reference).status == Exit.ok)
            #expect(try Testbed.nspawnctl("create", machine, "--image", image).status == Exit.ok)
            struct Result: Decodable { var pulled: Bool?; var manifestDigest: String?; var image: String }
            let current = try Testbed.nspawnctl("rebuild", "--json", "--pull", machine)
            let first = try decodeJSON(Result.self, from: current.stdout)
            #expect(current.status == Exit.ok && first.pulled == false && first.image == image, "\(current)")
            #expect(try Testbed.sh("test -e /var/lib/machines/\(machine)/etc/deleteme").status == 0)
            try Self.push("oci:\(Testbed.hostShareDirectory)/oci/layout:layered", to: "127.0.0.1:5000/nspawnctl/rebuild:latest")
            let moved = try Testbed.nspawnctl("rebuild", "--api", "--json", "--pull", machine)
            let second = try decodeJSON(Result.self, from: moved.stdout)
            #expect(moved.status == Exit.ok && second.pulled == true && second.manifestDigest != first.manifestDigest, "\(moved)")
            // The machine now holds the new layers: layer 2's whiteout and addition.
            #expect(try Testbed.sh("test -e /var/lib/machines/\(machine)/etc/deleteme").status != 0)
            #expect(try Testbed.sh("cat /var/lib/machines/\(machine)/etc/added").stdout == "added in layer 2\n")
            #expect(try Testbed.nspawnctl("status", image).stdout.contains(second.manifestDigest ?? "-"))
            try Fixture.busybox(plain)
            let refused = try Testbed.nspawnctl("rebuild", "--pull", "--image", plain, machine)
            #expect(refused.status == Exit.invalidInput && refused.stderr.contains("image '\(plain)' of machine '\(machine)' was not imported from an OCI image"), "\(refused)")
        }
    }

    /// The TLS registry: refused without its CA (6), then without or with wrong credentials (4),
    /// then pulled with the right ones from $REGISTRY_AUTH_FILE.
    @Test func aPrivateRegistryNeedsItsCAAndCredentials() throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-private"
        let reference = "docker://127.0.0.1:5443/private/layered"
        let trust = "/etc/containers/certs.d/127.0.0.1:5443"
        defer { _ = try? Testbed.sh("rm -rf \(trust) /tmp/e2e-auth-*.json") }
        try Fixture.with([name]) {
            let untrusted = try Testbed.nspawnctl("import", name, reference)
            #expect(untrusted.status == 6 && untrusted.stderr.contains("tls failure") && untrusted.stderr.contains("certs.d/127.0.0.1:5443"), "\(untrusted)")
            try Self.expectNoImportLeftovers(name)
            try Testbed.mustSh("mkdir -p \(trust) && cp /testbed/share/registry/trust/ca.crt \(trust)/ca.crt")
            let anonymous = try Testbed.sh("REGISTRY_AUTH_FILE=/nonexistent nspawnctl import \(name) \(reference)")
            #expect(anonymous.status == Exit.permissionDenied && anonymous.stderr.contains("needs credentials"), "\(anonymous)")
            for (file, password) in [("wrong", "guess"), ("right", "secret")] {
                let auth = Data("tester:\(password)".utf8).base64EncodedString()
                try Testbed.mustSh("printf '{\"auths\":{\"127.0.0.1:5443\":{\"auth\":\"\(auth)\"}}}' >/tmp/e2e-auth-\(file).json")
            }
            let wrong = try Testbed.sh("REGISTRY_AUTH_FILE=/tmp/e2e-auth-wrong.json nspawnctl import \(name) \(reference)")
            #expect(wrong.status == Exit.permissionDenied && wrong.stderr.contains("refused access to private/layered with the credentials for 'tester' from /tmp/e2e-auth-wrong.json"), "\(wrong)")
            try Self.expectNoImportLeftovers(name)
            let right = try Testbed.sh("REGISTRY_AUTH_FILE=/tmp/e2e-auth-right.json nspawnctl import \(name) \(reference)")
            #expect(right.status == Exit.ok, "\(right)")
            try Self.expectLayeredTree(name)
        }
    }

    /// A registry behind a token service (the flow of Docker Hub and most public registries):
    /// an anonymous bearer token for public/, credentials for private/.
    @Test func aTokenRegistryGivesAnonymousAndAuthenticatedPulls() throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-token"
        defer { _ = try? Testbed.sh("rm -f /tmp/e2e-token-auth.json") }
        try Fixture.with([name]) {
            try Testbed.mustSh("printf '[Registry]\\nPlainHTTP=yes\\n' >/etc/nspawnctl/registries/127.0.0.1:5002.conf")
            let anonymous = try Testbed.sh("REGISTRY_AUTH_FILE=/nonexistent nspawnctl import \(name) docker://127.0.0.1:5002/public/layered")
            #expect(anonymous.status == Exit.ok, "\(anonymous)")
            try Self.expectLayeredTree(name)
            try Testbed.mustSh("nspawnctl remove \(name)")
            let refused = try Testbed.sh("REGISTRY_AUTH_FILE=/nonexistent nspawnctl import \(name) docker://127.0.0.1:5002/private/layered")
            #expect(refused.status == Exit.permissionDenied
                    && refused.stderr.contains("the token service of 127.0.0.1:5002 refused a pull of private/layered without credentials"), "\(refused)")
            try Self.expectNoImportLeftovers(name)
            let auth = Data("tester:secret".utf8).base64EncodedString()
            try Testbed.mustSh("printf '{\"auths\":{\"127.0.0.1:5002/private\":{\"auth\":\"\(auth)\"}}}' >/tmp/e2e-token-auth.json")
            let granted = try Testbed.sh("REGISTRY_AUTH_FILE=/tmp/e2e-token-auth.json nspawnctl import \(name) docker://127.0.0.1:5002/private/layered")
            #expect(granted.status == Exit.ok, "\(granted)")
        }
    }

    @Test(arguments: [
        ("nspawnctl/layered:v9", Exit.notFound, "no image 'v9' in 127.0.0.1:5000/nspawnctl/layered: MANIFEST_UNKNOWN"),
        ("nspawnctl/absent", Exit.notFound, "no image 'latest' in 127.0.0.1:5000/nspawnctl/absent"),
        ("nspawnctl/foreign", Exit.notFound, "has no image for linux/amd64; it has: linux/s390x"),
        ("nspawnctl/hostile-dotdot", Exit.invalidInput, "entry '../escaped': path contains '..'"),
        ("nspawnctl/hostile-symlink", Exit.invalidInput, "cannot extract through symlink"),
        ("nspawnctl/hostile-whiteout", Exit.invalidInput, "entry 'etc/../../.wh.victim'"),
        ("localhost:5000/nspawnctl/layered", 6, "PlainHTTP=yes there if it serves plain http"),
    ])
    func aMissingOrHostileRegistryImageIsRefusedAndLeavesNothing(_ path: String, _ code: Int32, _ message: String) throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-refused"
        let reference = path.hasPrefix("localhost") ? "docker://\(path)" : "docker://127.0.0.1:5000/\(path)"
        try Fixture.with([name]) {
            let refused = try Testbed.nspawnctl("import", name, reference)
            #expect(refused.status == code && refused.stderr.contains(message), "\(reference): \(refused)")
            try Self.expectNoImportLeftovers(name)
            #expect(try Testbed.sh("ls /escaped /victim 2>/dev/null").stdout.isEmpty)
        }
    }

    /// A layer blob altered in the registry's own storage is refused by its digest (6); one
    /// removed from it, as missing (2). The blob is put back afterwards.
    @Test func aTamperedOrMissingBlobInTheRegistryIsRefused() throws {
        let directory = try Self.registryDirectory()
        let layer = try String(contentsOfFile: "\(directory)/layered.layer2", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let blob = "\(directory)/plain/docker/registry/v2/blobs/sha256/\(layer.prefix(2))/\(layer)/data"
        let original = try Data(contentsOf: URL(fileURLWithPath: blob))
        defer { try? original.write(to: URL(fileURLWithPath: blob)) }
        let name = "e2e-reg-tampered"
        try Fixture.with([name]) {
            var altered = original
            altered[altered.count / 2] ^= 1
            try altered.write(to: URL(fileURLWithPath: blob))
            let tampered = try Testbed.nspawnctl("import", name, "\(Self.plain)/layered")
            #expect(tampered.status == 6 && tampered.stderr.contains("digest mismatch in docker://127.0.0.1:5000/nspawnctl/layered:latest layer 2/3: expected sha256:\(layer)"), "\(tampered)")
            try Self.expectNoImportLeftovers(name)
            try FileManager.default.removeItem(atPath: blob)
            let missing = try Testbed.nspawnctl("import", name, "\(Self.plain)/layered")
            #expect(missing.status == Exit.invalidInput && missing.stderr.contains("the blob is missing from the registry"), "\(missing)")
            try Self.expectNoImportLeftovers(name)
        }
    }

    /// nspawnd pulls the same way: `POST /v1/images` with `oci`, followed as an operation, and
    /// `nspawnctl --api` gives the direct path's result and exit codes.
    @Test func aRegistryImageImportsThroughNspawnd() throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-api"
        try Fixture.with([name]) {
            let started = try API.request("POST", "/v1/images", body: #"{"name":"\#(name)","oci":"\#(Self.plain)/layered"}"#)
            #expect(started.status == 202 && started.body.contains("\"source\":\"\(Self.plain)/layered\""), "\(started)")
            let done = try Testbed.sh("for i in $(seq 1 100); do machinectl show-image \(name) >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1")
            #expect(done.status == 0, "the daemon's pull made no image")
            try Self.expectLayeredTree(name)
            let again = try Testbed.nspawnctl("import", "--api", "--force", name, "\(Self.plain)/layered")
            #expect(again.status == Exit.ok && again.stderr.contains("nothing changed"), "\(again)")
            let unknown = try Testbed.nspawnctl("import", "--api", "e2e-reg-api2", "\(Self.plain)/layered:v9")
            #expect(unknown.status == Exit.notFound && unknown.stderr.contains("no image 'v9'"), "\(unknown)")
            let local = try API.request("POST", "/v1/images", body: #"{"name":"x","oci":"oci:/srv/layout"}"#)
            #expect(local.status == 400, "\(local)")
        }
        try Self.expectNoImportLeftovers("e2e-reg-api2")
    }

    /// A pull whose layers trickle in (slow-registry in front of the plain registry): SIGINT
    /// cancels it (exit 130), a kill -9 of nspawnctl ends its helper; neither leaves anything.
    @Test(arguments: ["INT", "KILL"])
    func anInterruptedPullLeavesNothing(_ signal: String) throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-stop"
        defer { _ = try? Testbed.sh("systemctl stop e2e-slow-registry") }
        try Fixture.with([name]) {
            try Self.startSlowRegistry()
            let run = try Testbed.sh("""
                nspawnctl import \(name) docker://127.0.0.1:5003/nspawnctl/layered 2>/dev/null &
                importer=$!
                for i in $(seq 1 100); do ls -A /var/lib/machines | grep -q '^\\.#import\\..*\\.\(name)$' && break; sleep 0.1; done
                sleep 0.5
                ls -A /var/lib/machines | grep -c '^\\.#import\\..*\\.\(name)$'
                kill -\(signal) $importer
                wait $importer
                echo "status $?"
                sleep 1
                """)
            #expect(run.stdout.hasPrefix("1\n"), "the staging directory existed while it pulled: \(run)")
            #expect(run.stdout.contains(signal == "INT" ? "status 130" : "status 137"), "\(run)")
            try Self.expectNoImportLeftovers(name)
            #expect(try Testbed.sh("pgrep -af '^[^ ]*nspawnctl-images import' || true").stdout.isEmpty, "the helper ended")
        }
    }

    /// Over ssh the remote host's nspawnd pulls, with that host's registry settings.
    @Test(.testbedAccounts) func aRegistryImageImportsOverSSH() throws {
        _ = try Self.registryDirectory()
        try RemoteFixtures.prepare()
        let name = "e2e-reg-ssh"
        try Fixture.with([name]) {
            let imported = try Testbed.nspawnctl("import", "--host", "ssh://root@127.0.0.1", name, "\(Self.plain)/layered")
            #expect(imported.status == Exit.ok, "\(imported)")
            try Self.expectLayeredTree(name)
        }
    }

    /// A pull through nspawnd, cancelled with DELETE /v1/operations/ID while its layers trickle
    /// in: the operation ends cancelled, and neither the image nor its staging nor the child stays.
    @Test func aPullCancelledThroughNspawndLeavesNothing() throws {
        _ = try Self.registryDirectory()
        let name = "e2e-reg-cancel"
        defer { _ = try? Testbed.sh("systemctl stop e2e-slow-registry") }
        try Fixture.with([name]) {
            try Self.startSlowRegistry()
            let started = try API.request("POST", "/v1/images", body: #"{"name":"\#(name)","oci":"docker://127.0.0.1:5003/nspawnctl/layered"}"#)
            #expect(started.status == 202, "\(started)")
            let id = try #require(Self.operationID(started.body))
            let pulling = try Testbed.sh("for i in $(seq 1 100); do ls -A /var/lib/machines | grep -q '^\\.#import\\..*\\.\(name)$' && exit 0; sleep 0.1; done; exit 1")
            #expect(pulling.status == 0, "the pull was under way")
            let cancelled = try API.request("DELETE", "/v1/operations/\(id)")
            #expect(cancelled.status == 200 && Self.field("state", in: cancelled.body) == "cancelled", "\(cancelled)")
            try Self.expectNoImportLeftovers(name)
            #expect(try Testbed.sh("pgrep -af '^[^ ]*nspawnctl-images import' || true").stdout.isEmpty, "the import child is gone")
        }
    }

    /// The tree of make-oci-images' `layered`, as umoci unpacks it.
    private static func expectLayeredTree(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try treeList("\(Testbed.hostMachinesDirectory)/\(name)") == treeList("\(Testbed.hostShareDirectory)/oci/layered.rootfs"),
                "\(name) is not umoci's unpack of layered", sourceLocation: sourceLocation)
    }

    /// slow-registry on 127.0.0.1:5003 in front of the plain registry, opted in to plain http.
    private static func startSlowRegistry() throws {
        try Testbed.mustSh("""
            printf '[Registry]\\nPlainHTTP=yes\\n' >/etc/nspawnctl/registries/127.0.0.1:5003.conf
            systemctl -q is-active e2e-slow-registry || systemd-run --quiet --collect --unit=e2e-slow-registry \\
                /nspawnctl/Tests/Fixtures/slow-registry 5000 5003 50000
            for i in $(seq 1 50); do busybox wget -q -O /dev/null http://127.0.0.1:5003/v2/ && exit 0; sleep 0.1; done
            exit 1
            """)
    }

    /// skopeo, from the host, into the testbed's network.
    private static func push(_ source: String, to target: String) throws {
        let status = try Testbed.runLocal([Testbed.repositoryRoot.appendingPathComponent("scripts/testbed").path, "status", Testbed.name ?? ""])
        guard let pid = status.stdout.split(separator: " ").drop(while: { $0 != "PID" }).dropFirst().first.map({ String($0).filter(\.isNumber) }) else {
            throw TestbedError.setupFailed("testbed status: \(status)")
        }
        let pushed = try Testbed.runLocal(["/usr/bin/nsenter", "-t", pid, "-n", "--", "skopeo", "copy", "--quiet", "--dest-tls-verify=false", source, "docker://\(target)"])
        guard pushed.status == 0 else { throw TestbedError.setupFailed("skopeo copy \(source): \(pushed)") }
    }
}
