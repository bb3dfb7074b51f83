import FoundationEssentials
import Glibc
import Synchronization
import Testing
@testable import NspawnDaemon
@testable import NspawnKit

@Suite("Imports and manifests as nspawnctl-images children", .timeLimit(.minutes(1)))
final class ChildImportTests {
    @Test func argumentsNeverLetAValueReadAsAnOption() throws {
        let name = try MachineName("web")
        let url = ImportJob.url("http://127.0.0.1/a.tar.gz", checksum: "sha256:" + String(repeating: "a", count: 64),
                                signature: "/srv/a.sig", keyring: "/srv/k.gpg", force: true)
        #expect(url.arguments(name: name) == ["import", "--json", "--checksum=sha256:" + String(repeating: "a", count: 64),
                                              "--signature=/srv/a.sig", "--keyring=/srv/k.gpg", "--force", "--", "web", "http://127.0.0.1/a.tar.gz"])
        let recipe = ImportJob.recipe("-archlinux", mirror: "http://127.0.0.1:8088/arch", tarball: nil, checksum: nil, signature: nil, keyring: nil,
                                      verify: false, force: false)
        #expect(recipe.arguments(name: name) == ["bootstrap", "--json", "--mirror=http://127.0.0.1:8088/arch", "--no-verify",
                                                 "--", "-archlinux", "web"])
        // A recipe import keeps what the caller pinned.
        let pinned = ImportJob.recipe("archlinux", mirror: nil, tarball: nil, checksum: "sha256:" + String(repeating: "c", count: 64),
                                      signature: "/srv/a.sig", keyring: "/srv/k.gpg", verify: true, force: true)
        #expect(pinned.arguments(name: name) == ["bootstrap", "--json", "--checksum=sha256:" + String(repeating: "c", count: 64),
                                                 "--signature=/srv/a.sig", "--keyring=/srv/k.gpg", "--force", "--", "archlinux", "web"])
        // A recipe may leave the name to the helper; a local tarball is the helper's to read.
        let offline = ImportJob.recipe("archlinux", mirror: nil, tarball: "--x.tar", checksum: nil, signature: nil, keyring: nil,
                                       verify: true, force: false)
        #expect(offline.arguments(name: nil) == ["bootstrap", "--json", "--tarball=--x.tar", "--", "archlinux"])
        let stdin = ImportJob.file("-", checksum: nil, signature: nil, keyring: nil, force: false)
        #expect(stdin.arguments(name: name) == ["import", "--json", "--", "web", "-"])
        #expect(stdin.readsStandardInput)
        #expect(!ImportJob.file("./-", checksum: nil, signature: nil, keyring: nil, force: false).readsStandardInput)
        #expect(ManifestJob.apply(prune: true, keepGoing: true).arguments(file: "--f.yaml")
                == ["apply", "--json", "--manifest-name=--f.yaml", "--prune", "--keep-going"])
        #expect(ManifestJob.explain(machine: name).arguments(file: "-") == ["plan", "--json", "--manifest-name=-", "--explain=web"])
    }

    /// The manifest goes to the child's stdin; its apply events come back typed, in order, and
    /// its report is the result even though it exits 1 for a failed machine.
    @Test func aManifestGoesInOnStdinAndItsEventsComeBackTyped() async throws {
        let report = ApplyReport(manifest: "fleet", file: "/srv/fleet.yaml", machines: [])
        let json = String(decoding: try WireJSON.encoder(pretty: false).encode(report), as: UTF8.self)
        let change = ApplyEvent.change(machine: "web", PlannedChange(.add, .state, new: .text("running")))
        let failed = ApplyEvent.failed(machine: "db", error: "boom", rolledBack: false, rollbackError: "settings are read-only")
        let lines = try [change, failed].map { String(decoding: try WireJSON.encoder(pretty: false).encode(HelperEvent.apply($0)), as: UTF8.self) }
        let received = directory + "/received"
        let child = try fakeChild("""
            cat > \(received)
            echo "$*" >> \(received)
            echo '\(lines[0])' >&2
            echo '\(lines[1])' >&2
            echo '\(json)'
            exit 1
            """)
        let seen = Mutex<[ApplyEvent]>([])
        let outcome: Result<ApplyReport, NspawnError> = await ImagesHelper(executable: child).manifest(
            .apply(prune: false, keepGoing: true), text: "name: fleet\n", file: "/srv/fleet.yaml") { event in seen.withLock { $0.append(event) } }
        defer { unlink(received) }
        #expect(try outcome.get() == report)
        #expect(seen.withLock { $0 } == [change, failed])
        let fd = open(received, O_RDONLY)
        try #require(fd >= 0)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        close(fd)
        #expect(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
                == "name: fleet\napply --json --manifest-name=/srv/fleet.yaml --keep-going\n")
    }

    /// Where this test's stand-ins live; removed with the suite instance after each test.
    let directory = "/tmp/nspawnd-child-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"

    init() {
        mkdir(directory, 0o700)
    }

    deinit {
        unlink(directory + "/nspawnctl")
        rmdir(directory)
    }

    /// A stand-in for nspawnctl that speaks its `--json` protocol: progress and errors as JSON
    /// lines on stderr, the result on stdout, the category in the exit code.
    func fakeChild(_ body: String) throws -> String {
        let path = directory + "/nspawnctl"
        let script = "#!/bin/sh\n" + body + "\n"
        // Close-on-exec: a child another test forks meanwhile must not keep it open for writing.
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        try #require(fd >= 0)
        _ = script.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        close(fd)
        return path
    }

    static let progressLine = #"{"event":"progress","progress":{"phase":"download","bytes":2000,"total_bytes":4000,"entries":3,"bytes_per_second":1000,"eta_seconds":2,"elapsed_seconds":2}}"#

    @Test func progressLinesAndTheResultComeBack() async throws {
        let result = ImportResult(name: "web", path: "/var/lib/machines/web", source: "http://127.0.0.1/a.tar.gz", sourceBytes: 4000,
                                  entries: 12, compression: ["gzip"], sha256: String(repeating: "b", count: 64), verified: ["sha256"],
                                  strippedDirectory: nil, replaced: false, removedLeftovers: [], seconds: 1.5)
        let json = String(decoding: try WireJSON.encoder(pretty: true).encode(result), as: UTF8.self)
        let child = try fakeChild("""
            echo '\(Self.progressLine)' >&2
            echo 'a line that is not JSON' >&2
            cat <<'EOF'
            \(json)
            EOF
            """)
        let seen = Mutex<[ImportProgress]>([])
        let outcome = await ImagesHelper(executable: child).importImage(.url("http://127.0.0.1/a.tar.gz", checksum: nil, signature: nil, keyring: nil, force: false),
                                                                   name: try MachineName("web"), cancel: ChildCancel()) { progress in
            seen.withLock { $0.append(progress) }
        }
        #expect(try outcome.get() == result)
        #expect(seen.withLock { $0.map(\.bytes) } == [2000])
    }

    @Test func theChildsErrorKeepsItsCategoryAndMessage() async throws {
        let child = try fakeChild("""
            echo '\(Self.progressLine)' >&2
            echo '{"error":{"code":"verification_failed","message":"checksum mismatch for \\u0027http://127.0.0.1/a.tar.gz\\u0027"}}' >&2
            exit 6
            """)
        let outcome = await ImagesHelper(executable: child).importImage(.recipe("archlinux", mirror: nil, tarball: nil, checksum: nil, signature: nil, keyring: nil, verify: true, force: false),
                                                                   name: try MachineName("web"), cancel: ChildCancel()) { _ in }
        guard case .failure(let error) = outcome else { Issue.record("expected a failure, got \(outcome)"); return }
        #expect(error.category == .verificationFailed)
        #expect(error.description == "checksum mismatch for 'http://127.0.0.1/a.tar.gz'")
    }

    @Test func aChildWithoutAnErrorLineFailsWithItsExitAndLastWords() async throws {
        let child = try fakeChild("echo 'segmentation fault' >&2; exit 139")
        let outcome = await ImagesHelper(executable: child).importImage(Self.urlJob,
                                                                   name: try MachineName("web"), cancel: ChildCancel()) { _ in }
        guard case .failure(let error) = outcome else { Issue.record("expected a failure, got \(outcome)"); return }
        #expect(error.category == .failure)
        #expect(error.description.contains("exited with status 139") && error.description.contains("segmentation fault"), "\(error)")
    }

    @Test func cancelSendsSIGTERMAndTheChildCleansUp() async throws {
        // The stand-in removes its marker on SIGTERM and reports the cancel as nspawnctl does.
        let marker = "/tmp/nspawnd-child-test-marker-\(getpid())"
        let child = try fakeChild("""
            touch \(marker)
            trap 'rm -f \(marker); echo "{\\"error\\":{\\"code\\":\\"cancelled\\",\\"message\\":\\"import of web cancelled\\"}}" >&2; exit 130' TERM
            echo '\(Self.progressLine)' >&2
            while :; do sleep 0.05; done
            """)
        let outcome = try await Self.cancelAfterFirstProgress(child)
        guard case .failure(let error) = outcome else { Issue.record("expected a cancel"); return }
        #expect(error.category == .cancelled, "\(error)")
        #expect(access(marker, F_OK) != 0, "the child ran its cleanup")
    }

    @Test func aCancelThatComesAfterTheResultLeavesASuccess() async throws {
        // The image is in place once the result is printed, whatever kills the child after it.
        let result = ImportResult(name: "web", path: "/var/lib/machines/web", source: "http://127.0.0.1/a", sourceBytes: 1,
                                  entries: 1, compression: [], sha256: String(repeating: "d", count: 64), verified: [],
                                  strippedDirectory: nil, replaced: false, removedLeftovers: [], seconds: 0.1)
        let json = String(decoding: try WireJSON.encoder(pretty: false).encode(result), as: UTF8.self)
        let child = try fakeChild("""
            echo '\(json)'
            echo '\(Self.progressLine)' >&2
            exec sleep 30
            """)
        #expect(try await Self.cancelAfterFirstProgress(child).get() == result)
    }

    /// Runs a URL import with `child`, and cancels it once the child has reported progress.
    static func cancelAfterFirstProgress(_ child: String) async throws -> Result<ImportResult, NspawnError> {
        let cancel = ChildCancel()
        let started = Mutex(false)
        let name = try MachineName("web")
        async let outcome = ImagesHelper(executable: child).importImage(urlJob, name: name, cancel: cancel) { _ in
            started.withLock { $0 = true }
        }
        while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        cancel.cancel()
        return await outcome
    }

    static let urlJob = ImportJob.url("http://127.0.0.1/a", checksum: nil, signature: nil, keyring: nil, force: false)

    @Test func aMissingExecutableIsAFailureNotACrash() async throws {
        let outcome = await ImagesHelper(executable: "/nonexistent/nspawnctl").importImage(Self.urlJob,
                                                                                      name: try MachineName("web"), cancel: ChildCancel()) { _ in }
        guard case .failure(let error) = outcome else { Issue.record("expected a failure"); return }
        #expect(error.description.contains("/nonexistent/nspawnctl"), "\(error)")
    }
}
