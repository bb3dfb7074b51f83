"""The filter scheduler (nspawnctl.machines.place) as the pure function it is.

    .build-venv/ansible-core-*/bin/python -B -m unittest discover -s ansible/ansible_collections/nspawnctl/machines/tests/unit
"""

import os
import shutil
import sys
import tempfile
import unittest

COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
REPOSITORY = os.path.dirname(COLLECTIONS_ROOT)
sys.path.insert(0, COLLECTIONS_ROOT)

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.nspawnctl.machines.plugins.filter import place as scheduler  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
# The repository's own flavors, as nspawnctl installs them.
REPOSITORY_FLAVORS = os.path.join(REPOSITORY, "units", "flavors")
FLAVORS = {
    "small": "[Flavor]\nMemoryMax=1G\nCPUQuota=100%\n",
    "large": "[Flavor]\nDescription=big\nMemoryMax=4G\nCPUQuota=200%\nTasksMax=4096\n",
    "cpu-heavy": "[Flavor]\nMemoryMax=512M\nCPUQuota=400%\n",
    "tasks-only": "[Flavor]\nTasksMax=100\n",
}


def fleet(**machines):
    return {"name": "fleet", "machines": machines}


class PlaceTests(unittest.TestCase):
    def place(self, manifest, hosts, **options):
        options.setdefault("flavors", FLAVORS)
        return scheduler.place(manifest, hosts, **options)

    def test_the_host_with_the_most_free_memory_wins_and_machines_spread(self):
        hosts = {"h1": {"memory": 8 * GiB, "cpus": 4}, "h2": {"memory": 6 * GiB, "cpus": 4}}
        placement = self.place(fleet(a={"flavor": "small"}, b={"flavor": "small"}, c={"flavor": "small"}, d={"flavor": "small"}), hosts)
        # h1 8 -> 7 (a), then h1 7 vs h2 6 -> h1 6 (b), then 6 vs 6: the name breaks the tie -> h1 (c), then h2 (d).
        self.assertEqual(placement, {"a": "h1", "b": "h1", "c": "h1", "d": "h2"})

    def test_machines_already_on_a_host_use_up_its_room(self):
        hosts = {"h1": {"memory": 8 * GiB, "cpus": 8, "machines": {"old1": "large", "old2": "small"}},
                 "h2": {"memory": 4 * GiB, "cpus": 8}}
        # h1 has 3 GiB free, h2 4 GiB: h2 first.
        self.assertEqual(self.place(fleet(a={"flavor": "small"}), hosts), {"a": "h2"})

    def test_the_cpu_filter_drops_hosts_without_cpu_left(self):
        hosts = {"big-memory": {"memory": 64 * GiB, "cpus": 2}, "many-cpus": {"memory": 2 * GiB, "cpus": 8}}
        self.assertEqual(self.place(fleet(a={"flavor": "cpu-heavy"}), hosts), {"a": "many-cpus"})

    def test_a_group_limits_the_candidates(self):
        hosts = {"web1": {"memory": 2 * GiB, "cpus": 2}, "web2": {"memory": 3 * GiB, "cpus": 2},
                 "db1": {"memory": 64 * GiB, "cpus": 32}}
        groups = {"web": ["web1", "web2"], "db": ["db1"]}
        placement = self.place(fleet(w1={"group": "web", "flavor": "small"}, w2={"group": "web", "flavor": "small"},
                                     d={"group": "db", "flavor": "large"}), hosts, groups=groups)
        self.assertEqual(placement, {"w1": "web2", "w2": "web1", "d": "db1"})

    def test_a_named_host_is_taken_as_given(self):
        hosts = {"h1": {"memory": 1 * GiB, "cpus": 1}, "h2": {"memory": 64 * GiB, "cpus": 32}}
        self.assertEqual(self.place(fleet(a={"host": "h1", "flavor": "large"}), hosts), {"a": "h1"})

    def test_a_machine_already_placed_stays_where_it_is(self):
        hosts = {"h1": {"memory": 2 * GiB, "cpus": 2, "machines": {"a": "small"}}, "h2": {"memory": 64 * GiB, "cpus": 32}}
        self.assertEqual(self.place(fleet(a={"flavor": "small"}, b={"flavor": "small"}), hosts), {"a": "h1", "b": "h2"})

    def test_the_flavor_comes_from_defaults_and_profiles_as_the_manifest_layers_it(self):
        hosts = {"h1": {"memory": 4 * GiB, "cpus": 2}, "h2": {"memory": 3 * GiB, "cpus": 8}}
        manifest = {"defaults": {"flavor": "small"}, "profiles": {"busy": {"flavor": "cpu-heavy"}},
                    "machines": {"a": {"profiles": ["busy"]}, "b": {}, "c": {"profiles": ["busy"], "flavor": "small"}}}
        # a: cpu-heavy needs 400% -> only h2. b: small -> h1 (4 GiB vs 2.5). c: small -> h1 (3 vs 2.5).
        self.assertEqual(self.place(manifest, hosts), {"a": "h2", "b": "h1", "c": "h1"})

    def test_machines_without_a_flavor_or_memory_limit_fit_anywhere(self):
        hosts = {"h1": {"memory": 1 * GiB, "cpus": 1, "machines": {"x": "small"}}, "h2": {"memory": 2 * GiB, "cpus": 1}}
        self.assertEqual(self.place(fleet(a={}, b={"flavor": "tasks-only"}), hosts), {"a": "h2", "b": "h2"})

    def test_no_room_names_the_machine_the_flavor_and_what_each_candidate_has(self):
        hosts = {"h1": {"memory": 2 * GiB, "cpus": 4}, "h2": {"memory": 3 * GiB, "cpus": 1}}
        with self.assertRaises(AnsibleFilterError) as raised:
            self.place(fleet(db={"flavor": "large"}), hosts)
        message = str(raised.exception)
        self.assertIn("machine 'db'", message)
        self.assertIn("flavor 'large' (needs 4096 MiB and 200% CPU)", message)
        self.assertIn("h1 has 2048 MiB and 400% CPU free", message)
        self.assertIn("h2 has 3072 MiB and 100% CPU free", message)

    def test_earlier_placements_count_against_later_machines(self):
        hosts = {"h1": {"memory": 5 * GiB, "cpus": 4}}
        with self.assertRaisesRegex(AnsibleFilterError, "machine 'b'.*h1 has 1024 MiB and 200% CPU free"):
            self.place(fleet(a={"flavor": "large"}, b={"flavor": "large"}), hosts)

    def test_overcommit_ratios(self):
        hosts = {"h1": {"memory": 2 * GiB, "cpus": 1}}
        with self.assertRaises(AnsibleFilterError):
            self.place(fleet(a={"flavor": "large"}), hosts)
        self.assertEqual(self.place(fleet(a={"flavor": "large"}), hosts, memory_ratio=2.0, cpu_ratio=2.0), {"a": "h1"})

    def test_ansible_fact_names_and_size_strings(self):
        hosts = {"h1": {"memtotal_mb": 1024, "processor_vcpus": 1}, "h2": {"memory": "2G", "cpus": 1}}
        self.assertEqual(self.place(fleet(a={"flavor": "small"}), hosts), {"a": "h2"})
        facts = scheduler.host_facts({"ansible_facts": {"memtotal_mb": 2048, "processor_vcpus": 2}, "nspawnctl_machines": {"x": "small"}})
        self.assertEqual(facts, {"memtotal_mb": 2048, "processor_vcpus": 2, "machines": {"x": "small"}})
        self.assertEqual(scheduler.host_capacity("h", facts), (2 * GiB, 200))

    def test_bad_input_is_refused_with_a_message_naming_it(self):
        hosts = {"h1": {"memory": 8 * GiB, "cpus": 4}}
        cases = [
            (fleet(a={"flavor": "nope"}), hosts, {}, "machine 'a': no flavor 'nope'; known flavors: cpu-heavy, large, small, tasks-only"),
            (fleet(a={"flavor": "../etc/passwd"}), hosts, {}, "machine 'a': invalid flavor name '../etc/passwd'"),
            (fleet(a={"group": "web"}), hosts, {}, "machine 'a': no host group 'web'"),
            (fleet(a={"group": "web"}), hosts, {"groups": {"web": ["elsewhere"]}}, "machine 'a': no host of group 'web' has facts"),
            (fleet(a={"host": "h9"}), hosts, {}, "machine 'a': no facts for host 'h9'"),
            (fleet(a={"host": "h1", "group": "web"}), hosts, {"groups": {"web": ["h1"]}}, "machine 'a': give host or group, not both"),
            (fleet(a={"profiles": ["ghost"]}), hosts, {}, "machine 'a': machine uses unknown profile 'ghost'"),
            ({"machines": []}, hosts, {}, "a fleet manifest with a 'machines' mapping"),
            (fleet(a={}), {}, {}, "expects the hosts' facts"),
            (fleet(a={}), {"h1": {"cpus": 1}}, {}, "host 'h1': no memory size"),
            (fleet(a={}), {"h1": {"memory": "lots", "cpus": 1}}, {}, "host 'h1': no memory size"),
            (fleet(a={}), {"h1": {"memory": GiB}}, {}, "host 'h1': no CPU count"),
        ]
        for manifest, facts, options, expected in cases:
            with self.assertRaises(AnsibleFilterError, msg=expected) as raised:
                self.place(manifest, facts, **options)
            self.assertIn(expected, str(raised.exception))

    def test_flavor_files_are_parsed_as_nspawnctl_parses_them(self):
        self.assertEqual(scheduler.parse_flavor("# c\n[Flavor]\nMemoryMax=512M\nCPUQuota=50%\nIOWeight=10\n", "x"),
                         {"memory": 512 * MiB, "cpu": 50})
        for text, expected in [
            ("[Flavor]\nMemoryMax=lots\n", "invalid MemoryMax=lots"),
            ("[Flavor]\nMemoryMax=0\n", "invalid MemoryMax=0"),
            ("[Flavor]\nCPUQuota=50\n", "invalid CPUQuota=50"),
            ("[Flavor]\nCPUQuota=0%\n", "invalid CPUQuota=0%"),
            ("[Flavor]\nMemoryLimit=1G\n", "unknown key MemoryLimit="),
            ("[Service]\nMemoryMax=1G\n", "unexpected MemoryMax= in section [Service]"),
            ("[Flavor]\nDescription=nothing\n", "the flavor sets no limit"),
            ("[Flavor]\nMemoryMax\n", "expected KEY=VALUE"),
        ]:
            with self.assertRaises(AnsibleFilterError, msg=text) as raised:
                scheduler.parse_flavor(text, "bad.flavor")
            self.assertIn(expected, str(raised.exception))
            self.assertIn("bad.flavor", str(raised.exception))

    def test_flavor_directories_are_searched_in_order_like_nspawnctl(self):
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work)
        local, installed = os.path.join(work, "etc"), os.path.join(work, "share")
        os.mkdir(local)
        os.mkdir(installed)
        with open(os.path.join(local, "small.flavor"), "w") as stream:
            stream.write("[Flavor]\nMemoryMax=3G\n")
        with open(os.path.join(installed, "small.flavor"), "w") as stream:
            stream.write("[Flavor]\nMemoryMax=1G\n")
        flavors = scheduler.Flavors([local, installed, os.path.join(work, "absent")])
        self.assertEqual(flavors["small"]["memory"], 3 * GiB, "the local override wins")
        self.assertEqual(flavors.known(), ["small"])

    def test_the_repositorys_flavors_load(self):
        flavors = scheduler.Flavors([REPOSITORY_FLAVORS])
        names = flavors.known()
        self.assertTrue({"tiny", "small", "medium", "large"} <= set(names), names)
        sizes = [flavors[name]["memory"] for name in ("tiny", "small", "medium", "large")]
        self.assertEqual(sizes, sorted(sizes), "the flavors grow in memory")
        self.assertTrue(all(size > 0 for size in sizes))

    def test_host_manifest_splits_the_fleet_by_placement(self):
        manifest = {"name": "fleet", "defaults": {"state": "running"},
                    "machines": {"a": {"group": "web", "flavor": "small"}, "b": {"host": "h2"}, "c": None}}
        placement = {"a": "h1", "b": "h2", "c": "h1"}
        self.assertEqual(scheduler.host_manifest(manifest, placement, "h1"),
                         {"name": "fleet", "defaults": {"state": "running"}, "machines": {"a": {"flavor": "small"}, "c": {}}})
        self.assertEqual(scheduler.host_manifest(manifest, placement, "h3")["machines"], {})
        with self.assertRaisesRegex(AnsibleFilterError, "machine 'c' has no host"):
            scheduler.host_manifest(manifest, {"a": "h1", "b": "h2"}, "h1")

    def test_the_filters_are_registered_under_their_names(self):
        self.assertEqual(sorted(scheduler.FilterModule().filters()), ["host_facts", "host_manifest", "place"])


if __name__ == "__main__":
    unittest.main()
