# -*- coding: utf-8 -*-
# The Nova filter scheduler in Ansible's terms: pure functions from a fleet manifest, per-host
# facts and flavors to a host per machine. Runs on the controller; nothing here touches a host.

from __future__ import annotations

import os
import re

DOCUMENTATION = r"""
---
name: place
short_description: Choose a host for each machine of a fleet manifest, by flavor
description:
  - The filter scheduler of OpenStack Nova for nspawnctl machines. A machine of the fleet manifest
    names C(host) (it goes there), C(group) (an inventory group whose hosts are the candidates) or
    neither (every host in O(hosts) is a candidate).
  - Filters drop the candidates without room for the machine's flavor (C(MemoryMax=) and
    C(CPUQuota=) of the C(.flavor) file, against the host's memory and CPUs less the flavors of the
    machines already on it); the weigher picks the one with the most free memory left.
  - Machines are placed in manifest order, each seeing the ones placed before it. A machine already
    on a candidate host (by name, in the host's C(machines)) stays there.
  - Returns a mapping of machine name to host name.
options:
  _input:
    description: The fleet manifest, parsed (for example with C(from_yaml)).
    type: dict
    required: true
  hosts:
    description:
      - Host name to its facts, C({memory, cpus, machines}). C(memory) is bytes or a size such as
        C(8G); C(memtotal_mb) is taken instead. C(cpus) is a number; C(processor_vcpus) is taken
        instead. C(machines) maps the name of each machine on the host to its flavor (or null).
    type: dict
    required: true
  groups:
    description: Group name to its hosts, as Ansible's C(groups).
    type: dict
  flavors:
    description:
      - Directories searched in order for C(NAME.flavor) files, or a mapping of flavor name to the
        file's text. Default, as nspawnctl's C(/etc/nspawnctl/flavors),
        C(/usr/local/share/nspawnctl/flavors), C(/usr/share/nspawnctl/flavors).
    type: raw
  memory_ratio:
    description: How far memory may be overcommitted (Nova's ram_allocation_ratio).
    type: float
    default: 1.0
  cpu_ratio:
    description: How far CPUs may be overcommitted (Nova's cpu_allocation_ratio).
    type: float
    default: 1.0
"""

EXAMPLES = r"""
placement: "{{ fleet | nspawnctl.machines.place(hosts, groups=groups, flavors=['files/flavors']) }}"
"""

RETURN = r"""
_value:
  description: Machine name to the chosen host name.
  type: dict
"""

try:
    from ansible.errors import AnsibleFilterError as PlacementError
except ImportError:  # the functions stay usable without Ansible
    class PlacementError(Exception):
        pass

FLAVOR_DIRECTORIES = ["/etc/nspawnctl/flavors", "/usr/local/share/nspawnctl/flavors", "/usr/share/nspawnctl/flavors"]
FLAVOR_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
SIZE = re.compile(r"^([0-9]+)([KMGT]?)$")
SIZE_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
FLAVOR_KEYS = ("Description", "MemoryMax", "CPUQuota", "TasksMax", "IOWeight")


def parse_size(text):
    """A size as systemd writes it (base-1024 K, M, G, T), in bytes; None when it is not one."""
    match = SIZE.match(str(text).strip())
    if not match:
        return None
    return int(match.group(1)) * SIZE_FACTORS[match.group(2)]


def parse_flavor(text, origin):
    """The limits the scheduler needs from a .flavor file: {'memory': bytes, 'cpu': percent}.
    Same rules as nspawnctl: only [Flavor], only known keys, at least one limit."""
    section = None
    flavor = {"memory": 0, "cpu": 0}
    limits = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals:
            raise PlacementError("%s:%d: expected KEY=VALUE" % (origin, number))
        if section != "Flavor":
            raise PlacementError("%s: unexpected %s= in section [%s]; expected [Flavor]" % (origin, key, section))
        if key not in FLAVOR_KEYS:
            raise PlacementError("%s: unknown key %s= (known: %s)" % (origin, key, ", ".join(FLAVOR_KEYS)))
        if key == "MemoryMax":
            size = parse_size(value)
            if not size:
                raise PlacementError("%s: invalid MemoryMax=%s: expected a size such as 512M or 2G" % (origin, value))
            flavor["memory"] = size
        elif key == "CPUQuota":
            percent = value[:-1] if value.endswith("%") else ""
            if not percent.isdigit() or not 0 < int(percent) <= 100000:
                raise PlacementError("%s: invalid CPUQuota=%s: expected a percentage such as 50%% or 200%%" % (origin, value))
            flavor["cpu"] = int(percent)
        if key != "Description":
            limits += 1
    if limits == 0:
        raise PlacementError("%s: the flavor sets no limit" % origin)
    return flavor


