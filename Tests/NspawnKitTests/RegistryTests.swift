import FoundationEssentials
import Testing
@testable import NspawnImages
@testable import NspawnKit

@Suite struct RegistryReferenceTests {
    @Test(arguments: [
        ("debian", "docker://docker.io/library/debian:latest"),
        ("debian:12", "docker://docker.io/library/debian:12"),
        ("library/debian:12", "docker://docker.io/library/debian:12"),
        ("nginxinc/nginx-unprivileged:1.27", "docker://docker.io/nginxinc/nginx-unprivileged:1.27"),
        ("quay.io/podman/stable", "docker://quay.io/podman/stable:latest"),
        ("localhost/app", "docker://localhost/app:latest"),
        ("127.0.0.1:5000/a/b/c:v1.2_3-x", "docker://127.0.0.1:5000/a/b/c:v1.2_3-x"),
        ("registry.example:443/app@sha256:" + String(repeating: "a", count: 64),
         "docker://registry.example:443/app@sha256:" + String(repeating: "a", count: 64)),
        ("app:v1@sha256:" + String(repeating: "0", count: 64), "docker://docker.io/library/app:v1@sha256:" + String(repeating: "0", count: 64)),
        ("my__repo/a-b--c.d", "docker://docker.io/my__repo/a-b--c.d:latest"),
    ])
    func shortAndFullNamesResolveAsPodmanReadsThem(_ text: String, _ full: String) throws {
        #expect(try RegistryReference(parsing: text).description == full)
        #expect(OCISource("docker://\(text)")?.description == full)
    }

    @Test func dockerHubIsServedFromItsRegistryHost() throws {
        let hub = try RegistryReference(parsing: "alpine")
        #expect(hub.apiHost == "registry-1.docker.io" && hub.repository == "library/alpine" && hub.manifestReference == "latest")
        let pinned = try RegistryReference(parsing: "quay.io/a/b:1@sha256:" + String(repeating: "b", count: 64))
        #expect(pinned.apiHost == "quay.io" && pinned.manifestReference.hasPrefix("sha256:bbb"))
    }

    @Test(arguments: ["", "Debian", "debian:", "debian:-x", "a//b", "/a", "a/", "a@sha256:abc", "a@md5:" + String(repeating: "a", count: 64),
                      "a@sha256:" + String(repeating: "A", count: 64), "host:99999/a", "a..b", "a/-b", "bad host.io/x",
                      "a:" + String(repeating: "t", count: 129), "a\u{0}b", "ex.com/a b"])
    func malformedReferencesAreRefusedNamingThem(_ text: String) {
        #expect {
            try RegistryReference(parsing: text)
        } throws: { error in
            guard let error = error as? NspawnError, case .invalidArgument(let message) = error else { return false }
            return message.hasPrefix("invalid image reference 'docker://")
        }
    }
}

@Suite struct RegistryAuthenticationTests {
    @Test func challengesParseAsRFC7235Says() throws {
        let bearer = try #require(AuthChallenge(parsing: #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#))
        #expect(bearer.scheme == "bearer")
        #expect(bearer.parameters == ["realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/debian:pull"])
        let basic = try #require(AuthChallenge(parsing: "Basic realm=\"a \\\"quoted\\\" realm\", charset=UTF-8\r\n"))
        #expect(basic.scheme == "basic" && basic.parameters == ["realm": "a \"quoted\" realm", "charset": "UTF-8"])
        #expect(AuthChallenge(parsing: "Bearer realm=\"unterminated") == nil)
        #expect(AuthChallenge(parsing: "") == nil)
    }

    @Test func credentialsAreFoundMostSpecificFirst() throws {
        func auth(_ pair: String) -> String { Data(pair.utf8).base64EncodedString() }
        let document = """
        {"auths": {"quay.io": {"auth": "\(auth("host:h"))"}, "quay.io/team": {"auth": "\(auth("team:t:with:colons"))"},
                   "https://index.docker.io/v1/": {"auth": "\(auth("hub:x"))"}, "other.io": {}}}
        """
        let team = try RegistryCredentials.find(for: RegistryReference(parsing: "quay.io/team/app"), in: Array(document.utf8), file: "f")
        #expect(team == RegistryCredentials(user: "team", password: "t:with:colons", file: "f"))
        let host = try RegistryCredentials.find(for: RegistryReference(parsing: "quay.io/else/app"), in: Array(document.utf8), file: "f")
        #expect(host?.user == "host")
        let hub = try RegistryCredentials.find(for: RegistryReference(parsing: "debian"), in: Array(document.utf8), file: "f")
        #expect(hub?.user == "hub")
        #expect(try RegistryCredentials.find(for: RegistryReference(parsing: "other.io/a"), in: Array(document.utf8), file: "f") == nil)
        #expect(throws: NspawnError.self) {
            try RegistryCredentials.find(for: RegistryReference(parsing: "a.io/b"), in: Array(#"{"auths":{"a.io":{"auth":"!!"}}}"#.utf8), file: "f")
        }
        #expect(throws: NspawnError.self) { try RegistryCredentials.find(for: RegistryReference(parsing: "a.io/b"), in: Array("[1]".utf8), file: "f") }
    }

    @Test func authFilesAreSearchedInTheEcosystemsOrder() {
        let files = RegistryCredentials.authFiles(environment: ["REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/user/0", "HOME": "/root"])
        #expect(files == ["/a.json", "/run/user/0/containers/auth.json", "/root/.config/containers/auth.json", "/root/.docker/config.json"])
        #expect(RegistryCredentials.authFiles(environment: [:]).isEmpty)
    }

    @Test func registrySettingsTakeTwoKeys() throws {
        let settings = try RegistrySettings(parsing: "[Registry]\nPlainHTTP=yes\nCertificateAuthority=/etc/ca.pem\n", file: "r.conf")
        #expect(settings.plainHTTP && settings.certificateAuthority == "/etc/ca.pem")
        for bad in ["[Registry]\nPlainHTTP=maybe\n", "[Registry]\nCertificateAuthority=ca.pem\n", "[Registry]\nInsecure=yes\n", "[Other]\nPlainHTTP=yes\n"] {
            #expect(throws: NspawnError.self) { try RegistrySettings(parsing: bad, file: "r.conf") }
        }
    }

    @Test func registryErrorsKeepTheirFirstMessage() {
        #expect(RegistryClient.registryMessage(Array(#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.utf8)) == "MANIFEST_UNKNOWN: manifest unknown")
        #expect(RegistryClient.registryMessage(Array("<html>".utf8)) == nil)
        #expect(RegistryClient.percentEncoded("repository:a/b:pull") == "repository%3Aa%2Fb%3Apull")
    }
}
