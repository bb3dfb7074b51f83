"""The nspawnctl connection and become plugins, loaded by Ansible's own plugin loader, against a fake
nspawnctl that records how it was called and plays the machine on this host: `exec` runs the command
here, `copy-to`/`copy-from` copy here, unless a scenario makes it fail as nspawnctl does.

    .build-venv/ansible-core-*/bin/python -B -m unittest discover -s ansible/ansible_collections/nspawnctl/machines/tests/unit
"""

import json
import os
import shlex
import shutil
import sys
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import collection_loader  # noqa: E402  (before the plugins are loaded)

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound  # noqa: E402
from ansible.playbook.play_context import PlayContext  # noqa: E402
from ansible.plugins.loader import become_loader, connection_loader  # noqa: E402
from ansible.plugins.shell.sh import ShellModule  # noqa: E402

# Records argv and stdin; a scenario (verb -> rc, stderr) fails the verb as nspawnctl would, else
# the verb is done here: exec runs what follows "--" (stdin passed only with --interactive).
FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, shutil, subprocess, sys
    argv = sys.argv[1:]
    verb = next(a for a in argv if a in ("exec", "copy-to", "copy-from"))
    call = {{"argv": argv}}
    if verb == "exec" and "--interactive" in argv:
        data = sys.stdin.buffer.read()
        call["stdin"] = data.decode("utf-8", "replace")
        sys.stdin = None
    with open(os.environ["FAKE_NSPAWNCTL_CALLS"], "a") as log:
        log.write(json.dumps(call) + "\\n")
    scenario = json.load(open(os.environ["FAKE_NSPAWNCTL_SCENARIO"])) if os.path.exists(os.environ["FAKE_NSPAWNCTL_SCENARIO"]) else {{}}
    if verb in scenario:
        sys.stderr.write(scenario[verb]["stderr"])
        sys.exit(scenario[verb]["rc"])
    if verb == "exec":
        command = argv[argv.index("--") + 1:]
        if "--interactive" in argv:
            sys.exit(subprocess.run(command, input=data).returncode)
        sys.exit(subprocess.run(command, stdin=subprocess.DEVNULL).returncode)
    source, destination = argv[-2:]
    shutil.copyfile(source, destination)
    """)


class ConnectionTestCase(collection_loader.FakeNspawnctlCase):
    FAKE = FAKE
    PREFIX = "nspawnctl-connection-test-"

    def connection(self, machine="web1", **options):
        play_context = PlayContext()
        play_context.executable = "/bin/sh"
        connection = connection_loader.get("nspawnctl.machines.nspawnctl", play_context, None)
        connection._shell = ShellModule()
        connection.set_options(direct=dict({"remote_addr": machine, "nspawnctl_path": self.binary}, **options))
        return connection

    def fail(self, verb, rc, stderr):
        self.scenario(**{verb: {"rc": rc, "stderr": stderr}})


class ExecTests(ConnectionTestCase):
    def test_the_plugin_loads_with_its_documented_options(self):
        connection = self.connection()
        self.assertEqual(connection.transport, "nspawnctl.machines.nspawnctl")
        self.assertTrue(connection.has_pipelining)
        self.assertEqual(connection.get_option("nspawnctl_transfer"), "auto")
        self.assertIs(connection.get_option("pipelining"), True, "one nspawnctl exec per module unless turned off")
        self.assertIsNone(connection.get_option("nspawnctl_host"))

    def test_a_shell_command_string_runs_with_sh_c_quoted_as_given_and_its_status_comes_back(self):
        # What Ansible sends: the executable around a quoted command, as _low_level_execute_command builds it.
        inner = "printf '%s|' \"a b\" 'c$d' \"$(echo e)\"; echo; echo oops >&2; exit 3"
        command = "/bin/sh -c " + shlex.quote(inner)
        rc, out, err = self.connection().exec_command(command)
        self.assertEqual((rc, out, err), (3, b"a b|c$d|e|\n", b"oops\n"))
        self.assertEqual(self.calls()[0]["argv"], ["exec", "--json", "web1", "--", "/bin/sh", "-c", command])

    def test_pipelined_module_code_goes_to_stdin_with_interactive(self):
        rc, out, _ = self.connection().exec_command("/bin/sh -c 'cat; echo done'", in_data=b"print('module')\n")
        self.assertEqual((rc, out), (0, b"print('module')\ndone\n"))
        call = self.calls()[0]
        self.assertEqual(call["argv"][:4], ["exec", "--json", "--interactive", "web1"])
        self.assertEqual(call["stdin"], "print('module')\n")

    def test_without_in_data_the_command_reads_nothing(self):
        rc, out, _ = self.connection().exec_command("cat")
        self.assertEqual((rc, out), (0, b""))
        self.assertNotIn("--interactive", self.calls()[0]["argv"])

    def test_remote_user_becomes_exec_user(self):
        self.connection(remote_user="app").exec_command("true")
        self.assertEqual(self.calls()[0]["argv"][:5], ["exec", "--json", "--user", "app", "web1"])

    def test_nspawnctl_host_goes_first_as_host(self):
        self.connection(nspawnctl_host="ssh://root@build1.example").exec_command("true")
        self.assertEqual(self.calls()[0]["argv"][:4], ["--host", "ssh://root@build1.example", "exec", "--json"])

    def test_a_machine_that_is_not_running_is_a_connection_failure_with_nspawnctls_message(self):
        self.fail("exec", 5, '{"error":{"code":"conflict","message":"machine \'web1\' is not running"}}\n')
        with self.assertRaises(AnsibleConnectionFailure) as caught:
            self.connection().exec_command("true")
        self.assertIn("machine 'web1' is not running", str(caught.exception))
        self.assertIn("exit 5", str(caught.exception))

    def test_no_such_machine_is_a_connection_failure(self):
        self.fail("exec", 125, '{"error":{"code":"not_found","message":"no machine or image \'web9\'"}}\n')
        with self.assertRaises(AnsibleConnectionFailure) as caught:
            self.connection(machine="web9").exec_command("true")
        self.assertIn("no machine or image 'web9'", str(caught.exception))

    def test_a_refused_command_line_is_a_connection_failure(self):
        self.fail("exec", 125, "Error: Unknown option '--interactive'\nUsage: nspawnctl exec ...\n")
        with self.assertRaises(AnsibleConnectionFailure) as caught:
            self.connection().exec_command("true")
        self.assertIn("Unknown option", str(caught.exception))

    def test_a_command_that_exits_125_or_5_itself_keeps_its_status(self):
        for status in (125, 5, 126, 127):
            rc, _, err = self.connection().exec_command("echo plain >&2; exit %d" % status)
            self.assertEqual((rc, err), (status, b"plain\n"))

    def test_a_missing_nspawnctl_is_an_error(self):
        with self.assertRaises(AnsibleError) as caught:
            self.connection(nspawnctl_path=os.path.join(self.work, "absent")).exec_command("true")
        self.assertIn("cannot find the nspawnctl executable", str(caught.exception))


class BecomeTests(ConnectionTestCase):
    def become(self, connection, method="nspawnctl.machines.nspawnctl", user="nobody"):
        plugin = become_loader.get(method)
        plugin.set_options(direct={"become_user": user})
        connection.set_become_plugin(plugin)
        return plugin

    def test_become_runs_sudoable_commands_as_the_become_user(self):
        connection = self.connection(remote_user="app")
        plugin = self.become(connection)
        self.assertEqual(plugin.build_become_command("id -un", connection._shell), "id -un")
        connection.exec_command("true", sudoable=True)
        connection.exec_command("true", sudoable=False)
        argvs = [call["argv"] for call in self.calls()]
        self.assertEqual(argvs[0][2:4], ["--user", "nobody"])
        self.assertEqual(argvs[1][2:4], ["--user", "app"], "a command that is not sudoable runs as remote_user")

    def test_the_become_plugin_refuses_another_connection(self):
        plugin = become_loader.get("nspawnctl.machines.nspawnctl")
        plugin.set_options(direct={"become_user": "nobody"})
        with self.assertRaises(AnsibleError) as caught:
            plugin.build_become_command("id -un", ShellModule())
        self.assertIn("works only with the nspawnctl.machines.nspawnctl connection", str(caught.exception))

    def test_other_become_methods_wrap_the_command_as_usual(self):
        connection = self.connection()
        plugin = self.become(connection, method="ansible.builtin.sudo")
        wrapped = plugin.build_become_command("id -un", connection._shell)
        self.assertIn("sudo", wrapped)
        connection.exec_command(wrapped)
        self.assertNotIn("--user", self.calls()[0]["argv"])


class TransferTests(ConnectionTestCase):
    def setUp(self):
        super().setUp()
        self.source = os.path.join(self.work, "source")
        with open(self.source, "wb") as stream:
            stream.write(b"payload \x00\xff with 'quotes' and $dollars\n")
        self.machine_path = os.path.join(self.work, "in the machine")

    def test_locally_put_and_fetch_use_copy_to_and_copy_from(self):
        connection = self.connection()
        connection.put_file(self.source, self.machine_path)
        fetched = os.path.join(self.work, "fetched")
        connection.fetch_file(self.machine_path, fetched)
        with open(fetched, "rb") as stream:
            self.assertEqual(stream.read(), b"payload \x00\xff with 'quotes' and $dollars\n")
        self.assertEqual([call["argv"] for call in self.calls()], [
            ["copy-to", "--json", "--replace", "web1", self.source, self.machine_path],
            ["copy-from", "--json", "--replace", "web1", self.machine_path, fetched]])

    def test_through_a_host_put_and_fetch_stream_through_exec(self):
        connection = self.connection(nspawnctl_host="ssh://root@build1.example", remote_user="app")
        connection.put_file(self.source, self.machine_path)
        with open(self.machine_path, "rb") as stream:
            self.assertEqual(stream.read(), b"payload \x00\xff with 'quotes' and $dollars\n")
        self.assertEqual(oct(os.stat(self.machine_path).st_mode & 0o777), "0o600")
        fetched = os.path.join(self.work, "fetched")
        connection.fetch_file(self.machine_path, fetched)
        with open(fetched, "rb") as stream:
            self.assertEqual(stream.read(), b"payload \x00\xff with 'quotes' and $dollars\n")
        put, fetch = self.calls()
        self.assertEqual(put["argv"][:8], ["--host", "ssh://root@build1.example", "exec", "--json", "--user", "app", "--interactive", "web1"])
        self.assertEqual(put["argv"][-1], self.machine_path, "the path is an argument, never part of the script")
        self.assertNotIn("--interactive", fetch["argv"])
        self.assertEqual(fetch["argv"][-1], self.machine_path)
        self.assertEqual([name for name in os.listdir(self.work) if name.startswith(".nspawnctl")], [])

    def test_a_file_missing_in_the_machine_is_not_found_and_leaves_nothing(self):
        connection = self.connection(nspawnctl_transfer="exec")
        fetched = os.path.join(self.work, "fetched")
        with self.assertRaises(AnsibleFileNotFound):
            connection.fetch_file(os.path.join(self.work, "absent"), fetched)
        self.assertFalse(os.path.exists(fetched))
        self.assertEqual([name for name in os.listdir(self.work) if name.startswith(".nspawnctl")], [])

    def test_a_missing_local_file_is_not_found(self):
        with self.assertRaises(AnsibleFileNotFound):
            self.connection().put_file(os.path.join(self.work, "absent"), self.machine_path)
        self.assertEqual(self.calls(), [])

    def test_a_copy_nspawnctl_refuses_fails_with_its_message(self):
        self.fail("copy-to", 4, '{"error":{"code":"permission_denied","message":"copy-to runs on this host only, as root"}}\n')
        with self.assertRaises(AnsibleError) as caught:
            self.connection().put_file(self.source, self.machine_path)
        self.assertIn("copy-to runs on this host only, as root", str(caught.exception))

    def test_copy_through_a_host_is_refused_before_running_anything(self):
        connection = self.connection(nspawnctl_host="ssh://root@build1.example", nspawnctl_transfer="copy")
        with self.assertRaises(AnsibleError) as caught:
            connection.put_file(self.source, self.machine_path)
        self.assertIn("local host only", str(caught.exception))
        self.assertEqual(self.calls(), [])

    def test_nspawnctl_failing_during_a_streamed_put_is_a_connection_failure(self):
        self.fail("exec", 125, '{"error":{"code":"unreachable","message":"cannot reach build1.example"}}\n')
        with self.assertRaises(AnsibleConnectionFailure) as caught:
            self.connection(nspawnctl_host="ssh://root@build1.example").put_file(self.source, self.machine_path)
        self.assertIn("cannot reach build1.example", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
