import Foundation
import Testing

/// `import NAME oci:…`, `oci-archive:…` and `docker-archive:…` against images made by umoci and
/// skopeo (Tests/Fixtures/make-oci-images, on the host, into the testbed's /testbed/share):
/// the tree must be umoci's own unpack, and the config must run.
extension EndToEndTests {
    /// Made once per run; the path inside the testbed.
    private static let ociFixtures: Result<String, TestbedError> = {
        let script = Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/make-oci-images").path
        guard let made = try? Testbed.runLocal([script, "\(Testbed.hostShareDirectory)/oci"]), made.status == 0 else {
            return .failure(.setupFailed("Tests/Fixtures/make-oci-images"))
        }
        return .success("/testbed/share/oci")
    }()

    static func ociFixture() throws -> String {
        try ociFixtures.get()
    }

    /// tree-list of a root the host sees.
    static func treeList(_ hostPath: String) throws -> String {
        let script = Testbed.repositoryRoot.appendingPathComponent("Tests/Fixtures/tree-list").path
        let list = try Testbed.runLocal([script, hostPath])
        #expect(list.status == 0 && !list.stdout.isEmpty, "\(list)")
        return list.stdout
    }

    static func expectNoImportLeftovers(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try Testbed.run(["machinectl", "show-image", name]).status != 0, "no image", sourceLocation: sourceLocation)
        // nspawn's image locks (.lck) come and go with machines of other tests.
        let left = try Testbed.sh("ls -A /var/lib/machines | grep '^\\.#' | grep -v '\\.lck$'; ls /etc/systemd/nspawn/\(name).nspawn 2>/dev/null; true").trimmed
        #expect(left.isEmpty, "left behind: \(left)", sourceLocation: sourceLocation)
    }

    @Test(arguments: [
        ("oci:DIR/layout:layered", "layered"),
        ("oci:DIR/layout-zstd:layered", "layered"),
        ("oci-archive:DIR/layered.oci.tar:layered", "layered"),
        ("docker-archive:DIR/layered.docker.tar", "layered"),
        ("docker-archive:-", "layered"),
        ("oci:DIR/layout:multi", "base"),
    ])
    func anOCIImageImportsAsUmociUnpacksIt(_ source: String, _ expected: String) throws {
        let directory = try Self.ociFixture()
        let name = "e2e-oci-tree"
        try Fixture.with([name]) {
            let reference = source.replacingOccurrences(of: "DIR", with: directory)
            let imported = source == "docker-archive:-"
                ? try Testbed.sh("nspawnctl import --json \(name) docker-archive:- < \(directory)/layered.docker.tar")
                : try Testbed.nspawnctl("import", "--json", name, reference)
            #expect(imported.status == Exit.ok, "\(source): \(imported)")
            guard imported.status == Exit.ok else { return }
            struct Result: Decodable {
                struct Image: Decodable { var platform: String; var layers: Int; var settingsWritten: Bool }
                var image: Image?
                var verified: [String]
            }
            let result = try decodeJSON(Result.self, from: imported.stdout)
            #expect(result.image?.settingsWritten == true && result.verified == ["digests"], "\(imported.stdout)")
            #expect(result.image?.layers == (expected == "base" ? 1 : 3), "\(imported.stdout)")
            // umoci's unpack is the reference: the same paths, modes, owners, link targets and contents.
            let ours = try Self.treeList("\(Testbed.hostMachinesDirectory)/\(name)")
            let theirs = try Self.treeList("\(Testbed.hostShareDirectory)/oci/\(expected).rootfs")
            #expect(ours == theirs, "\(source): the trees differ")
            if expected == "layered" {
                // The whiteouts took effect: the one umoci wrote, and the opaque one.
                #expect(!ours.contains("etc/deleteme ") && ours.contains("etc/added ") && !ours.contains("data/old")
                        && ours.contains("data/new "))
            }
        }
    }

    @Test func anOCIImageRunsAsItsConfigSays() throws {
        let directory = try Self.ociFixture()
        let name = "e2e-oci-run"
        try Fixture.with([name]) {
            let imported = try Testbed.nspawnctl("import", name, "oci:\(directory)/layout:layered")
            #expect(imported.status == Exit.ok, "\(imported)")
            #expect(imported.stderr.contains("not applied: ExposedPorts 8080/tcp") && imported.stderr.contains("not applied: Volumes /data"),
                    "\(imported)")
            let settings = try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
            for line in ["Boot=no", "Parameters=/bin/httpd -f -p 8080 -h /www", "Environment=GREETING=hello",
                         "Environment=\"SPACED=two words\"", "WorkingDirectory=/www", "User=www", "KillSignal=SIGINT"] {
                #expect(settings.contains("\n\(line)\n"), "\(line) in \(settings)")
            }
            // Where it came from: on the root, in status and ls, and a re-import of the same digest does nothing.
            let reference = "oci:\(directory)/layout:layered"
            let attribute = try Testbed.sh("getfattr --only-values -n user.nspawnctl.oci /var/lib/machines/\(name)").stdout
            #expect(attribute.contains("\"reference\":\"\(reference)\"") && attribute.contains("\"manifest_digest\":\"sha256:"), "\(attribute)")
            #expect(try Testbed.nspawnctl("status", name).stdout.contains("OCI image: \(reference) (sha256:"))
            #expect(try Testbed.nspawnctl("ls", "--json").stdout.contains("\"reference\" : \"\(reference)\""))
            let again = try Testbed.nspawnctl("import", "--force", name, reference)
            #expect(again.status == Exit.ok && again.stderr.contains("is already \(reference) (sha256:")
                    && again.stderr.contains("nothing changed"), "\(again)")
            let started = try Testbed.nspawnctl("start", name)
            #expect(started.status == Exit.ok, "\(started)")
            // The entrypoint serves: the image's own page, from inside the machine.
            let page = try Testbed.sh("for i in $(seq 1 50); do nspawnctl exec \(name) -- wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done")
            #expect(page.stdout == "hello from an OCI image\n", "\(page)")
            #expect(try Testbed.nspawnctl("exec", name, "--", "env").stdout.contains("\nSPACED=two words\n"))
            // The payload (the machine's PID 1) runs as the image's user, in its directory.
            #expect(try Testbed.nspawnctl("exec", name, "--", "readlink", "/proc/1/cwd").trimmed == "/www")
            #expect(try Testbed.nspawnctl("exec", name, "--", "stat", "-c", "%u", "/proc/1").trimmed == "33")
            // config edits what the image's config became.
            #expect(try Testbed.nspawnctl("config", name).stdout.contains("Exec.User=www"))
            // httpd is PID 1 of its namespace and has no handler for its KillSignal=SIGINT, which the
            // kernel then drops: stop kills the leader at once instead of waiting for it.
            let stopping = ContinuousClock.now
            #expect(try Testbed.nspawnctl("stop", name).status == Exit.ok)
            let stopped = ContinuousClock.now - stopping
            #expect(stopped < .seconds(5), "stop took \(stopped)")
        }
    }

    /// A manifest's `image: { oci: … }` imports the image as the machine, with its config as
    /// settings; the manifest's own settings layer over them, and a second apply changes nothing.
    @Test func aManifestMachineComesFromAnOCIImage() throws {
        let directory = try Self.ociFixture()
        let name = "e2e-oci-mf"
        try Fixture.with([name]) {
            let manifest = """
                name: e2e-oci
                machines:
                  \(name):
                    image: { oci: "oci:\(directory)/layout:layered" }
                    settings: { Environment: ["FROM_MANIFEST=yes"] }
                    state: running
                """
            try manifest.write(toFile: "\(Testbed.hostShareDirectory)/e2e-oci.yaml", atomically: true, encoding: .utf8)
            let applied = try Testbed.nspawnctl("apply", "-f", "/testbed/share/e2e-oci.yaml")
            #expect(applied.status == Exit.ok, "\(applied)")
            let page = try Testbed.sh("for i in $(seq 1 50); do nspawnctl exec \(name) -- wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done")
            #expect(page.stdout == "hello from an OCI image\n", "\(page)")
            let settings = try Testbed.mustSh("cat /etc/systemd/nspawn/\(name).nspawn").stdout
            #expect(settings.contains("Parameters=/bin/httpd") && settings.contains("FROM_MANIFEST=yes"), "\(settings)")
            let plan = try Testbed.nspawnctl("plan", "-f", "/testbed/share/e2e-oci.yaml", "--json")
            #expect(try decodeJSON(PlanJSON.self, from: plan.stdout).changes == 0, "\(plan)")
            #expect(try Testbed.nspawnctl("stop", "--timeout", "2", name).status == Exit.ok)
        }
    }

    /// An archive on stdin that stalls after its first 100 kB: SIGINT cancels (exit 130), a
    /// kill -9 of nspawnctl ends its helper; neither leaves the scratch or staging directory.
    @Test(arguments: ["INT", "KILL"])
    func anInterruptedOCIImportLeavesNothing(_ signal: String) throws {
        let directory = try Self.ociFixture()
        let name = "e2e-oci-stop"
        try Fixture.with([name]) {
            let run = try Testbed.sh("""
                rm -f /tmp/\(name).fifo && mkfifo /tmp/\(name).fifo
                ( head -c 100000 \(directory)/layered.docker.tar; exec sleep 30 ) >/tmp/\(name).fifo 2>/dev/null &
                producer=$!
                nspawnctl import \(name) docker-archive:- </tmp/\(name).fifo 2>/dev/null &
                importer=$!
                for i in $(seq 1 50); do ls -A /var/lib/machines | grep -q '^\\.#import\\..*\\.\(name)$' && break; sleep 0.1; done
                ls -A /var/lib/machines | grep -c '^\\.#import\\..*\\.\(name)$'
                kill -\(signal) $importer
                wait $importer
                echo "status $?"
                kill $producer; rm -f /tmp/\(name).fifo
                sleep 1
                """)
            #expect(run.stdout.hasPrefix("2\n"), "the staging and scratch directories existed while it ran: \(run)")
            #expect(run.stdout.contains(signal == "INT" ? "status 130" : "status 137"), "\(run)")
            try Self.expectNoImportLeftovers(name)
        }
    }

    @Test(arguments: [
        ("oci:DIR/layout:hostile-dotdot", Exit.invalidInput, "path contains '..'"),
        ("oci:DIR/layout:hostile-symlink", Exit.invalidInput, "symlink"),
        ("oci:DIR/layout:hostile-whiteout", Exit.invalidInput, "path contains '..'"),
        ("oci:DIR/layout:foreign", Exit.notFound, "has no image for linux/"),
        ("oci:DIR/layout:nosuchtag", Exit.notFound, "no image 'nosuchtag' in"),
        ("oci:DIR/layout", Exit.notFound, "name one"),
        ("oci:DIR/tampered:layered", 6, "digest mismatch in"),
        ("oci:DIR/missing:layered", Exit.invalidInput, "the blob is missing"),
        ("oci:DIR/nowhere:layered", Exit.invalidInput, "cannot open OCI image layout"),
        ("docker-archive:DIR/layout/index.json", Exit.invalidInput, "docker-archive:"),
    ])
    func aBrokenOrHostileOCIImageIsRefusedAndLeavesNothing(_ source: String, _ code: Int32, _ message: String) throws {
        let directory = try Self.ociFixture()
        let name = "e2e-oci-bad"
        try Fixture.with([name]) {
            let refused = try Testbed.nspawnctl("import", name, source.replacingOccurrences(of: "DIR", with: directory))
            #expect(refused.status == code && refused.stderr.contains(message), "\(source): \(refused)")
            try Self.expectNoImportLeftovers(name)
        }
    }
}
