import Foundation
import Testing

/// Ansible as a fleet tool would use it: ansible-playbook (ansible-core from PyPI, in the venv
/// scripts/ansible-venv makes) runs on this machine, the controller, and reaches the testbed, the
/// managed host, over ssh, where the collection's `nspawnctl_apply` module runs the installed
/// nspawnctl. The testbed's sshd listens on 127.0.0.1:22 of its own network namespace, so ssh
/// gets there through `nsenter -n … socat` as its ProxyCommand; host key checking stays on, with
/// the testbed's real host key.
///
/// Everything the controller needs lives in one scratch directory: a throw-away client key (its
/// public half appended to root's authorized_keys in the testbed, and removed after), known_hosts,
/// ansible.cfg, the inventory, the playbook, the manifests and the registered results.
struct AnsibleController {
    let directory: URL
    let venv: String
    let keyComment: String

    /// Makes the venv (or finds it made); a venv that cannot be made fails the test, as a
    /// missing PyPI must not pass for a skipped suite.
    static func venv() throws -> String {
        let script = Testbed.repositoryRoot.appendingPathComponent("scripts/ansible-venv").path
        let made = try Testbed.runLocal([script])
        guard made.status == 0, !made.trimmed.isEmpty else {
            Issue.record("scripts/ansible-venv could not make the ansible-core venv: \(made)")
            throw TestbedError.setupFailed("scripts/ansible-venv")
        }
        return made.trimmed
    }

    static func make() throws -> AnsibleController {
        let venv = try venv()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnctl-e2e-ansible-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let controller = AnsibleController(directory: directory, venv: venv, keyComment: "nspawnctl-e2e-ansible-\(UUID().uuidString)")
        do {
            try controller.setUp()
        } catch {
            controller.tearDown()
            throw error
        }
        return controller
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
    }

