"""Sets up Ansible's collection loader for this collection once per process, whichever test file
is imported first, so the plugins load as `nspawnctl.machines.*` as they would for a playbook;
and the fake-nspawnctl test case the plugin tests share."""

import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

from ansible.plugins.loader import init_plugin_loader

COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))

if not any(type(finder).__name__ == "_AnsibleCollectionFinder" for finder in sys.meta_path):
    init_plugin_loader([COLLECTIONS_ROOT])


class FakeNspawnctlCase(unittest.TestCase):
    """A temporary directory with `bin/nspawnctl`, the subclass's FAKE script (formatted with this
    Python), which appends each call to calls.jsonl and answers as scenario.json says."""

    FAKE = None
    PREFIX = "nspawnctl-plugin-test-"

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix=self.PREFIX)
        self.addCleanup(shutil.rmtree, self.work, True)
        self.binary = os.path.join(self.work, "bin", "nspawnctl")
        os.mkdir(os.path.dirname(self.binary))
        with open(self.binary, "w") as stream:
            stream.write(self.FAKE.format(python=sys.executable))
        os.chmod(self.binary, 0o755)
        self.calls_path = os.path.join(self.work, "calls.jsonl")
        self.scenario_path = os.path.join(self.work, "scenario.json")
        patcher = mock.patch.dict(os.environ, {"FAKE_NSPAWNCTL_CALLS": self.calls_path,
                                               "FAKE_NSPAWNCTL_SCENARIO": self.scenario_path,
                                               "PATH": os.path.dirname(self.binary) + os.pathsep + os.environ.get("PATH", "")})
        patcher.start()
        self.addCleanup(patcher.stop)

    def scenario(self, **answers):
        with open(self.scenario_path, "w") as stream:
            json.dump(answers, stream)

    def calls(self):
        if not os.path.exists(self.calls_path):
            return []
        with open(self.calls_path) as stream:
            return [json.loads(line) for line in stream]
