import Foundation
import Testing

/// The collection's connection plugin (`nspawnctl.machines.nspawnctl`: tasks run in a machine
/// through `nspawnctl exec`, files move with `copy-to`/`copy-from` or through exec) and its
/// inventory plugin (the machines `nspawnctl ls --json` lists), run by a real ansible-playbook
/// against a Debian guest booted in the testbed, two ways:
///
/// - **locally**: the controller is the testbed itself, where nspawnctl is installed. ansible-core
///   comes from the venv scripts/ansible-venv made on this machine: the testbed sees the repository
///   (and so the venv) read-only at /nspawnctl, and runs it with its own /usr/bin/python3 when the
///   Python versions match; otherwise pip on this machine installs ansible-core for the testbed's
///   Python next to the venv (the testbed has no network). Scratch files live in /testbed/share.
/// - **over ssh**: the controller is this machine, running the static nspawnctl of
///   .build-static with `--host ssh://root@nspawnctl-testbed`. ssh is this machine's OpenSSH with
///   the key, known_hosts and ProxyCommand of `AnsibleController`, given by a config file through
///   an `ssh` first in ansible-playbook's PATH (nspawnctl runs `ssh` from PATH, with the user's own
///   configuration).
struct AnsibleRoute {
    var name: String
    /// The scratch directory as this machine sees it, and as the controller sees it.
    var hostDirectory: String
    var directory: String
    /// The command before `ansible-playbook`'s or `ansible-inventory`'s own arguments.
    var command: (_ tool: String) -> [String]
    /// How it runs: in the testbed or here.
    var inTestbed: Bool

    func hostPath(_ name: String) -> String { "\(hostDirectory)/\(name)" }
    func path(_ name: String) -> String { "\(directory)/\(name)" }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: hostPath(name), atomically: true, encoding: .utf8)
    }

    func run(_ tool: String, _ arguments: [String]) throws -> TimedResult {
        let started = Date()
        let argv = command(tool) + arguments
        let result = inTestbed ? try Testbed.run(argv) : try Testbed.runLocal(argv)
        return TimedResult(result: result, seconds: Date().timeIntervalSince(started))
    }

    /// The PLAY RECAP's counters, per host.
    static func recap(_ output: String) -> [String: [String: Int]] {
        var hosts: [String: [String: Int]] = [:]
        for line in output.split(separator: "\n") where line.contains(" ok=") && line.contains(" : ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            var counters: [String: Int] = [:]
            for word in parts[1].split(separator: " ") {
                let pair = word.split(separator: "=")
                if pair.count == 2, let count = Int(pair[1]) { counters[String(pair[0])] = count }
            }
            hosts[parts[0].trimmingCharacters(in: .whitespaces)] = counters
        }
        return hosts
    }
}

extension AnsibleController {
    /// ansible-core for the testbed's Python, as paths inside the testbed: the interpreter, the
    /// directory of the ansible-* scripts, and the environment they need.
    func ansibleInTestbed() throws -> (python: String, bin: String, environment: [String]) {
        let root = Testbed.repositoryRoot.path
        let version = "import sys; print('%d.%d' % sys.version_info[:2])"
        let ours = try Testbed.runLocal(["\(venv)/bin/python", "-c", version]).trimmed
        let theirs = try Testbed.run(["/usr/bin/python3", "-c", version]).trimmed
        guard !theirs.isEmpty else {
            Issue.record("the testbed has no /usr/bin/python3")
            throw TestbedError.setupFailed("python3 in the testbed")
        }
        if ours == theirs, venv.hasPrefix(root + "/") {
            let inside = "/nspawnctl" + venv.dropFirst(root.count)
            return ("\(inside)/bin/python", "\(inside)/bin", [])
        }
        // Another Python (or a venv outside the repository): wheels for the testbed's Python, made
        // here, under the repository so that the testbed sees them.
        let core = try Testbed.runLocal(["\(venv)/bin/python", "-c", "import ansible.release; print(ansible.release.__version__)"]).trimmed
        let target = "\(root)/.build-venv/ansible-core-\(core)-python\(theirs)"
        if !FileManager.default.fileExists(atPath: "\(target)/.complete") {
            try? FileManager.default.removeItem(atPath: target)
            let machine = try Testbed.runLocal(["/usr/bin/uname", "-m"]).trimmed
            let pip = try Testbed.runLocal(["\(venv)/bin/pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                                            "--target", target, "--python-version", theirs, "--platform", "manylinux2014_\(machine)",
                                            "--only-binary=:all:", "ansible-core==\(core)"])
            guard pip.status == 0 else {
                Issue.record("ansible-core \(core) for the testbed's Python \(theirs) (this machine's is \(ours)): \(pip)")
                throw TestbedError.setupFailed("pip install --target")
            }
            _ = FileManager.default.createFile(atPath: "\(target)/.complete", contents: nil)
        }
        let inside = "/nspawnctl" + target.dropFirst(root.count)
        return ("/usr/bin/python3", "\(inside)/bin", ["PYTHONPATH=\(inside)"])
    }