    private func setUp() throws {
        let keygen = try Testbed.runLocal(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", keyComment, "-f", path("id_ed25519")])
        guard keygen.status == 0 else {
            Issue.record("ssh-keygen: \(keygen)")
            throw TestbedError.setupFailed("ssh-keygen")
        }
        let publicKey = try String(contentsOfFile: path("id_ed25519.pub"), encoding: .utf8)
        let authorize = try Testbed.run(["/bin/sh", "-c", """
            set -e
            systemctl -q is-active ssh.service
            install -d -m 700 /root/.ssh
            cat >> /root/.ssh/authorized_keys
            chmod 600 /root/.ssh/authorized_keys
            command -v python3
            """], stdin: publicKey)
        guard authorize.status == 0 else {
            Issue.record("authorizing the controller's key in the testbed (sshd running, python3 installed): \(authorize)")
            throw TestbedError.setupFailed("authorized_keys")
        }
        let hostKey = try Testbed.mustSh("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub").trimmed
        try write("known_hosts", "nspawnctl-testbed \(hostKey)\n")

        let pid = try Self.testbedPID()
        try write("inventory", """
            [fleet]
            testbed ansible_host=127.0.0.1 ansible_user=root ansible_python_interpreter=/usr/bin/python3 ansible_ssh_private_key_file=\(path("id_ed25519"))

            """)
        // No ControlMaster: nothing of ssh outlives a run. Pipelining keeps it to one connection per task.
        try write("ansible.cfg", """
            [defaults]
            inventory = \(path("inventory"))
            collections_path = \(Testbed.repositoryRoot.appendingPathComponent("ansible").path)
            home = \(path("ansible-home"))
            local_tmp = \(path("ansible-local-tmp"))
            nocolor = true
            retry_files_enabled = false
            timeout = 30

            [ssh_connection]
            pipelining = true
            ssh_args = -o ControlMaster=no -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=\(path("known_hosts")) -o HostKeyAlias=nspawnctl-testbed -o "ProxyCommand=\(Self.proxyCommand(pid: pid))"

            """)
        // The apply's registered result goes back to the controller as JSON, for the test to read.
        try write("playbook.yml", """
            - name: Converge the fleet
              hosts: fleet
              gather_facts: false
              tasks:
                - name: Apply the manifest
                  nspawnctl.machines.nspawnctl_apply:
                    content: "{{ lookup('ansible.builtin.file', manifest) }}"
                    name: e2e-ansible
                  register: converged
                - name: Keep the result for the test
                  ansible.builtin.copy:
                    content: "{{ converged | to_json }}"
                    dest: "{{ result_file }}"
                    mode: "0600"
                  delegate_to: localhost
                  check_mode: false
                  changed_when: false

            """)
    }

    /// The PID of the testbed's systemd, whose network namespace holds its sshd.
    static func testbedPID() throws -> String {
        let status = try Testbed.runLocal([Testbed.repositoryRoot.appendingPathComponent("scripts/testbed").path, "status", Testbed.name ?? ""])
        guard let pid = status.stdout.firstMatch(of: /systemd PID (\d+)/)?.1 else {
            Issue.record("the testbed's PID: \(status)")
            throw TestbedError.setupFailed("scripts/testbed status")
        }
        return String(pid)
    }

    /// ssh's ProxyCommand to the testbed's sshd: 127.0.0.1:22 in the testbed's network namespace.
    static func proxyCommand(pid: String) -> String {
        "/usr/bin/nsenter -t \(pid) -n /usr/bin/socat STDIO TCP:127.0.0.1:22"
    }

    /// Removes the controller's key from the testbed and the scratch directory.
    func tearDown() {
        _ = try? Testbed.run(["/bin/sh", "-c", "[ -f /root/.ssh/authorized_keys ] && sed -i '/ \(keyComment)$/d' /root/.ssh/authorized_keys; true"])
        try? FileManager.default.removeItem(at: directory)
    }

    struct Run: CustomStringConvertible {
        var result: CommandResult
        var seconds: Double
        /// The PLAY RECAP's counters for the testbed (ok, changed, failed…).
        var recap: [String: Int]
        /// The module's registered result.
        var registered: [String: Any]

        var description: String { "after \(String(format: "%.1f", seconds)) s: \(result)" }
        var machines: [[String: Any]] { registered["machines"] as? [[String: Any]] ?? [] }
    }

    func playbook(manifest: String, _ options: [String] = []) throws -> Run {
        let result = path("result-\(UUID().uuidString).json")
        let started = Date()
        let run = try Testbed.runLocal(["/usr/bin/env", "ANSIBLE_CONFIG=\(path("ansible.cfg"))", "ANSIBLE_STDOUT_CALLBACK=default",
                                        "ANSIBLE_FORCE_COLOR=0", "PYTHONDONTWRITEBYTECODE=1",
                                        "timeout", "300", "\(venv)/bin/ansible-playbook", path("playbook.yml"),
                                        "-e", "manifest=\(path(manifest))", "-e", "result_file=\(result)"] + options)
        let seconds = Date().timeIntervalSince(started)
        var recap: [String: Int] = [:]
        if let line = run.stdout.split(separator: "\n").last(where: { $0.hasPrefix("testbed ") && $0.contains(" ok=") }) {
            for word in line.split(separator: " ") {
                let pair = word.split(separator: "=")
                if pair.count == 2, let count = Int(pair[1]) { recap[String(pair[0])] = count }
            }
        }
        var registered: [String: Any] = [:]
        if let data = FileManager.default.contents(atPath: result),
           let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] {
            registered = object
        }
        return Run(result: run, seconds: seconds, recap: recap, registered: registered)
    }
}