class Flavors(object):
    """Flavors by name, loaded on first use from directories (first match wins) or given texts."""

    def __init__(self, source=None):
        if source is None:
            source = FLAVOR_DIRECTORIES
        if isinstance(source, str):
            source = [source]
        self.texts = dict(source) if isinstance(source, dict) else None
        self.directories = list(source) if self.texts is None else []
        self.loaded = {}

    def known(self):
        if self.texts is not None:
            return sorted(self.texts)
        names = set()
        for directory in self.directories:
            if os.path.isdir(directory):
                names.update(entry[:-len(".flavor")] for entry in os.listdir(directory) if entry.endswith(".flavor"))
        return sorted(names)

    def __getitem__(self, name):
        if name is None:
            return {"memory": 0, "cpu": 0}
        if name in self.loaded:
            return self.loaded[name]
        if not isinstance(name, str) or not FLAVOR_NAME.match(name):
            raise PlacementError("invalid flavor name '%s'" % (name,))
        found = None
        if self.texts is not None:
            if name in self.texts:
                found = (self.texts[name], "flavor '%s'" % name)
        else:
            for directory in self.directories:
                path = os.path.join(directory, name + ".flavor")
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as stream:
                        found = (stream.read(64 * 1024), path)
                    break
        if found is None:
            known = self.known()
            raise PlacementError("no flavor '%s'%s" % (
                name, "; known flavors: " + ", ".join(known) if known else " (none are installed)"))
        self.loaded[name] = parse_flavor(found[0], found[1])
        return self.loaded[name]


def layered_value(manifest, machine, key):
    """A scalar after the manifest's layering: defaults < profiles in listed order < machine."""
    value = (manifest.get("defaults") or {}).get(key)
    profiles = manifest.get("profiles") or {}
    for profile in machine.get("profiles") or []:
        if profile not in profiles:
            raise PlacementError("machine uses unknown profile '%s'" % profile)
        if key in (profiles[profile] or {}):
            value = profiles[profile][key]
    return machine.get(key, value)


def host_capacity(name, facts):
    """(memory bytes, CPU percent) a host has in all."""
    memory = facts.get("memory")
    if memory is None and facts.get("memtotal_mb") is not None:
        memory = int(facts["memtotal_mb"]) << 20
    memory = parse_size(memory) if isinstance(memory, str) else memory
    cpus = facts.get("cpus", facts.get("processor_vcpus"))
    if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
        raise PlacementError("host '%s': no memory size (memory or memtotal_mb)" % name)
    if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or cpus <= 0:
        raise PlacementError("host '%s': no CPU count (cpus or processor_vcpus)" % name)
    return memory, int(cpus * 100)