    /// The route where ansible-playbook runs in the testbed, beside the machines.
    func localRoute() throws -> AnsibleRoute {
        let name = "ansible-conn-\(UUID().uuidString)"
        let hostDirectory = "\(Testbed.hostShareDirectory)/\(name)"
        try FileManager.default.createDirectory(atPath: hostDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let directory = "/testbed/share/\(name)"
        let ansible = try ansibleInTestbed()
        let route = AnsibleRoute(name: "local", hostDirectory: hostDirectory, directory: directory, command: { tool in
            ["/usr/bin/env", "ANSIBLE_CONFIG=\(directory)/ansible.cfg", "ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_FORCE_COLOR=0",
             "PYTHONDONTWRITEBYTECODE=1"] + ansible.environment + ["timeout", "300", ansible.python, "\(ansible.bin)/\(tool)"]
        }, inTestbed: true)
        try writeConfiguration(route, collections: "/nspawnctl/ansible", inventory: "plugin: nspawnctl.machines.nspawnctl\n")
        return route
    }

    /// The route where ansible-playbook runs here and nspawnctl reaches the testbed with --host ssh://.
    func sshRoute(client: String) throws -> AnsibleRoute {
        let hostDirectory = path("ssh-route")
        try FileManager.default.createDirectory(atPath: hostDirectory + "/bin", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let pid = try Self.testbedPID()
        try """
            Host nspawnctl-testbed
                HostName 127.0.0.1
                User root
                IdentityFile \(path("id_ed25519"))
                IdentitiesOnly yes
                UserKnownHostsFile \(path("known_hosts"))
                StrictHostKeyChecking yes
                HostKeyAlias nspawnctl-testbed
                ControlMaster no
                ProxyCommand \(Self.proxyCommand(pid: pid))

            """.write(toFile: "\(hostDirectory)/ssh_config", atomically: true, encoding: .utf8)
        try "#!/bin/sh\nexec /usr/bin/ssh -F '\(hostDirectory)/ssh_config' \"$@\"\n"
            .write(toFile: "\(hostDirectory)/bin/ssh", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: "\(hostDirectory)/bin/ssh")
        let searchPath = "\(hostDirectory)/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let venv = venv
        let route = AnsibleRoute(name: "ssh", hostDirectory: hostDirectory, directory: hostDirectory, command: { tool in
            ["/usr/bin/env", "PATH=\(searchPath)", "ANSIBLE_CONFIG=\(hostDirectory)/ansible.cfg", "ANSIBLE_STDOUT_CALLBACK=default",
             "ANSIBLE_FORCE_COLOR=0", "PYTHONDONTWRITEBYTECODE=1", "timeout", "300", "\(venv)/bin/\(tool)"]
        }, inTestbed: false)
        try writeConfiguration(route, collections: Testbed.repositoryRoot.appendingPathComponent("ansible").path, inventory: """
            plugin: nspawnctl.machines.nspawnctl
            host: ssh://root@nspawnctl-testbed
            nspawnctl_path: \(client)

            """)
        return route
    }

    /// ansible.cfg (no pipelining setting: the connection's default is on), the inventory plugin's
    /// file, and the playbooks.
    private func writeConfiguration(_ route: AnsibleRoute, collections: String, inventory: String) throws {
        try route.write("ansible.cfg", """
            [defaults]
            inventory = \(route.path("machines.nspawnctl.yml"))
            collections_path = \(collections)
            home = \(route.path("ansible-home"))
            local_tmp = \(route.path("ansible-local-tmp"))
            nocolor = true
            retry_files_enabled = false
            interpreter_python = /usr/bin/python3
            # The connection's -vvv lines (each nspawnctl it runs), for the test, without -vvv's output.
            log_path = \(route.path("ansible.log"))
            log_verbosity = 3

            """)
        try route.write("machines.nspawnctl.yml", inventory)
        try route.write("all.nspawnctl.yml", inventory + "all: true\n")
        // Everything registered goes back to the controller as JSON for the test; the last task fails.
        try route.write("tasks.yml", """
            - name: Tasks in the machine
              hosts: "{{ target }}"
              gather_facts: false
              tasks:
                - name: A directory
                  ansible.builtin.file:
                    path: /srv/ansible-e2e
                    state: directory
                    mode: "0750"
                  register: made
                - name: A file
                  ansible.builtin.copy:
                    content: "{{ payload }}"
                    dest: /srv/ansible-e2e/copied.txt
                    mode: "0640"
                  register: copied
                - name: A command whose output and status come back
                  ansible.builtin.command:
                    argv: [/bin/sh, -c, 'cat /srv/ansible-e2e/copied.txt; echo "$0 ran as $(id -un)" > /srv/ansible-e2e/ran.txt; exit 3', "it's $0"]
                  register: ran
                  failed_when: ran.rc != 3
                - name: A raw command, whose status is the connection's
                  ansible.builtin.raw: echo "raw out"; echo "raw err" >&2; exit 5
                  register: raw
                  failed_when: raw.rc != 5
                - name: As another user
                  ansible.builtin.command: id -un
                  become: true
                  become_method: nspawnctl.machines.nspawnctl
                  become_user: nobody
                  register: other_user
                - name: Without pipelining (the module file goes in with put_file)
                  ansible.builtin.command: id -un
                  vars:
                    ansible_pipelining: false
                  register: unpiped
                - name: Its state
                  ansible.builtin.stat:
                    path: /srv/ansible-e2e/copied.txt
                    checksum_algorithm: sha256
                  register: stated
                - name: Fetched back
                  ansible.builtin.fetch:
                    src: /srv/ansible-e2e/copied.txt
                    dest: "{{ fetched }}"
                    flat: true
                  register: fetched_back
                - name: Keep the results for the test
                  ansible.builtin.copy:
                    content: "{{ {'made': made, 'copied': copied, 'ran': ran, 'raw': raw, 'other_user': other_user, 'unpiped': unpiped, 'stated': stated, 'fetched': fetched_back} | to_json }}"
                    dest: "{{ result_file }}"
                    mode: "0600"
                  delegate_to: localhost
                - name: A command that fails in the machine
                  ansible.builtin.command: /bin/sh -c 'echo failing >&2; exit 7'

            """)
        try route.write("unreachable.yml", """
            - name: A machine that is not running
              hosts: "{{ target }}"
              gather_facts: false
              tasks:
                - name: Anything
                  ansible.builtin.command: "true"

            """)
    }
}

extension EndToEndTests {
    @Test(.testbedAccounts) func theConnectionPluginRunsTasksInADebianGuestLocallyAndOverSSHAndTheInventoryPluginListsIt() throws {
        let guest = "e2e-ansconn-deb"
        let stopped = "e2e-ansconn-off"
        let client = Testbed.repositoryRoot.appendingPathComponent(".build-static/debug/nspawnctl").path
        guard FileManager.default.isExecutableFile(atPath: client) else {
            Issue.record("no static nspawnctl at \(client): scripts/build -c debug")
            return
        }
        try Fixture.with([guest, stopped]) {
            try Fixture.systemdRoot(guest)
            try Fixture.busybox(stopped)
            // The guest is a copy of the testbed's Debian root, whose package list holds python3 for Ansible.
            let python = try Testbed.sh("chroot /var/lib/machines/\(guest) /usr/bin/python3 --version")
            #expect(python.status == 0 && python.stdout.hasPrefix("Python 3."), "python3 in the guest: \(python)")
            try Testbed.mustSh("machinectl start \(guest) && for i in $(seq 1 100); do [ \"$(machinectl show \(guest) -p State --value 2>/dev/null)\" = running ] && exit 0; sleep 0.1; done; exit 1")

            let controller = try AnsibleController.make()
            defer { controller.tearDown() }
            let local = try controller.localRoute()
            defer { try? FileManager.default.removeItem(atPath: local.hostDirectory) }
            let overSSH = try controller.sshRoute(client: client)

            var seconds: [String: Double] = [:]
            var calls: [String: Int] = [:]
            for route in [local, overSSH] {
                // A payload the shell would mangle, were it quoted wrongly anywhere on the way.
                let payload = "it's \"\(route.name)\" $HOME `id` \\ \(UUID().uuidString)\n"
                let variables: [String: Any] = ["target": guest, "payload": payload, "fetched": route.path("fetched.txt"),
                                                "result_file": route.path("result.json")]
                try route.write("vars.json", String(decoding: try JSONSerialization.data(withJSONObject: variables), as: UTF8.self))
                let run = try route.run("ansible-playbook", [route.path("tasks.yml"), "-e", "@\(route.path("vars.json"))"])
                seconds[route.name] = run.seconds
                let recap = AnsibleRoute.recap(run.stdout)[guest] ?? [:]
                // The last task fails inside the machine: ansible-playbook says so with 2, the task with the command's status.
                #expect(run.status == 2, "\(route.name): \(run)")
                #expect(recap["failed"] == 1 && recap["unreachable"] == 0 && recap["ok"] == 9, "\(route.name): \(recap) \(run)")
                let failure = run.stdout.firstMatch(of: /fatal: \[e2e-ansconn-deb\]: FAILED! => (\{.*\})/).map { String($0.1) } ?? ""
                let failed = (try? JSONSerialization.jsonObject(with: Data(failure.utf8))) as? [String: Any] ?? [:]
                #expect(failed["rc"] as? Int == 7 && failed["stderr"] as? String == "failing", "\(route.name): \(failure) \(run)")

                // What the connection ran: copy-to/copy-from here, exec and cat through --host, --user for become.
                let log = (FileManager.default.contents(atPath: route.hostPath("ansible.log")).map { String(decoding: $0, as: UTF8.self) }) ?? ""
                let nspawnctl = route.inTestbed ? "/usr/local/bin/nspawnctl" : "\(client) --host ssh://root@nspawnctl-testbed"
                calls[route.name] = log.components(separatedBy: "EXEC \(nspawnctl) ").count - 1
                #expect(log.contains("EXEC \(nspawnctl) exec --json --interactive \(guest) -- /bin/sh -c "), "\(route.name): \(log)")
                #expect(log.contains("EXEC \(nspawnctl) exec --json --user nobody --interactive \(guest) -- "), "\(route.name): \(log)")
                if route.inTestbed {
                    #expect(log.contains("EXEC \(nspawnctl) copy-to --json --replace \(guest) ") && log.contains("EXEC \(nspawnctl) copy-from --json --replace \(guest) /srv/ansible-e2e/copied.txt "),
                            "\(route.name): \(log)")
                } else {
                    #expect(!log.contains(" copy-to ") && !log.contains(" copy-from "), "\(route.name): \(log)")
                    #expect(log.contains("-- /bin/sh -c 'set -e; umask 077;") && log.contains("-- /bin/sh -c 'exec cat -- \"$1\"' sh /srv/ansible-e2e/copied.txt"),
                            "\(route.name): \(log)")
                }
                let data = FileManager.default.contents(atPath: route.hostPath("result.json")) ?? Data()
                let results = (try? JSONSerialization.jsonObject(with: data)) as? [String: [String: Any]] ?? [:]
                #expect(results["made"]?["changed"] as? Bool == true, "\(route.name): \(results)")
                #expect(results["copied"]?["changed"] as? Bool == true, "\(route.name): \(results)")
                #expect(results["ran"]?["rc"] as? Int == 3 && results["ran"]?["stdout"] as? String == String(payload.dropLast()),
                        "\(route.name): \(results["ran"] ?? [:])")
                #expect(results["raw"]?["rc"] as? Int == 5 && results["raw"]?["stdout"] as? String == "raw out\n"
                        && results["raw"]?["stderr"] as? String == "raw err\n", "\(route.name): \(results["raw"] ?? [:])")
                #expect(results["other_user"]?["stdout"] as? String == "nobody", "\(route.name): \(results["other_user"] ?? [:])")
                #expect(results["unpiped"]?["stdout"] as? String == "root", "\(route.name): \(results["unpiped"] ?? [:])")
                let stat = results["stated"]?["stat"] as? [String: Any] ?? [:]
                #expect(stat["exists"] as? Bool == true && stat["mode"] as? String == "0640" && stat["size"] as? Int == payload.utf8.count,
                        "\(route.name): \(stat)")
                #expect(results["fetched"]?["changed"] as? Bool == true, "\(route.name): \(results["fetched"] ?? [:])")

