"""The module's handling of nspawnctl's plan/apply contract, through its real main(), against a fake
nspawnctl that prints what a scenario says and records how it was called.

    .build-venv/ansible-core-*/bin/python -B -m unittest discover -s ansible/ansible_collections/nspawnctl/machines/tests/unit
"""

import contextlib
import io
import json
import os
import shutil
import stat
import sys
import tempfile
import textwrap
import unittest

COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
sys.path.insert(0, COLLECTIONS_ROOT)

from ansible.module_utils import basic  # noqa: E402
from ansible_collections.nspawnctl.machines.plugins.modules import nspawnctl_apply  # noqa: E402

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19
    @contextlib.contextmanager
    def patch_module_args(args):
        from unittest import mock
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()):
            yield

# The fake: answers with the scenario's stdout and stderr (__FILE__ standing for the manifest's
# path) and exit status, and records its argv and what the manifest file held (content, its mode and its
# directory's) while it ran.
FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    scenario = json.load(open(os.environ["FAKE_NSPAWNCTL_SCENARIO"]))
    call = {{"argv": sys.argv[1:]}}
    if "-f" in sys.argv:
        path = sys.argv[sys.argv.index("-f") + 1]
        call["file"] = path
        if os.path.exists(path):
            call["content"] = open(path).read()
            call["mode"] = oct(os.stat(path).st_mode & 0o777)
            call["directoryMode"] = oct(os.stat(os.path.dirname(path)).st_mode & 0o777)
    with open(os.environ["FAKE_NSPAWNCTL_CALLS"], "a") as log:
        log.write(json.dumps(call) + "\\n")
    answer = scenario.get(sys.argv[1], scenario.get("*", {{}}))
    sys.stdout.write(answer.get("stdout", "").replace("__FILE__", call.get("file", "")))
    sys.stderr.write(answer.get("stderr", "").replace("__FILE__", call.get("file", "")))
    sys.exit(answer.get("rc", 0))
    """)

PLAN = {
    "manifest": "demo", "file": "/srv/demo.yaml", "changes": 3,
    "machines": [
        {"name": "web1", "action": "create", "changes": [
            {"op": "+", "field": "machine", "new": "clone of debian-base"}]},
        {"name": "web2", "action": "update", "changes": [
            {"op": "~", "field": "settings.Network.Port", "old": ["tcp:1:1"], "new": ["tcp:8080:80"]},
            {"op": "-", "field": "settings.Exec.Environment", "old": ["A=1"]}]},
        {"name": "db", "action": "none", "changes": []},
    ]}
APPLIED = {
    "manifest": "demo", "file": "/srv/demo.yaml", "changes": 3, "failed": 0,
    "machines": [
        {"name": "web1", "result": "changed", "changes": PLAN["machines"][0]["changes"]},
        {"name": "web2", "result": "changed", "changes": PLAN["machines"][1]["changes"]},
        {"name": "db", "result": "unchanged", "changes": []},
    ]}
CONVERGED = {
    "manifest": "demo", "file": "/srv/demo.yaml", "changes": 0, "failed": 0,
    "machines": [{"name": name, "result": "unchanged", "changes": []} for name in ("web1", "web2", "db")]}
NOTHING_PLANNED = {
    "manifest": "demo", "file": "/srv/demo.yaml", "changes": 0,
    "machines": [{"name": name, "action": "none", "changes": []} for name in ("web1", "web2", "db")]}
PARTLY_FAILED = {
    "manifest": "demo", "file": "/srv/demo.yaml", "changes": 1, "failed": 1,
    "machines": [
        {"name": "web1", "result": "changed", "changes": PLAN["machines"][0]["changes"]},
        {"name": "web2", "result": "failed", "changes": [], "error": "machine 'web2': run[0] exited with 3", "rolled_back": True},
        {"name": "db", "result": "skipped", "changes": []},
    ]}


class NspawnctlApplyTests(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="nspawnctl-apply-test-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.remote_tmp = os.path.join(self.work, "remote-tmp")
        os.mkdir(self.remote_tmp, 0o700)
        self.binary = os.path.join(self.work, "bin", "nspawnctl")
        os.mkdir(os.path.dirname(self.binary))
        with open(self.binary, "w") as stream:
            stream.write(FAKE.format(python=sys.executable))
        os.chmod(self.binary, 0o755)
        self.calls_path = os.path.join(self.work, "calls.jsonl")
        self.scenario_path = os.path.join(self.work, "scenario.json")
        self.manifest = os.path.join(self.work, "demo.yaml")
        with open(self.manifest, "w") as stream:
            stream.write("machines: {}\n")
        environment = {"FAKE_NSPAWNCTL_SCENARIO": self.scenario_path, "FAKE_NSPAWNCTL_CALLS": self.calls_path,
                       "PATH": os.path.dirname(self.binary) + os.pathsep + os.environ.get("PATH", "")}
        patcher = unittest.mock.patch.dict(os.environ, environment)
        patcher.start()
        self.addCleanup(patcher.stop)

    def scenario(self, **answers):
        """answers: verb -> (rc, report dict or raw stdout, stderr)."""
        encoded = {}
        for verb, (rc, stdout, stderr) in answers.items():
            encoded[verb] = {"rc": rc, "stdout": stdout if isinstance(stdout, str) else json.dumps(stdout), "stderr": stderr}
        with open(self.scenario_path, "w") as stream:
            json.dump(encoded, stream)

    def calls(self):
        if not os.path.exists(self.calls_path):
            return []
        with open(self.calls_path) as stream:
            return [json.loads(line) for line in stream]

    def run_module(self, check=False, diff=False, **args):
        """Runs main() and returns (failed, result) from the JSON it prints."""
        # Keeping "remote" files only stops AnsibleModule removing its tmpdir at exit, after setUp's
        # clean-up removed it; the module's own temporary manifest is removed either way.
        args = dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_remote_tmp=self.remote_tmp,
                    _ansible_keep_remote_files=True)
        out = io.StringIO()
        with patch_module_args(args), contextlib.redirect_stdout(out):
            with self.assertRaises(SystemExit) as exit:
                nspawnctl_apply.main()
        result = json.loads(out.getvalue())
        self.assertEqual(exit.exception.code not in (0, None), bool(result.get("failed")), result)
        return bool(result.get("failed")), result

    def test_apply_with_changes_is_changed_and_returns_the_report(self):
        self.scenario(apply=(0, APPLIED, ""))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertFalse(failed, result)
        self.assertTrue(result["changed"])
        self.assertEqual(result["changes"], 3)
        self.assertEqual(result["failures"], 0)
        self.assertEqual(result["manifest"], "demo")
        self.assertEqual([m["name"] for m in result["machines"]], ["web1", "web2", "db"])
        self.assertEqual(result["lines"], [
            "+ web1 machine: clone of debian-base",
            "~ web2 settings.Network.Port: [tcp:1:1] → [tcp:8080:80]",
            "- web2 settings.Exec.Environment (was [A=1])"])
        self.assertNotIn("diff", result)
        self.assertEqual([call["argv"] for call in self.calls()], [["apply", "-f", self.manifest, "--json"]])

    def test_a_converged_host_is_not_changed(self):
        self.scenario(apply=(0, CONVERGED, ""))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertFalse(failed, result)
        self.assertFalse(result["changed"])
        self.assertEqual(result["changes"], 0)

    def test_prune_and_keep_going_are_passed_on(self):
        self.scenario(apply=(0, CONVERGED, ""))
        self.run_module(manifest=self.manifest, prune=True, keep_going=True)
        self.assertEqual(self.calls()[0]["argv"], ["apply", "-f", self.manifest, "--json", "--prune", "--keep-going"])

    def test_check_mode_runs_plan_never_apply_and_shows_the_plan_as_a_diff(self):
        self.scenario(plan=(0, PLAN, ""), apply=(99, "", "apply must not run in check mode"))
        failed, result = self.run_module(check=True, diff=True, manifest=self.manifest, prune=True, keep_going=True)
        self.assertFalse(failed, result)
        self.assertTrue(result["changed"])
        self.assertEqual(result["changes"], 3)
        self.assertEqual([call["argv"] for call in self.calls()], [["plan", "-f", self.manifest, "--json", "--prune"]])
        self.assertEqual([m["action"] for m in result["machines"]], ["create", "update", "none"])
        diffs = {d["after_header"]: d for d in result["diff"]}
        self.assertEqual(sorted(diffs), ["web1 (create)", "web2 (update)"], "machines without changes have no diff")
        self.assertEqual(diffs["web1 (create)"]["before"], "")
        self.assertEqual(diffs["web1 (create)"]["after"], "machine: clone of debian-base\n")
        self.assertEqual(diffs["web2 (update)"]["before"],
                         "settings.Network.Port: [tcp:1:1]\nsettings.Exec.Environment: [A=1]\n")
        self.assertEqual(diffs["web2 (update)"]["after"], "settings.Network.Port: [tcp:8080:80]\n")

    def test_check_mode_with_nothing_to_do_is_not_changed(self):
        self.scenario(plan=(0, NOTHING_PLANNED, ""))
        failed, result = self.run_module(check=True, diff=True, manifest=self.manifest)
        self.assertFalse(failed, result)
        self.assertFalse(result["changed"])
        self.assertEqual(result["diff"], [])

    def test_apply_in_diff_mode_shows_what_was_done(self):
        self.scenario(apply=(0, APPLIED, ""))
        _, result = self.run_module(diff=True, manifest=self.manifest)
        self.assertEqual([d["after_header"] for d in result["diff"]], ["web1 (changed)", "web2 (changed)"])

    def test_a_failed_machine_fails_the_task_with_the_per_machine_report(self):
        self.scenario(apply=(1, PARTLY_FAILED, "apply: 1 changes, 1 failed\n"))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertTrue(failed)
        self.assertIn("machine 'web2': run[0] exited with 3", result["msg"])
        self.assertIn("1 of 3 machines failed", result["msg"])
        self.assertEqual([m["result"] for m in result["machines"]], ["changed", "failed", "skipped"])
        self.assertTrue(result["machines"][1]["rolled_back"])
        self.assertEqual(result["failures"], 1)
        self.assertEqual(result["rc"], 1)
        self.assertTrue(result["changed"], "web1 was changed before web2 failed")

    def test_a_refused_manifest_fails_with_nspawnctls_message(self):
        message = "demo.yaml:4: machines.web1: unknown key 'imag'\n"
        self.scenario(apply=(2, "", message), plan=(2, "", message))
        for check in (False, True):
            failed, result = self.run_module(check=check, manifest=self.manifest)
            self.assertTrue(failed)
            self.assertIn("demo.yaml:4: machines.web1: unknown key 'imag'", result["msg"])
            self.assertEqual(result["rc"], 2)
            self.assertNotIn("machines", result)
            self.assertFalse(result.get("changed", False))

    def test_a_refused_manifest_given_as_content_is_named_as_content_not_by_its_removed_file(self):
        # nspawnctl --json prints its error as JSON on stderr, naming the file it read (__FILE__ for the fake).
        error = {"error": {"code": "invalid_input", "message": "__FILE__:4:5: machines.web1.imag: unknown key"}}
        self.scenario(apply=(2, "", json.dumps(error) + "\n"))
        failed, result = self.run_module(content="machines:\n  web1:\n    imag: x\n", name="fleet")
        self.assertTrue(failed)
        self.assertEqual(result["msg"], "nspawnctl apply exited 2: content (fleet.yaml):4:5: machines.web1.imag: unknown key")

    def test_an_error_object_on_stderr_gives_the_message(self):
        self.scenario(apply=(4, "", json.dumps({"error": {"code": "permission_denied", "message": "applying a manifest needs root"}})))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertTrue(failed)
        self.assertEqual(result["msg"], "nspawnctl apply exited 4: applying a manifest needs root")

    def test_other_failures_fail_with_the_exit_status_and_stderr(self):
        self.scenario(apply=(4, "", "nspawnctl: applying a manifest needs root\n"))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertTrue(failed)
        self.assertEqual(result["msg"], "nspawnctl apply exited 4: nspawnctl: applying a manifest needs root")

    def test_a_success_without_a_report_is_a_failure(self):
        for stdout in ("", "not json", json.dumps(["a list"]), json.dumps({"changes": 1}),
                       json.dumps({"changes": "1", "machines": []}), json.dumps({"changes": True, "machines": []})):
            self.scenario(apply=(0, stdout, ""))
            failed, result = self.run_module(manifest=self.manifest)
            self.assertTrue(failed, stdout)
            self.assertIn("nspawnctl apply exited 0", result["msg"])
        self.scenario(apply=(1, "", "nspawnctl: the bus failed\n"))
        failed, result = self.run_module(manifest=self.manifest)
        self.assertTrue(failed)
        self.assertEqual(result["msg"], "nspawnctl apply exited 1: nspawnctl: the bus failed")

    def test_content_goes_to_a_private_file_named_after_name_that_is_removed_after(self):
        text = "name: fleet\nmachines:\n  web1:\n    image: {clone: base}\n"
        for rc, report in ((0, APPLIED), (1, PARTLY_FAILED), (2, "")):
            os.remove(self.calls_path) if os.path.exists(self.calls_path) else None
            self.scenario(apply=(rc, report, "refused\n" if rc == 2 else ""))
            self.run_module(content=text, name="fleet")
            call = self.calls()[0]
            self.assertEqual(os.path.basename(call["file"]), "fleet.yaml")
            self.assertEqual(call["content"], text)
            self.assertEqual(call["mode"], "0o600")
            self.assertEqual(call["directoryMode"], "0o700")
            self.assertFalse(os.path.exists(call["file"]), "the file is removed after the run (exit %d)" % rc)
            self.assertFalse(os.path.exists(os.path.dirname(call["file"])))

    def test_content_without_name_is_ansible_yaml(self):
        self.scenario(plan=(0, NOTHING_PLANNED, ""))
        self.run_module(check=True, content="machines: {}\n")
        self.assertEqual(os.path.basename(self.calls()[0]["file"]), "ansible.yaml")

    def test_bad_options_are_refused_before_nspawnctl_runs(self):
        self.scenario(apply=(0, CONVERGED, ""))
        for args in ({}, {"manifest": self.manifest, "content": "machines: {}\n"},
                     {"content": "machines: {}\n", "name": "../evil"}, {"content": "x", "name": ".hidden"},
                     {"content": "x", "name": "a/b"}):
            failed, result = self.run_module(**args)
            self.assertTrue(failed, args)
        self.assertEqual(self.calls(), [])
        self.assertEqual(os.listdir(self.remote_tmp), [], "no temporary file is left")

    def test_the_binary_option_and_a_missing_binary(self):
        self.scenario(apply=(0, CONVERGED, ""))
        failed, result = self.run_module(manifest=self.manifest, nspawnctl=self.binary)
        self.assertFalse(failed, result)
        failed, result = self.run_module(manifest=self.manifest, nspawnctl="nspawnctl-does-not-exist")
        self.assertTrue(failed)
        self.assertIn("nspawnctl-does-not-exist", result["msg"])
        failed, result = self.run_module(manifest=self.manifest, nspawnctl=os.path.join(self.work, "absent"))
        self.assertTrue(failed)


if __name__ == "__main__":
    unittest.main()