extension EndToEndTests {
    @Test(.testbedAccounts) func anAnsiblePlaybookConvergesTheTestbedOnceAndThenChangesNothing() throws {
        let base = "e2e-ans-base"
        let names = ["e2e-ans-a", "e2e-ans-b"]
        try Fixture.with([base] + names) {
            try Fixture.busybox(base)
            let controller = try AnsibleController.make()
            defer { controller.tearDown() }
            func manifest(greeting: String) -> String {
                """
                name: e2e-ansible
                defaults:
                  settings:
                    Exec.Boot: false
                    Exec.Parameters: /bin/sleep 1000000
                machines:
                  e2e-ans-a:
                    image: { clone: \(base) }
                    state: running
                    settings:
                      Exec.Environment: ["GREETING=\(greeting)"]
                  e2e-ans-b:
                    image: { clone: \(base) }
                    state: stopped

                """
            }
            try controller.write("fleet.yaml", manifest(greeting: "hello"))
            try controller.write("fleet-edited.yaml", manifest(greeting: "bye"))

            // First run: both machines are made, and the task says so.
            let first = try controller.playbook(manifest: "fleet.yaml")
            #expect(first.result.status == 0, "\(first)")
            #expect(first.recap["changed"] == 1 && first.recap["failed"] == 0 && first.recap["unreachable"] == 0, "\(first.recap) \(first)")
            #expect(first.registered["changed"] as? Bool == true, "\(first.registered)")
            #expect((first.registered["changes"] as? Int ?? 0) >= 2, "\(first.registered)")
            #expect(first.machines.compactMap { $0["name"] as? String }.sorted() == names, "\(first.registered)")
            #expect(first.machines.allSatisfy { $0["result"] as? String == "changed" }, "\(first.registered)")
            let images = try Fixture.imageNames()
            for name in names { #expect(images.contains(name), "machinectl lists the image \(name): \(images)") }
            #expect(try Fixture.machinedState("e2e-ans-a") == "running")
            #expect(try Fixture.machinedState("e2e-ans-b") == nil, "e2e-ans-b stays stopped")
            let settings = try Testbed.mustSh("cat /etc/systemd/nspawn/e2e-ans-a.nspawn").stdout
            #expect(settings.contains("Environment=GREETING=hello"), "\(settings)")

            // Second run: nothing to do, nothing changed.
            let second = try controller.playbook(manifest: "fleet.yaml")
            #expect(second.result.status == 0, "\(second)")
            #expect(second.recap["changed"] == 0 && second.recap["failed"] == 0, "\(second.recap) \(second)")
            #expect(second.registered["changed"] as? Bool == false && second.registered["changes"] as? Int == 0, "\(second.registered)")
            #expect(second.machines.allSatisfy { $0["result"] as? String == "unchanged" }, "\(second.registered)")
            print("ansible: first run \(String(format: "%.1f", first.seconds)) s, second run \(String(format: "%.1f", second.seconds)) s")

            // An edited value under --check --diff: the plan is shown, and nothing is touched.
            let fingerprint = "sha256sum /etc/systemd/nspawn/e2e-ans-a.nspawn /etc/systemd/nspawn/e2e-ans-b.nspawn; machinectl list-images --no-legend --no-pager | grep e2e-ans- | sort"
            let before = try Testbed.mustSh(fingerprint).stdout
            let check = try controller.playbook(manifest: "fleet-edited.yaml", ["--check", "--diff"])
            #expect(check.result.status == 0, "\(check)")
            #expect(check.recap["changed"] == 1 && check.recap["failed"] == 0, "\(check.recap) \(check)")
            #expect(check.registered["changes"] as? Int == 1, "one value differs: \(check.registered)")
            let planned = check.machines.first { $0["name"] as? String == "e2e-ans-a" }
            #expect(planned?["action"] as? String == "update", "\(check.registered)")
            #expect(check.result.stdout.contains("GREETING=hello") && check.result.stdout.contains("GREETING=bye"),
                    "the diff shows the old and the new value: \(check.result.stdout)")
            #expect(check.result.stdout.contains("e2e-ans-a (update)"), "the diff names the machine: \(check.result.stdout)")
            #expect(try Testbed.mustSh(fingerprint).stdout == before, "--check changed nothing")
            #expect(try Fixture.machinedState("e2e-ans-a") == "running", "--check restarted nothing")

            // A manifest nspawnctl refuses fails the task with nspawnctl's message, naming the key and
            // the line of the text given (not the temporary file it was written to).
            try controller.write("fleet-refused.yaml", manifest(greeting: "bye").replacingOccurrences(of: "state: stopped", with: "stat: stopped"))
            let refused = try controller.playbook(manifest: "fleet-refused.yaml")
            #expect(refused.result.status == 2, "ansible-playbook exits 2 for a failed task: \(refused)")
            #expect(refused.recap["failed"] == 1 && refused.recap["changed"] == 0, "\(refused.recap) \(refused)")
            #expect(refused.result.stdout.contains("nspawnctl apply exited 2: content (e2e-ansible.yaml):"), "\(refused)")
            #expect(refused.result.stdout.contains("machines.e2e-ans-b.stat"), "\(refused)")
            #expect(try Testbed.mustSh(fingerprint).stdout == before, "a refused manifest changed nothing")
            let leftovers = try Testbed.sh("ls -A /root/.ansible/tmp 2>/dev/null | wc -l")
            #expect(leftovers.trimmed == "0", "no temporary manifest is left on the host: \(leftovers)")
            #expect(try Testbed.mustSh("cat /etc/systemd/nspawn/e2e-ans-a.nspawn").stdout.contains("Environment=GREETING=hello"))
        }
    }
}
