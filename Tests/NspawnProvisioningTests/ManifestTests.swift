import Foundation
import NspawnKit
@testable import NspawnProvisioning
import Testing

/// The manifest as a value: parsing, layering, refusals. No machine, no privileges.
@Suite("Manifest")
struct ManifestTests {
    /// The project's own flavors, so tests see the same names a host would.
    static let flavors = [URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("units/flavors").path]

    static func parse(_ text: String, file: String = "/srv/site.yaml") throws(NspawnError) -> Manifest {
        try ManifestParser(file: file, flavorDirectories: flavors).parse(text)
    }

    static let example = """
        defaults:
          flavor: small
          settings: { PrivateUsers: pick }
        profiles:
          web:
            expose: [ { listen: "127.0.0.1:8080", exec: [/usr/bin/cat] } ]
            settings: { Environment: ["MODE=test"] }
        machines:
          web1:
            image: { clone: debian-base }
            profiles: [web]
            flavor: medium
            settings: { Port: ["tcp:8080:80"], Environment: ["MODE=prod"] }
            enabled: true
            state: running
            files:
              - { path: /etc/motd, content: "hello\\n", mode: "0640", owner: root }
            run:
              - { command: [/bin/sh, -c, "echo ok > /var/lib/ready"], creates: /var/lib/ready }
            packages: [nginx]
            wait: { command: [/bin/true], timeout: 30 }
          db:
            image: { url: "http://127.0.0.1:8000/root.tar.zst", checksum: "sha256:\(String(repeating: "ab", count: 32))" }
        """

    @Test func theIssuesExampleLayersDefaultsThenProfilesThenTheMachine() throws {
        let manifest = try Self.parse(Self.example)
        #expect(manifest.name == "site")
        let machines = try manifest.resolved()
        #expect(machines.map(\.name.rawValue) == ["web1", "db"])
        let web = machines[0]
        #expect(web.flavor == "medium" && web.origins["flavor"] == "machine")
        #expect(web.settings.map(\.key.id) == ["Exec.PrivateUsers", "Exec.Environment", "Network.Port"])
        #expect(web.settings[1].values == ["MODE=prod"] && web.origins["settings.Exec.Environment"] == "machine")
        #expect(web.origins["settings.Exec.PrivateUsers"] == "defaults")
        #expect(web.expose == ManagedExposure(listen: ["127.0.0.1:8080"], exec: ["/usr/bin/cat"]) && web.origins["expose"] == "profile web")
        #expect(web.files == [ManagedFile(path: "/etc/motd", content: "hello\n", mode: 0o640, owner: "root", group: nil)])
        #expect(web.run.first?.creates == "/var/lib/ready" && web.packages == ["nginx"] && web.wait?.timeout == 30)
        #expect(web.enabled == true && web.state == .running)
        let db = machines[1]
        #expect(db.flavor == "small" && db.origins["flavor"] == "defaults")
        #expect(db.image == .url("http://127.0.0.1:8000/root.tar.zst", checksum: String(repeating: "ab", count: 32)))
        let explained = try Explanation.lines(manifest, machine: MachineName("web1"))
        #expect(explained.first { $0.field == "expose" }?.origin == "profile web")
        #expect(explained.first { $0.field == "flavor" }?.position == "/srv/site.yaml:12:5")
    }

