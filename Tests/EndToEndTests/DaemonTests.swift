import Foundation
import Testing

/// What `curl --unix-socket` got: the HTTP status (000 when it could not connect), the body and curl's exit code.
struct HTTPResult: CustomStringConvertible {
    var status: Int
    var body: String
    var curlExit: Int32

    var description: String { "HTTP \(status), curl exit \(curlExit): \(body)" }
}

enum API {
    static let socket = "/run/nspawnd/nspawnd.sock"

    /// Runs curl inside the testbed, as `user` when given.
    static func request(_ method: String, _ path: String, body: String? = nil, user: String? = nil,
                        socket: String = socket, extra: [String] = []) throws -> HTTPResult {
        var arguments = ["curl", "-sS", "--max-time", "60", "--unix-socket", socket, "-X", method, "-o", "/tmp/api-body", "-w", "%{http_code}"]
        if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
        arguments += extra + ["http://nspawnd\(path)"]
        let quoted = arguments.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let script = "rm -f /tmp/api-body; " + (user.map { "su -s /bin/sh \($0) -c \"\(quoted.replacingOccurrences(of: "\"", with: "\\\""))\"" } ?? quoted)
            + "; rc=$?; echo; echo \"rc=$rc\"; cat /tmp/api-body 2>/dev/null"
        let result = try Testbed.sh(script)
        let lines = result.stdout.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        let status = Int(lines.first ?? "") ?? 0
        let exit = Int32((lines.count > 1 ? lines[1] : "rc=255").dropFirst(3)) ?? 255
        let response = HTTPResult(status: status, body: lines.count > 2 ? lines[2] : "", curlExit: exit)
        if status != 0 { try conformsToOpenAPI(method, path, response) }
        return response
    }

    /// Every response the tests see is checked against units/openapi.yaml, by a checker
    /// (python3-jsonschema) that shares no code with the daemon.
    static func conformsToOpenAPI(_ method: String, _ path: String, _ response: HTTPResult,
                                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("api-body-\(UUID().uuidString)")
        try Data(response.body.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let root = Testbed.repositoryRoot.path
        let check = try Testbed.runLocal(["/usr/bin/python3", "\(root)/Tests/Fixtures/check-openapi", "\(root)/units/openapi.yaml",
                                          method, path, String(response.status), file.path])
        #expect(check.status == 0, "response does not conform to the OpenAPI document: \(check.stdout)\(check.stderr)",
                sourceLocation: sourceLocation)
    }

    static func serviceState() throws -> String {
        try Testbed.run(["systemctl", "show", "-p", "ActiveState", "--value", "nspawnd.service"]).trimmed
    }
}

