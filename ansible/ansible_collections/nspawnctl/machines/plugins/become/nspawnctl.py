# -*- coding: utf-8 -*-
# Become another guest user with `nspawnctl exec --user`: the nspawnctl connection does the change, so
# the machine needs neither sudo nor a terminal.

from __future__ import annotations

DOCUMENTATION = r"""
---
name: nspawnctl
short_description: Run as another user in a systemd-nspawn machine with nspawnctl exec --user
description:
  - With the C(nspawnctl.machines.nspawnctl) connection, runs a task's commands as O(become_user) inside the
    machine; the connection passes it to C(nspawnctl exec --user), which switches user as it starts the
    command. No sudo, su, password or terminal is needed in the machine.
  - With any other connection it fails rather than run the commands as the connection's user.
version_added: "0.1.0"
author:
  - nspawnctl contributors
options:
  become_user:
    description: The user in the machine to run as, a name or a numeric uid.
    type: str
    default: root
    ini:
      - section: privilege_escalation
        key: become_user
      - section: nspawnctl_become_plugin
        key: user
    vars:
      - name: ansible_become_user
      - name: ansible_nspawnctl_become_user
    env:
      - name: ANSIBLE_BECOME_USER
      - name: ANSIBLE_NSPAWNCTL_BECOME_USER
    keyword:
      - name: become_user
"""

EXAMPLES = r"""
- name: Run as www-data in the machine
  ansible.builtin.command: id -un
  become: true
  become_method: nspawnctl.machines.nspawnctl
  become_user: www-data
"""

from ansible.errors import AnsibleError
from ansible.plugins.become import BecomeBase


class BecomeModule(BecomeBase):

    name = 'nspawnctl.machines.nspawnctl'
    # The command is not wrapped, so nothing prints a success marker and nothing prompts.
    pipelining = True
    require_tty = False

    # Set by the nspawnctl connection when it takes this plugin.
    nspawnctl_connection = False

    def build_become_command(self, cmd, shell):
        super().build_become_command(cmd, shell)
        if not self.nspawnctl_connection:
            raise AnsibleError('become method %s works only with the nspawnctl.machines.nspawnctl connection '
                               '(it changes user through nspawnctl exec --user)' % self.name)
        # Unchanged: the connection runs it as become_user.
        return cmd
