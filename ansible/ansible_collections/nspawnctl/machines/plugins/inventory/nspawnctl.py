# -*- coding: utf-8 -*-
# The machines `nspawnctl ls --json` lists, on this host or another, as Ansible hosts reached with the
# nspawnctl connection.

from __future__ import annotations

DOCUMENTATION = r"""
---
name: nspawnctl
short_description: systemd-nspawn machines listed by nspawnctl as inventory hosts
description:
  - Runs C(nspawnctl ls --json) (with O(host), C(nspawnctl --host ssh://… ls --json)) and makes every
    machine and image it lists a host, named after the machine, with C(ansible_connection) set to
    C(nspawnctl.machines.nspawnctl) (and C(ansible_nspawnctl_host) to O(host)), so tasks run inside the
    machines.
  - Each field of the listing becomes a host variable named C(nspawnctl_FIELD) (C(nspawnctl_state),
    C(nspawnctl_os), C(nspawnctl_addresses), C(nspawnctl_enabled), C(nspawnctl_read_only),
    C(nspawnctl_image_type), C(nspawnctl_machine_class), C(nspawnctl_usage), C(nspawnctl_exposed),
    C(nspawnctl_oci), C(nspawnctl_health)…, as the nspawnctl in use reports them).
  - With O(details), C(nspawnctl status --json) adds, per machine, C(nspawnctl_flavor), C(nspawnctl_image)
    (the image's path, type, read-only flag…), C(nspawnctl_machine) (leader, unit…) and
    C(nspawnctl_limits).
  - Hosts are grouped by state (C(nspawnctl_running), C(nspawnctl_stopped), C(nspawnctl_listening)…)
    and all of them are in C(nspawnctl_machines).
  - The configuration file's name must end with C(nspawnctl.yml) or C(nspawnctl.yaml).
version_added: "0.1.0"
author:
  - nspawnctl contributors
requirements:
  - nspawnctl on the controller; listing needs root or the group C(nspawn) (through nspawnd).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin; this file is for it.
    required: true
    choices: [nspawnctl.machines.nspawnctl, nspawnctl]
  nspawnctl_path:
    description:
      - The nspawnctl executable, a path or a name looked up in E(PATH). When set, hosts also get
        C(ansible_nspawnctl_path), so the connection runs the same one.
    type: str
    default: nspawnctl
    env:
      - name: ANSIBLE_NSPAWNCTL_PATH
  host:
    description:
      - The host whose machines to list, C(ssh://[USER@]HOST[:PORT]), passed as C(--host); hosts get
        C(ansible_nspawnctl_host) with it. Unset, the controller's machines.
    type: str
    env:
      - name: ANSIBLE_NSPAWNCTL_HOST
  all:
    description: Also list hidden names such as C(.host) (C(nspawnctl ls --all)).
    type: bool
    default: false
  details:
    description: Ask C(nspawnctl status --json) about each machine as well, for its flavor, image and limits.
    type: bool
    default: false
  states:
    description: Only machines in these states (C(running), C(stopped), C(starting), C(stopping), C(listening)); all when empty.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
# machines.nspawnctl.yml: every machine on this host
plugin: nspawnctl.machines.nspawnctl

# build1.nspawnctl.yml: the running machines of another host, grouped by OS and flavor
plugin: nspawnctl.machines.nspawnctl
host: ssh://root@build1.example
states: [running]
details: true
keyed_groups:
  - key: nspawnctl_flavor | default('none', true)
    prefix: flavor
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
"""

import json
import re
import shutil
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

CONNECTION = 'nspawnctl.machines.nspawnctl'
PREFIX = 'nspawnctl_'


def snake(key):
    """readOnly -> read_only; keys nspawnctl already prints in snake case stay as they are."""
    return re.sub(r'(?<=[a-z0-9])([A-Z])', r'_\1', key).lower()


def group_name(state):
    return PREFIX + re.sub(r'[^A-Za-z0-9_]', '_', state)


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = 'nspawnctl.machines.nspawnctl'

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(('nspawnctl.yml', 'nspawnctl.yaml'))

    def _nspawnctl(self, arguments):
        path = self.get_option('nspawnctl_path') or 'nspawnctl'
        executable = shutil.which(path)
        if not executable:
            raise AnsibleParserError("nspawnctl inventory: cannot find the nspawnctl executable '%s'" % path)
        argv = [executable]
        host = self.get_option('host')
        if host:
            argv += ['--host', host]
        argv += arguments
        try:
            run = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as e:
            raise AnsibleParserError('nspawnctl inventory: cannot run %s: %s' % (executable, to_native(e)))
        if run.returncode != 0:
            message = to_text(run.stderr, errors='surrogate_or_replace').strip()
            for line in reversed(message.splitlines()):
                try:
                    message = json.loads(line)['error']['message']
                    break
                except (ValueError, KeyError, TypeError):
                    continue
            raise AnsibleParserError('nspawnctl inventory: %s exited %d: %s' % (' '.join(argv[1:]), run.returncode, message))
        try:
            return json.loads(to_text(run.stdout, errors='surrogate_or_strict'))
        except ValueError as e:
            raise AnsibleParserError('nspawnctl inventory: %s printed no JSON: %s' % (' '.join(argv[1:]), to_native(e)))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        arguments = ['ls', '--json'] + (['--all'] if self.get_option('all') else [])
        machines = self._nspawnctl(arguments)
        if not isinstance(machines, list):
            raise AnsibleParserError('nspawnctl inventory: ls --json printed no list')
        states = set(self.get_option('states') or [])
        strict = self.get_option('strict')
        self.inventory.add_group(PREFIX + 'machines')
        for machine in machines:
            name = machine.get('name') if isinstance(machine, dict) else None
            if not name or (states and machine.get('state') not in states):
                continue
            variables = {PREFIX + snake(key): value for key, value in machine.items()}
            if self.get_option('details'):
                status = self._nspawnctl(['status', '--json', name])
                for key in ('flavor', 'image', 'machine', 'limits', 'socket_state', 'pending_resize', 'disk'):
                    if key in status:
                        variables[PREFIX + key] = status[key]
                variables.setdefault(PREFIX + 'flavor', None)
            variables['ansible_connection'] = CONNECTION
            if self.get_option('host'):
                variables['ansible_nspawnctl_host'] = self.get_option('host')
            if self.get_option('nspawnctl_path') not in (None, '', 'nspawnctl'):
                variables['ansible_nspawnctl_path'] = self.get_option('nspawnctl_path')

            self.inventory.add_host(name, group=PREFIX + 'machines')
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
            state = machine.get('state')
            if isinstance(state, str) and state:
                self.inventory.add_group(group_name(state))
                self.inventory.add_host(name, group=group_name(state))

            self._set_composite_vars(self.get_option('compose'), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), variables, name, strict=strict)