    /// Every refusal names the file, the line and column, and the key, and says what is wrong.
    @Test(arguments: [
        ("machines:\n  web1:\n    flavr: small\n", "/srv/site.yaml:3:5: machines.web1.flavr: unknown key"),
        ("machines:\n  web1:\n    enabled: maybe\n", "/srv/site.yaml:3:14: machines.web1.enabled: expected true or false"),
        ("machines:\n  Bad/Name:\n    state: stopped\n", "/srv/site.yaml:2:3: machines.Bad/Name:"),
        ("machines:\n  web1:\n    settings: { Port: [\"tcp:99999:80\"] }\n", "/srv/site.yaml:3:23: machines.web1.settings.Port: invalid value"),
        ("machines:\n  web1:\n    settings: { Nope: 1 }\n", "/srv/site.yaml:3:17: machines.web1.settings.Nope: unknown setting"),
        ("machines:\n  web1:\n    profiles: [web]\n", "/srv/site.yaml:3:16: machines.web1.profiles: no profile 'web' (none are declared)"),
        ("machines:\n  web1: {}\n  web1: {}\n", "/srv/site.yaml:2:3: web1 is given twice"),
        ("machines:\n  web1:\n    run: [ { command: [/bin/true] } ]\n", "machine 'web1' has 'run', which needs state: running"),
        ("machines:\n  web1:\n    files: [ { path: etc/motd, content: x } ]\n", "/srv/site.yaml:3:22: machines.web1.files.path: 'etc/motd' is not an absolute path"),
        ("machines:\n  web1:\n    files: [ { path: /etc/motd, content: x, mode: \"999\" } ]\n", "machines.web1.files.mode: expected an octal mode"),
        ("machines:\n  web1:\n    flavor: enormous\n", "/srv/site.yaml:3:13: machines.web1.flavor: no flavor 'enormous'"),
        ("machines:\n  web1:\n    state: gone\n", "machines.web1.state: expected running, stopped or absent"),
        ("machines:\n  web1:\n    image: { clone: a, recipe: b }\n", "machines.web1.image: give exactly one of clone, recipe, url, file, oci or stream"),
        ("machines:\n  web1:\n    image: { stream: debian }\n", "machines.web1.image.stream: invalid image 'images:debian'"),
        ("machines:\n  web1:\n    image: { oci: \"oci:img:web\" }\n", "machines.web1.image.oci: 'oci:img:web' is not an OCI image: docker://REFERENCE"),
        ("machines:\n  web1:\n    image: { oci: /srv/root.tar }\n", "machines.web1.image.oci: '/srv/root.tar' is not an OCI image: docker://REFERENCE"),
        ("machines:\n  web1:\n    image: { oci: \"docker://Bad/Name\" }\n", "machines.web1.image.oci: invalid image reference 'docker://Bad/Name'"),
        ("machines:\n  web1:\n    image: { url: \"ftp://x\" }\n", "machines.web1.image.url: 'ftp://x' is not an http, https or file URL"),
        ("machines:\n  web1:\n    expose: { listen: \"127.0.0.1:70000\", exec: [/bin/cat] }\n", "/srv/site.yaml:3:13: machines.web1.expose:"),
        ("machines: [web1]\n", "/srv/site.yaml:1:11: machines: expected a mapping"),
        ("defaults: { flavor: small }\n", "/srv/site.yaml: 'machines' is missing"),
        ("", "/srv/site.yaml: the manifest is empty"),
        ("machines:\n  web1: {\n", "/srv/site.yaml:3:1: not valid YAML"),
        ("machines:\n  web1:\n    packages: [\"-rf\"]\n", "machines.web1.packages: invalid package name '-rf'"),
        ("machines:\n  web1:\n    settings: { Hostname: [a, b] }\n", "machines.web1.settings.Hostname: Exec.Hostname takes one value, not a list"),
    ])
    func refusedManifestsNameFileLineAndKey(_ text: String, _ expected: String) throws {
        let error = #expect(throws: NspawnError.self) { _ = try Self.parse(text).resolved() }
        #expect(error?.category == .invalidInput)
        #expect("\(error.map { "\($0)" } ?? "")".contains(expected), "\(error.map { "\($0)" } ?? "no error")")
    }

    @Test func anOCIImageOnTheHostIsImportedAsImportNamesIt() throws {
        let manifest = try Self.parse("machines:\n  web1:\n    image: { oci: \"oci-archive:/srv/web.tar:v2\" }\n")
        #expect(manifest.machines.first?.image == .oci("oci-archive:/srv/web.tar:v2"))
        #expect(ImportJob(.oci("oci-archive:/srv/web.tar:v2")) == .file("oci-archive:/srv/web.tar:v2", checksum: nil, signature: nil, keyring: nil, force: false))
    }

    @Test func aFileURLIsImportedAsTheFileItNames() throws {
        let hex = String(repeating: "0a", count: 32)
        let manifest = try Self.parse("machines:\n  web1:\n    image: { url: \"file:///srv/root.tar.zst\", checksum: \"sha256:\(hex)\" }\n")
        let image = try #require(manifest.machines.first?.image)
        #expect(ImportJob(image) == .file("/srv/root.tar.zst", checksum: "sha256:\(hex)", signature: nil, keyring: nil, force: false))
    }

    @Test func theManifestsNameDefaultsToTheFileAndMayBeGiven() throws {
        #expect(try Self.parse("machines: { a: { state: stopped } }", file: "/x/fleet.yml").name == "fleet")
        #expect(try Self.parse("name: lab\nmachines: { a: { state: stopped } }", file: "/x/fleet.yml").name == "lab")
    }

    @Test func yamlBooleansBecomeNspawnWordsAndEnvironmentIsQuoted() throws {
        let manifest = try Self.parse("machines:\n  a:\n    settings: { VirtualEthernet: true, Environment: [\"GREETING=hello world\"] }\n")
        let settings = try manifest.resolved()[0].settings
        #expect(settings.map(\.values) == [["yes"], ["\"GREETING=hello world\""]])
    }
}
