"""The nspawnctl inventory plugin, through Ansible's own InventoryManager (the `auto` plugin reads the
file's `plugin:`), against a fake nspawnctl that prints a given listing and records how it was called.

    .build-venv/ansible-core-*/bin/python -B -m unittest discover -s ansible/ansible_collections/nspawnctl/machines/tests/unit
"""

import json
import os
import sys
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import collection_loader  # noqa: E402  (before the plugins are loaded)

from ansible.errors import AnsibleError  # noqa: E402
from ansible.inventory.data import InventoryData  # noqa: E402
from ansible.inventory.manager import InventoryManager  # noqa: E402
from ansible.parsing.dataloader import DataLoader  # noqa: E402

FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    argv = sys.argv[1:]
    with open(os.environ["FAKE_NSPAWNCTL_CALLS"], "a") as log:
        log.write(json.dumps(argv) + "\\n")
    scenario = json.load(open(os.environ["FAKE_NSPAWNCTL_SCENARIO"]))
    verb = "status" if "status" in argv else "ls"
    answer = scenario[verb] if verb == "ls" else scenario["status"][argv[-1]]
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    sys.exit(answer.get("rc", 0))
    """)

# As `nspawnctl ls --json` prints them (snake case keys, fields absent when nil).
LISTING = [
    {"name": "web1", "state": "running", "os": "Debian GNU/Linux 12 (bookworm)", "addresses": ["10.0.0.2", "fe80::1"],
     "usage": 123456, "read_only": False, "enabled": True, "machine_class": "container", "image_type": "directory",
     "exposed": []},
    {"name": "db1", "state": "stopped", "addresses": [], "read_only": False, "enabled": False, "image_type": "subvolume",
     "exposed": []},
    {"name": "sock1", "state": "listening", "addresses": [], "read_only": True, "enabled": False, "image_type": "directory",
     "exposed": ["127.0.0.1:8080"]},
]


class InventoryTests(collection_loader.FakeNspawnctlCase):
    FAKE = FAKE
    PREFIX = "nspawnctl-inventory-test-"

    def setUp(self):
        super().setUp()
        self.scenario(ls={"stdout": json.dumps(LISTING)})

    def inventory(self, text, name="machines.nspawnctl.yml"):
        path = os.path.join(self.work, name)
        with open(path, "w") as stream:
            stream.write(textwrap.dedent(text))
        return InventoryManager(loader=DataLoader(), sources=[path], parse=True)

    def variables(self, inventory, host):
        return inventory.get_host(host).get_vars()

    def test_every_listed_machine_is_a_host_reached_with_the_nspawnctl_connection(self):
        inventory = self.inventory("plugin: nspawnctl.machines.nspawnctl\n")
        self.assertEqual(sorted(h.name for h in inventory.get_hosts()), ["db1", "sock1", "web1"])
        self.assertEqual(self.calls(), [["ls", "--json"]])
        web1 = self.variables(inventory, "web1")
        self.assertEqual(web1["ansible_connection"], "nspawnctl.machines.nspawnctl")
        self.assertNotIn("ansible_nspawnctl_host", web1)
        self.assertNotIn("ansible_nspawnctl_path", web1)
        self.assertEqual(web1["nspawnctl_state"], "running")
        self.assertEqual(web1["nspawnctl_os"], "Debian GNU/Linux 12 (bookworm)")
        self.assertEqual(web1["nspawnctl_addresses"], ["10.0.0.2", "fe80::1"])
        self.assertEqual(web1["nspawnctl_image_type"], "directory")
        self.assertEqual(web1["nspawnctl_machine_class"], "container")
        self.assertIs(web1["nspawnctl_enabled"], True)
        self.assertNotIn("nspawnctl_os", self.variables(inventory, "db1"), "a field ls leaves out stays out")
        self.assertEqual(self.variables(inventory, "sock1")["nspawnctl_exposed"], ["127.0.0.1:8080"])

    def test_hosts_are_grouped_by_state(self):
        inventory = self.inventory("plugin: nspawnctl.machines.nspawnctl\n")
        groups = inventory.get_groups_dict()
        self.assertEqual(groups["nspawnctl_running"], ["web1"])
        self.assertEqual(groups["nspawnctl_stopped"], ["db1"])
        self.assertEqual(groups["nspawnctl_listening"], ["sock1"])
        self.assertEqual(sorted(groups["nspawnctl_machines"]), ["db1", "sock1", "web1"])

    def test_host_all_and_path_go_to_nspawnctl_and_to_the_hosts(self):
        inventory = self.inventory("""\
            plugin: nspawnctl.machines.nspawnctl
            host: ssh://root@build1.example
            all: true
            nspawnctl_path: %s
            """ % self.binary)
        self.assertEqual(self.calls(), [["--host", "ssh://root@build1.example", "ls", "--json", "--all"]])
        web1 = self.variables(inventory, "web1")
        self.assertEqual(web1["ansible_nspawnctl_host"], "ssh://root@build1.example")
        self.assertEqual(web1["ansible_nspawnctl_path"], self.binary)

    def test_states_filter_the_hosts(self):
        inventory = self.inventory("plugin: nspawnctl.machines.nspawnctl\nstates: [running, listening]\n")
        self.assertEqual(sorted(h.name for h in inventory.get_hosts()), ["sock1", "web1"])

    def test_details_add_flavor_and_image_from_status(self):
        status = {name: {"stdout": json.dumps({"name": name, "state": "running", "flavor": "small" if name == "web1" else None,
                                                "image": {"path": "/var/lib/machines/" + name, "type": "directory"}})}
                  for name in ("web1", "db1", "sock1")}
        for answer in status.values():
            answer["stdout"] = answer["stdout"].replace(', "flavor": null', "")
        self.scenario(ls={"stdout": json.dumps(LISTING)}, status=status)
        inventory = self.inventory("plugin: nspawnctl.machines.nspawnctl\ndetails: true\n")
        self.assertEqual(self.calls()[0], ["ls", "--json"])
        self.assertEqual(sorted(map(tuple, self.calls()[1:])), [("status", "--json", n) for n in ("db1", "sock1", "web1")])
        self.assertEqual(self.variables(inventory, "web1")["nspawnctl_flavor"], "small")
        self.assertIsNone(self.variables(inventory, "db1")["nspawnctl_flavor"])
        self.assertEqual(self.variables(inventory, "db1")["nspawnctl_image"]["path"], "/var/lib/machines/db1")

    def test_compose_and_keyed_groups(self):
        inventory = self.inventory("""\
            plugin: nspawnctl.machines.nspawnctl
            compose:
              ansible_python_interpreter: "'/usr/bin/python3'"
              first_address: nspawnctl_addresses | first | default('none')
            keyed_groups:
              - key: nspawnctl_image_type
                prefix: image
            groups:
              writable: not nspawnctl_read_only
            """)
        groups = inventory.get_groups_dict()
        self.assertEqual(sorted(groups["image_directory"]), ["sock1", "web1"])
        self.assertEqual(groups["image_subvolume"], ["db1"])
        self.assertEqual(sorted(groups["writable"]), ["db1", "web1"])
        self.assertEqual(self.variables(inventory, "web1")["first_address"], "10.0.0.2")
        self.assertEqual(self.variables(inventory, "web1")["ansible_python_interpreter"], "/usr/bin/python3")

    def test_a_failing_nspawnctl_fails_the_source_with_its_message(self):
        self.scenario(ls={"rc": 7, "stderr": '{"error":{"code":"unreachable","message":"cannot reach build1.example"}}\n'})
        path = os.path.join(self.work, "bad.nspawnctl.yml")
        with open(path, "w") as stream:
            stream.write("plugin: nspawnctl.machines.nspawnctl\nhost: ssh://root@build1.example\n")
        from ansible.plugins.loader import inventory_loader
        plugin = inventory_loader.get("nspawnctl.machines.nspawnctl")
        with self.assertRaises(AnsibleError) as caught:
            plugin.parse(InventoryData(), DataLoader(), path)
        self.assertIn("exited 7: cannot reach build1.example", str(caught.exception))

    def test_only_files_named_nspawnctl_yml_are_taken(self):
        from ansible.plugins.loader import inventory_loader
        plugin = inventory_loader.get("nspawnctl.machines.nspawnctl")
        for name, taken in (("a.nspawnctl.yml", True), ("nspawnctl.yaml", True), ("machines.yml", False)):
            path = os.path.join(self.work, name)
            with open(path, "w") as stream:
                stream.write("plugin: nspawnctl.machines.nspawnctl\n")
            self.assertEqual(plugin.verify_file(path), taken, name)


if __name__ == "__main__":
    unittest.main()