extension EndToEndTests {
    @Test func theFirstRequestActivatesTheDaemonAndItExitsWhenIdle() throws {
        // A short idle timeout for this test only, in /run so it cannot outlive the testbed.
        try Testbed.mustSh("""
            mkdir -p /run/systemd/system/nspawnd.service.d
            printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/nspawnd --idle-timeout 2\\n' > /run/systemd/system/nspawnd.service.d/50-e2e-idle.conf
            systemctl daemon-reload
            systemctl stop nspawnd.service
            """)
        defer { _ = try? Testbed.sh("rm -rf /run/systemd/system/nspawnd.service.d; systemctl daemon-reload; systemctl stop nspawnd.service") }
        #expect(try API.serviceState() == "inactive")
        #expect(try Testbed.run(["systemctl", "is-active", "nspawnd.socket"]).trimmed == "active")

        let first = try API.request("GET", "/v1/version")
        #expect(first.status == 200 && first.body.contains("\"api\":\"v1\""), "\(first)")
        #expect(try API.serviceState() == "active", "the request started nspawnd.service")

        // Idle for 2 s: it exits on its own, cleanly, and the socket stays.
        var state = ""
        for _ in 0..<60 {
            state = try API.serviceState()
            if state == "inactive" { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(state == "inactive", "nspawnd did not exit when idle")
        #expect(try Testbed.run(["systemctl", "show", "-p", "Result", "--value", "nspawnd.service"]).trimmed == "success")
        #expect(try Testbed.run(["systemctl", "is-active", "nspawnd.socket"]).trimmed == "active")

        let again = try API.request("GET", "/v1/version")
        #expect(again.status == 200, "the socket brings it back: \(again)")
        let log = try Testbed.sh("journalctl -u nspawnd.service --no-pager -o cat | grep -c 'idle, exiting'")
        #expect((Int(log.trimmed) ?? 0) >= 1, "it logs its exit to the journal: \(log)")
    }

    @Test func machinesThroughTheAPIMatchTheCLI() throws {
        try Fixture.with(["e2e-api-ls"]) {
            try Fixture.busybox("e2e-api-ls")
            #expect(try Testbed.nspawnctl("start", "e2e-api-ls").status == Exit.ok)
            let listed = try API.request("GET", "/v1/machines")
            #expect(listed.status == 200, "\(listed)")
            let viaAPI = try decodeJSON([ListedMachine].self, from: listed.body)
            let viaCLI = try decodeJSON([ListedMachine].self, from: try Testbed.nspawnctl("ls", "--json").stdout)
            #expect(viaAPI.map(\.name) == viaCLI.map(\.name))
            #expect(viaAPI.first { $0.name == "e2e-api-ls" }?.state == "running")

            let one = try API.request("GET", "/v1/machines/e2e-api-ls")
            let status = try decodeJSON(StatusJSON.self, from: one.body)
            let leader = try Testbed.run(["machinectl", "show", "e2e-api-ls", "-p", "Leader", "--value"]).trimmed
            #expect(one.status == 200 && status.machine?.leader.map(String.init) == leader, "\(one)")

            let images = try API.request("GET", "/v1/images")
            #expect(images.status == 200 && images.body.contains("\"name\":\"e2e-api-ls\""), "\(images)")
        }
    }

    @Test(.testbedAccounts) func peerCredentialsDecideWhatACallerMayDo() throws {
        let name = "e2e-api-auth"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                id e2e-outsider >/dev/null 2>&1 || useradd --no-create-home e2e-outsider
                id e2e-member >/dev/null 2>&1 || useradd --no-create-home --groups nspawn e2e-member
                """)
            // The unit's socket is 0660 root:nspawn: an outsider cannot even connect.
            let refused = try API.request("GET", "/v1/version", user: "e2e-outsider")
            #expect(refused.status == 0 && refused.curlExit == 7, "\(refused)")

            // A daemon on a world-accessible socket shows nspawnd's own check for outsiders.
            try Testbed.mustSh("""
                systemd-run --unit=e2e-nspawnd-open /usr/local/bin/nspawnd --socket /run/e2e-nspawnd.sock --socket-mode 0666 --idle-timeout 0 >/dev/null 2>&1
                for i in $(seq 1 50); do [ -S /run/e2e-nspawnd.sock ] && break; sleep 0.1; done
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-nspawnd-open; rm -f /run/e2e-nspawnd.sock") }
            let version = try API.request("GET", "/v1/version", user: "e2e-outsider", socket: "/run/e2e-nspawnd.sock")
            #expect(version.status == 200, "\(version)")
            let forbidden = try API.request("GET", "/v1/machines", user: "e2e-outsider", socket: "/run/e2e-nspawnd.sock")
            #expect(forbidden.status == 403 && forbidden.body.contains("permission_denied"), "\(forbidden)")
            let forbiddenStart = try API.request("POST", "/v1/machines/\(name)/start", user: "e2e-outsider", socket: "/run/e2e-nspawnd.sock")
            #expect(forbiddenStart.status == 403)
            #expect(try Fixture.machinedState(name) == nil)

            // A member of group nspawn may read and run machines, through the real unit's socket.
            let list = try API.request("GET", "/v1/machines", user: "e2e-member")
            #expect(list.status == 200, "\(list)")
            let start = try API.request("POST", "/v1/machines/\(name)/start", user: "e2e-member")
            #expect(start.status == 200, "\(start)")
            #expect(try Fixture.machinedState(name) == "running")
            let stop = try API.request("POST", "/v1/machines/\(name)/stop", body: #"{"timeout": 1}"#, user: "e2e-member")
            #expect(stop.status == 200, "\(stop)")
            #expect(try Fixture.machinedState(name) == nil)
            // …but not change images.
            let delete = try API.request("DELETE", "/v1/images/\(name)", user: "e2e-member")
            #expect(delete.status == 403, "\(delete)")
            #expect(try Fixture.imageNames().contains(name))
        }
    }

    @Test(.testbedAccounts) func flavorsAreTheHostsFilesAndAMemberMayReadThem() throws {
        // Flavors of the test's own, so suites running beside it (apply, copy: flavor small) see theirs unchanged.
        let installedDirectory = "/usr/local/share/nspawnctl/flavors", localDirectory = "/etc/nspawnctl/flavors"
        try Testbed.mustSh("id e2e-member >/dev/null 2>&1 || useradd --no-create-home --groups nspawn e2e-member")
        defer {
            _ = try? Testbed.sh("rm -f \(installedDirectory)/e2e-shadowed.flavor \(localDirectory)/e2e-shadowed.flavor \(localDirectory)/e2e-broken.flavor")
        }
        try Testbed.mustSh("printf '[Flavor]\\nMemoryMax=512M\\n' > \(installedDirectory)/e2e-shadowed.flavor")
        let files = Set(try Testbed.sh("ls \(installedDirectory) \(localDirectory) 2>/dev/null | sed -n 's/\\.flavor$//p'").stdout
            .split(separator: "\n").map(String.init))
        #expect(files.count >= 3, "the install ships flavors: \(files)")

        let listed = try API.request("GET", "/v1/flavors", user: "e2e-member")
        #expect(listed.status == 200, "\(listed)")
        let flavors = try JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [[String: Any]] ?? []
        let names = flavors.compactMap { $0["name"] as? String }
        #expect(Set(names) == files && names.count == files.count && names == names.sorted(), "\(listed.body)")
        #expect(flavors.first { $0["name"] as? String == "e2e-shadowed" }?["memory_max"] as? Int == 512 * 1024 * 1024)

        // /etc overrides the installed file of the same name, as at use.
        try Testbed.mustSh("mkdir -p \(localDirectory) && printf '[Flavor]\\nMemoryMax=1G\\n' > \(localDirectory)/e2e-shadowed.flavor")
        let overridden = try API.request("GET", "/v1/flavors")
        let local = try JSONSerialization.jsonObject(with: Data(overridden.body.utf8)) as? [[String: Any]] ?? []
        #expect(local.filter { $0["name"] as? String == "e2e-shadowed" }.count == 1, "\(overridden)")
        #expect(local.first { $0["name"] as? String == "e2e-shadowed" }?["memory_max"] as? Int == 1024 * 1024 * 1024, "\(overridden)")

        // A broken file is named, not skipped.
        try Testbed.mustSh("printf '[Flavor]\\nMemoryMax=lots\\n' > \(localDirectory)/e2e-broken.flavor")
        let broken = try API.request("GET", "/v1/flavors")
        #expect(broken.status == 500 && broken.body.contains("\(localDirectory)/e2e-broken.flavor") && broken.body.contains("MemoryMax=lots"),
                "\(broken)")
    }

    @Test func eventsArriveForAStartAndAStop() throws {
        let name = "e2e-api-events"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            // curl follows the stream as a unit of its own, so nothing here waits on its output pipe.
            try Testbed.mustSh("""
                rm -f /tmp/e2e-events.txt
                systemd-run --unit=e2e-events -p StandardOutput=file:/tmp/e2e-events.txt \
                    curl -sN --unix-socket \(API.socket) http://nspawnd/v1/events >/dev/null 2>&1
                for i in $(seq 1 100); do grep -q '^event: subscribed' /tmp/e2e-events.txt 2>/dev/null && exit 0; sleep 0.1; done
                exit 1
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-events; systemctl reset-failed e2e-events 2>/dev/null; true") }
            #expect(try Testbed.nspawnctl("start", name).status == Exit.ok)
            #expect(try Testbed.nspawnctl("stop", "--timeout", "1", name).status == Exit.ok)
            let stream = try Testbed.sh("""
                for i in $(seq 1 100); do grep -q '"event":"machine_removed","name":"\(name)"' /tmp/e2e-events.txt && break; sleep 0.1; done
                cat /tmp/e2e-events.txt
                """).stdout
            let events = stream.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
                .filter { $0.contains("\"name\":\"\(name)\"") }
            #expect(events.count == 2, "\(stream)")
            #expect(events.first?.contains("\"event\":\"machine_new\"") == true && events.first?.contains("\"state\":\"running\"") == true)
            #expect(events.last?.contains("\"event\":\"machine_removed\"") == true && events.last?.contains("\"state\":\"stopped\"") == true)
            #expect(stream.contains("event: machine_new\n") && stream.contains("event: machine_removed\n"), "SSE event lines: \(stream)")
        }
    }

    @Test(.testbedAccounts) func theCLIGoesThroughTheDaemonWhenNotRootWithTheSameOutputAndExitCodes() throws {
        let name = "e2e-api-cli"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("""
                id e2e-outsider >/dev/null 2>&1 || useradd --no-create-home e2e-outsider
                id e2e-member >/dev/null 2>&1 || useradd --no-create-home --groups nspawn e2e-member
                rm -f /tmp/e2e-cli-events.txt
                systemd-run --unit=e2e-cli-events --uid=e2e-member -p StandardOutput=file:/tmp/e2e-cli-events.txt \
                    /usr/local/bin/nspawnctl events --json >/dev/null 2>&1
                for i in $(seq 1 100); do grep -q '"event":"subscribed"' /tmp/e2e-cli-events.txt 2>/dev/null && exit 0; sleep 0.1; done
                exit 1
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-cli-events; systemctl reset-failed e2e-cli-events 2>/dev/null; true") }
            func asUser(_ user: String, _ command: String) throws -> CommandResult {
                try Testbed.sh("su -s /bin/sh \(user) -c '\(command)'")
            }
            let direct = try Testbed.nspawnctl("ls", "--json")
            let viaRootAPI = try Testbed.nspawnctl("ls", "--api", "--json")
            let viaMember = try asUser("e2e-member", "nspawnctl ls --json")
            #expect(direct.status == 0 && viaRootAPI.status == 0 && viaMember.status == 0, "\(viaMember)")
            let names = try decodeJSON([ListedMachine].self, from: direct.stdout).map(\.name)
            #expect(try decodeJSON([ListedMachine].self, from: viaMember.stdout).map(\.name) == names)
            #expect(try decodeJSON([ListedMachine].self, from: viaRootAPI.stdout).map(\.name) == names)

            let start = try asUser("e2e-member", "nspawnctl start \(name)")
            #expect(start.status == Exit.ok, "\(start)")
            #expect(try Fixture.machinedState(name) == "running")
            let status = try asUser("e2e-member", "nspawnctl status \(name)")
            #expect(status.status == Exit.ok && status.stdout.contains("State: running"), "\(status)")
            let stop = try asUser("e2e-member", "nspawnctl stop --timeout 1 \(name)")
            #expect(stop.status == Exit.ok, "\(stop)")
            #expect(try Fixture.machinedState(name) == nil)

            // The same exit codes as the library gives root.
            let remove = try asUser("e2e-member", "nspawnctl remove \(name)")
            #expect(remove.status == Exit.permissionDenied && remove.stderr.contains("permission denied"), "\(remove)")
            let missing = try asUser("e2e-member", "nspawnctl status --json e2e-no-such-machine")
            #expect(missing.status == Exit.notFound && missing.stderr.contains("\"code\":\"not_found\""), "\(missing)")
            #expect(try Testbed.nspawnctl("status", "e2e-no-such-machine").status == Exit.notFound)
            let notRunning = try asUser("e2e-member", "nspawnctl stop \(name)")
            #expect(notRunning.status == Exit.conflict, "\(notRunning)")
            let outsider = try asUser("e2e-outsider", "nspawnctl ls")
            #expect(outsider.status == Exit.permissionDenied && outsider.stderr.contains("group"), "\(outsider)")

            let events = try Testbed.sh("""
                for i in $(seq 1 100); do grep -q '"event":"machine_removed","name":"\(name)"' /tmp/e2e-cli-events.txt && break; sleep 0.1; done
                cat /tmp/e2e-cli-events.txt
                """).stdout
            #expect(events.contains("\"event\":\"machine_new\",\"name\":\"\(name)\"") && events.contains("\"event\":\"machine_removed\",\"name\":\"\(name)\""),
                    "nspawnctl events followed the daemon's stream: \(events)")
        }
    }