def mib(size):
    return "%d MiB" % (size // (1 << 20))


def place(fleet, hosts, groups=None, flavors=None, memory_ratio=1.0, cpu_ratio=1.0):
    """Machine name -> host name for every machine of `fleet` (see DOCUMENTATION)."""
    if not isinstance(fleet, dict) or not isinstance(fleet.get("machines"), dict):
        raise PlacementError("place expects a fleet manifest with a 'machines' mapping")
    if not isinstance(hosts, dict) or not hosts:
        raise PlacementError("place expects the hosts' facts: a mapping of host name to {memory, cpus, machines}")
    groups = groups or {}
    flavors = flavors if isinstance(flavors, Flavors) else Flavors(flavors)

    # What each host has free: its capacity (with overcommit) less the flavors already on it.
    free = {}
    residents = {}
    for host, facts in hosts.items():
        facts = facts or {}
        memory, cpu = host_capacity(host, facts)
        on_host = facts.get("machines") or {}
        if isinstance(on_host, list):
            on_host = {"#%d" % index: flavor for index, flavor in enumerate(on_host)}
        free[host] = {"memory": int(memory * memory_ratio), "cpu": int(cpu * cpu_ratio)}
        for resident, flavor in on_host.items():
            need = flavors[flavor]
            free[host]["memory"] -= need["memory"]
            free[host]["cpu"] -= need["cpu"]
            residents[resident] = host

    placement = {}
    for name, machine in fleet["machines"].items():
        machine = machine or {}
        try:
            flavor_name = layered_value(fleet, machine, "flavor")
            need = flavors[flavor_name]
        except PlacementError as error:
            raise PlacementError("machine '%s': %s" % (name, error))
        pinned, group = machine.get("host"), machine.get("group")
        if pinned is not None and group is not None:
            raise PlacementError("machine '%s': give host or group, not both" % name)
        if pinned is not None:
            candidates = [pinned]
            if pinned not in hosts:
                raise PlacementError("machine '%s': no facts for host '%s'" % (name, pinned))
        elif group is not None:
            if group not in groups:
                raise PlacementError("machine '%s': no host group '%s'" % (name, group))
            candidates = [host for host in groups[group] if host in hosts]
            if not candidates:
                raise PlacementError("machine '%s': no host of group '%s' has facts" % (name, group))
        else:
            candidates = list(hosts)

        # Already there: it stays, and its room was counted with the host's machines.
        if residents.get(name) in candidates:
            placement[name] = residents[name]
            continue
        if pinned is not None:
            passing = candidates  # a host given by name is not filtered, as Nova's forced host
        else:
            passing = [host for host in candidates
                       if free[host]["memory"] >= need["memory"] and free[host]["cpu"] >= need["cpu"]]
        if not passing:
            room = ", ".join("%s has %s and %d%% CPU free" % (host, mib(max(free[host]["memory"], 0)), max(free[host]["cpu"], 0))
                             for host in sorted(candidates))
            raise PlacementError("machine '%s': no host has room for flavor '%s' (needs %s and %d%% CPU): %s" % (
                name, flavor_name, mib(need["memory"]), need["cpu"], room))
        # Weigher: the most memory left after placing wins; ties go to the first host name.
        chosen = sorted(passing, key=lambda host: (-(free[host]["memory"] - need["memory"]), host))[0]
        free[chosen]["memory"] -= need["memory"]
        free[chosen]["cpu"] -= need["cpu"]
        placement[name] = chosen
    return placement


def host_manifest(fleet, placement, host):
    """The manifest `host` applies: the fleet's machines placed there, without host and group."""
    if not isinstance(fleet, dict) or not isinstance(fleet.get("machines"), dict):
        raise PlacementError("host_manifest expects a fleet manifest with a 'machines' mapping")
    manifest = {key: value for key, value in fleet.items() if key != "machines"}
    manifest["machines"] = {}
    for name, machine in fleet["machines"].items():
        if name not in placement:
            raise PlacementError("machine '%s' has no host in the placement" % name)
        if placement[name] == host:
            manifest["machines"][name] = {key: value for key, value in (machine or {}).items() if key not in ("host", "group")}
    return manifest


def host_facts(hostvars, machines=None):
    """A host's entry for place() from its hostvars: Ansible's memtotal_mb and processor_vcpus,
    and `machines` (or the host's nspawnctl_machines variable): machine name -> flavor."""
    facts = hostvars.get("ansible_facts") or {}
    return {
        "memtotal_mb": facts.get("memtotal_mb", hostvars.get("ansible_memtotal_mb")),
        "processor_vcpus": facts.get("processor_vcpus", hostvars.get("ansible_processor_vcpus")),
        "machines": machines if machines is not None else (hostvars.get("nspawnctl_machines") or {}),
    }


class FilterModule(object):
    def filters(self):
        return {"place": place, "host_manifest": host_manifest, "host_facts": host_facts}