                // From outside: the machine's root on disk, and the controller's copy.
                let root = "/var/lib/machines/\(guest)"
                #expect(try Testbed.mustSh("cat \(root)/srv/ansible-e2e/copied.txt").stdout == payload, "\(route.name)")
                #expect(try Testbed.mustSh("stat -c '%a %U:%G' \(root)/srv/ansible-e2e \(root)/srv/ansible-e2e/copied.txt").stdout
                        == "750 root:root\n640 root:root\n", "\(route.name)")
                #expect(try Testbed.mustSh("cat \(root)/srv/ansible-e2e/ran.txt").stdout == "it's $0 ran as root\n", "\(route.name)")
                let checksum = try Testbed.mustSh("sha256sum < \(root)/srv/ansible-e2e/copied.txt | cut -d' ' -f1").trimmed
                #expect(stat["checksum"] as? String == checksum, "\(route.name): \(stat)")
                let fetched = FileManager.default.contents(atPath: route.hostPath("fetched.txt")).map { String(decoding: $0, as: UTF8.self) }
                #expect(fetched == payload, "\(route.name): the fetched copy")
                let leftovers = try Testbed.sh("ls -A \(root)/root/.ansible/tmp 2>/dev/null | wc -l")
                #expect(leftovers.trimmed == "0", "\(route.name): no temporary files are left in the machine: \(leftovers)")
                try Testbed.mustSh("rm -rf \(root)/srv/ansible-e2e")

                // A machine that is not running: unreachable, with nspawnctl's message.
                let unreachable = try route.run("ansible-playbook", [route.path("unreachable.yml"), "-e", "target=\(stopped)"])
                #expect(unreachable.status == 4, "\(route.name): \(unreachable)")
                #expect(AnsibleRoute.recap(unreachable.stdout)[stopped]?["unreachable"] == 1, "\(route.name): \(unreachable)")
                #expect(unreachable.stdout.contains("UNREACHABLE!") && unreachable.stdout.contains("not running"), "\(route.name): \(unreachable)")

                // The inventory is what ls --json lists: names, states, the connection.
                for (file, all) in [("machines.nspawnctl.yml", false), ("all.nspawnctl.yml", true)] {
                    let listed = try Testbed.run(["nspawnctl", "ls", "--json"] + (all ? ["--all"] : []))
                    let machines = (try? JSONSerialization.jsonObject(with: Data(listed.stdout.utf8))) as? [[String: Any]] ?? []
                    var states: [String: String] = [:]
                    for machine in machines { if let name = machine["name"] as? String { states[name] = machine["state"] as? String } }
                    let inventory = try route.run("ansible-inventory", ["-i", route.path(file), "--list"])
                    #expect(inventory.status == 0, "\(route.name) \(file): \(inventory)")
                    let listing = (try? JSONSerialization.jsonObject(with: Data(inventory.stdout.utf8))) as? [String: Any] ?? [:]
                    // ansible-core 2.19 marks strings an inventory plugin read from a program as unsafe
                    // (never templated), {"__ansible_unsafe": VALUE} in this JSON.
                    let hostvars = ((listing["_meta"] as? [String: Any])?["hostvars"] as? [String: [String: Any]] ?? [:]).mapValues {
                        $0.mapValues { value in ((value as? [String: Any]).flatMap { $0.count == 1 ? $0["__ansible_unsafe"] : nil }) ?? value }
                    }
                    #expect(!states.isEmpty && hostvars.keys.sorted() == states.keys.sorted(), "\(route.name) \(file): \(hostvars.keys.sorted()) vs ls \(states)")
                    #expect(hostvars.allSatisfy { states[$0.key] == $0.value["nspawnctl_state"] as? String }, "\(route.name) \(file): \(hostvars)")
                    #expect(hostvars.values.allSatisfy { $0["ansible_connection"] as? String == "nspawnctl.machines.nspawnctl" })
                    #expect(all == states.keys.contains(".host"), "\(route.name) \(file): \(states)")
                    let running = (listing["nspawnctl_running"] as? [String: Any])?["hosts"] as? [String] ?? []
                    let stoppedGroup = (listing["nspawnctl_stopped"] as? [String: Any])?["hosts"] as? [String] ?? []
                    #expect(running.contains(guest) && stoppedGroup.contains(stopped), "\(route.name) \(file): \(listing)")
                    #expect(hostvars[guest]?["nspawnctl_os"] as? String == machines.first { $0["name"] as? String == guest }?["os"] as? String)
                    if route.inTestbed {
                        #expect(hostvars[guest]?["ansible_nspawnctl_host"] == nil)
                    } else {
                        #expect(hostvars[guest]?["ansible_nspawnctl_host"] as? String == "ssh://root@nspawnctl-testbed")
                        #expect(hostvars[guest]?["ansible_nspawnctl_path"] as? String == client)
                    }
                }
            }
            print("ansible connection: 10 tasks in the testbed \(String(format: "%.1f", seconds["local"] ?? 0)) s "
                  + "(\(calls["local"] ?? 0) nspawnctl runs), over ssh \(String(format: "%.1f", seconds["ssh"] ?? 0)) s (\(calls["ssh"] ?? 0))")
        }
    }
}