    @Test(.testbedAccounts) func importsRunAsOperationsAndCancellingLeavesNothing() throws {
        try ImageFixtures.prepare()
        try Fixture.with(["e2e-api-import", "e2e-api-stalled", "e2e-api-missing"]) {
            // The event stream carries the import's progress and its end.
            try Testbed.mustSh("""
                rm -f /tmp/e2e-import-events.txt
                systemd-run --unit=e2e-import-events -p StandardOutput=file:/tmp/e2e-import-events.txt \
                    curl -sN --unix-socket \(API.socket) http://nspawnd/v1/events >/dev/null 2>&1
                for i in $(seq 1 100); do grep -q '^event: subscribed' /tmp/e2e-import-events.txt 2>/dev/null && exit 0; sleep 0.1; done
                exit 1
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-import-events; systemctl reset-failed e2e-import-events 2>/dev/null; true") }

            // A finished import: 202, then the operation reports success and the image exists.
            let sha = try Testbed.sh("sha256sum /var/tmp/fx/small.tar.gz | cut -c1-64").trimmed
            let accepted = try API.request("POST", "/v1/images",
                                           body: #"{"name": "e2e-api-import", "url": "http://127.0.0.1:8088/small.tar.gz", "checksum": "sha256:\#(sha)"}"#)
            #expect(accepted.status == 202, "\(accepted)")
            let id = try #require(Self.operationID(accepted.body))
            var state = ""
            for _ in 0..<100 {
                let polled = try API.request("GET", "/v1/operations/\(id)")
                state = Self.field("state", in: polled.body) ?? ""
                if state != "running" { break }
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(state == "succeeded")
            #expect(try Fixture.imageNames().contains("e2e-api-import"))
            let stream = try Testbed.sh("""
                for i in $(seq 1 50); do grep -q '"state":"succeeded"' /tmp/e2e-import-events.txt && break; sleep 0.1; done
                cat /tmp/e2e-import-events.txt
                """).stdout
            let operationEvents = stream.split(separator: "\n").filter { $0.hasPrefix("data: ") && $0.contains("\"id\":\"\(id)\"") }
            #expect(operationEvents.first?.contains("\"state\":\"running\"") == true, "\(stream)")
            #expect(operationEvents.last?.contains("\"state\":\"succeeded\"") == true, "\(stream)")
            #expect(stream.contains("event: operation\n"), "\(stream)")
            // The import ran as an nspawnctl child: the daemon itself never maps libcurl or libarchive.
            let maps = try Testbed.sh("grep -c -e libcurl -e libarchive /proc/$(systemctl show -p MainPID --value nspawnd.service)/maps || true")
            #expect(maps.trimmed == "0", "nspawnd maps libcurl/libarchive: \(maps)")

            // A failing download fails the operation with the child's error, and leaves no image.
            let missing = try API.request("POST", "/v1/images", body: #"{"name": "e2e-api-missing", "url": "http://127.0.0.1:8088/missing.tar.gz"}"#)
            #expect(missing.status == 202, "\(missing)")
            let missingID = try #require(Self.operationID(missing.body))
            var failed = ""
            for _ in 0..<100 {
                failed = try API.request("GET", "/v1/operations/\(missingID)").body
                if Self.field("state", in: failed) != "running" { break }
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(Self.field("state", in: failed) == "failed", "\(failed)")
            #expect(failed.contains("\"code\":\"failure\"") || failed.contains("\"code\" : \"failure\""), "\(failed)")
            #expect(failed.contains("missing.tar.gz"), "the error names the URL: \(failed)")
            #expect(try !Fixture.imageNames().contains("e2e-api-missing"))

            // A stalled source: cancelling stops the import, and nothing of it stays on disk.
            try Testbed.mustSh("""
                head -c 2000 /var/tmp/fx/small.tar.gz > /tmp/e2e-head
                systemd-run --unit=e2e-stalled-httpd /bin/sh -c \
                    '(printf "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"; cat /tmp/e2e-head; sleep 120) | busybox nc -l -p 8099' >/dev/null 2>&1
                sleep 0.3
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-stalled-httpd; systemctl reset-failed e2e-stalled-httpd 2>/dev/null; true") }
            let stalled = try API.request("POST", "/v1/images", body: #"{"name": "e2e-api-stalled", "url": "http://127.0.0.1:8099/x.tar.gz"}"#)
            #expect(stalled.status == 202, "\(stalled)")
            let stalledID = try #require(Self.operationID(stalled.body))
            Thread.sleep(forTimeInterval: 1)
            let running = try API.request("GET", "/v1/operations/\(stalledID)")
            #expect(Self.field("state", in: running.body) == "running", "\(running)")
            // The child holds none of the daemon's client connections (the event stream above
            // is one): a connection the daemon closes must reach its client as EOF.
            let shared = try Testbed.sh("""
                daemon=$(systemctl show -p MainPID --value nspawnd.service)
                child=$(pgrep -f '[n]spawnctl-images import' | head -1)
                [ -n "$child" ] || { echo "no import child"; exit 1; }
                sockets() { ls -l /proc/$1/fd | grep -o 'socket:\\[[0-9]*\\]' | sort -u; }
                sockets $daemon > /tmp/e2e-daemon-sockets
                sockets $child > /tmp/e2e-child-sockets
                [ -s /tmp/e2e-daemon-sockets ] || { echo "daemon shows no sockets"; exit 1; }
                comm -12 /tmp/e2e-daemon-sockets /tmp/e2e-child-sockets
                """)
            #expect(shared.status == 0 && shared.trimmed.isEmpty, "sockets shared by nspawnd and its import child: \(shared)")
            let cancelled = try API.request("DELETE", "/v1/operations/\(stalledID)")
            #expect(cancelled.status == 200 && Self.field("state", in: cancelled.body) == "cancelled", "\(cancelled)")
            let gone = try API.request("GET", "/v1/operations/\(stalledID)")
            #expect(gone.status == 404, "a deleted operation is gone: \(gone)")
            #expect(try !Fixture.imageNames().contains("e2e-api-stalled"))
            let leftovers = try Testbed.sh("ls -A /var/lib/machines | grep -e e2e-api-stalled || true")
            #expect(leftovers.trimmed.isEmpty, "no half image: \(leftovers)")
            let children = try Testbed.sh("pgrep -af '[n]spawnctl-images import' || true")
            #expect(children.trimmed.isEmpty, "the import child is gone: \(children)")

            // Bad requests are refused before anything starts.
            for body in [#"{"name": "x"}"#, #"{"name": "x", "url": "file:///etc/shadow"}"#, #"{"name": "x", "url": "/etc/shadow"}"#,
                         #"{"name": "x", "recipe": "/etc/passwd"}"#, #"{"name": "../x", "url": "http://127.0.0.1:8088/small.tar.gz"}"#,
                         #"{"name": "x", "url": "http://127.0.0.1:8088/small.tar.gz", "checksum": "md5:00"}"#,
                         #"{"name": "x", "url": "http://127.0.0.1:8088/a", "recipe": "archlinux"}"#] {
                let refused = try API.request("POST", "/v1/images", body: body)
                #expect(refused.status == 400, "\(body): \(refused)")
            }
            let unknown = try API.request("GET", "/v1/operations/0000")
            #expect(unknown.status == 404)
            try Testbed.mustSh("id e2e-member >/dev/null 2>&1 || useradd --no-create-home --groups nspawn e2e-member")
            let member = try API.request("POST", "/v1/images", body: #"{"name": "x", "url": "http://127.0.0.1:8088/small.tar.gz"}"#, user: "e2e-member")
            #expect(member.status == 403 || member.curlExit == 7, "\(member)")
        }
    }

    @Test func aClientThatTricklesItsRequestIsCutOff() throws {
        try Testbed.mustSh("""
            systemd-run --unit=e2e-nspawnd-slow /usr/local/bin/nspawnd --socket /run/e2e-nspawnd-slow.sock --idle-timeout 0 --request-timeout 2 >/dev/null 2>&1
            for i in $(seq 1 50); do [ -S /run/e2e-nspawnd-slow.sock ] && break; sleep 0.1; done
            head -c 300 /dev/zero | tr '\\0' ' ' > /tmp/e2e-slow-body
            """)
        defer { _ = try? Testbed.sh("systemctl stop e2e-nspawnd-slow; rm -f /run/e2e-nspawnd-slow.sock") }
        // 300 bytes at 10 bytes/s would take 30 s; the daemon gives a whole request 2 s.
        let started = Date()
        let slow = try Testbed.sh("curl -sS --max-time 60 --limit-rate 10 --unix-socket /run/e2e-nspawnd-slow.sock -H 'Content-Type: application/json' --data-binary @/tmp/e2e-slow-body http://nspawnd/v1/images/x/clone")
        let elapsed = Date().timeIntervalSince(started)
        #expect(slow.status != 0, "the daemon closed the connection: \(slow)")
        #expect(elapsed < 20, "cut off after \(elapsed) s")
        let alive = try API.request("GET", "/v1/version", socket: "/run/e2e-nspawnd-slow.sock")
        #expect(alive.status == 200, "\(alive)")
    }

    static func field(_ key: String, in body: String) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?[key] as? String
    }

    static func operationID(_ body: String) -> String? { field("id", in: body) }

    @Test func malformedAndOversizedRequestsGet4xxAndTheDaemonCarriesOn() throws {
        let cases: [(String, String, String?, [String], Int)] = [
            ("GET", "/", nil, ["--request-target", "bad target"], 400),
            ("GET", "/v1/version", nil, ["-H", "Content-Length: abc"], 400),
            ("GET", "/v2/machines", nil, [], 404),
            ("GET", "/v1/nothing", nil, [], 404),
            ("PUT", "/v1/machines", nil, [], 405),
            ("GET", "/v1/machines/..", nil, ["--path-as-is"], 400),
            ("GET", "/v1/machines/e2e-no-such-machine", nil, [], 404),
            ("POST", "/v1/machines/e2e-no-such-machine/explode", nil, [], 404),
            ("POST", "/v1/machines/e2e-no-such-machine/kill", #"{"signal": "NOPE"}"#, [], 400),
            ("POST", "/v1/machines/e2e-no-such-machine/stop", #"{"timeout": "#, [], 400),
            ("POST", "/v1/machines/e2e-no-such-machine/stop", #"{"timeout": -5}"#, [], 400),
            ("POST", "/v1/images/e2e-no-such-machine/clone", #"{"name": "a/b"}"#, [], 400),
            ("POST", "/v1/images/e2e-no-such-machine/clone", #"{"nom": 1}"#, [], 400),
            ("POST", "/v1/images/e2e-no-such-machine/clone", nil, ["-H", "Content-Type: text/plain", "--data-binary", "name=x"], 415),
        ]
        for (method, path, body, extra, expected) in cases {
            let result = try API.request(method, path, body: body, extra: extra)
            #expect(result.status == expected, "\(method) \(path) \(body ?? ""): \(result)")
            #expect(result.body.contains("\"error\""), "errors are JSON: \(result)")
        }
        try Testbed.mustSh("head -c 200000 /dev/zero | tr '\\0' 'x' > /tmp/big-body")
        let big = try API.request("POST", "/v1/images/e2e-no-such-machine/clone", body: "@/tmp/big-body")
        #expect(big.status == 413, "\(big)")
        let alive = try API.request("GET", "/v1/version")
        #expect(alive.status == 200, "the daemon still answers: \(alive)")
    }
}
