# -*- coding: utf-8 -*-
# Runs Ansible's commands inside systemd-nspawn machines with `nspawnctl exec`, and moves files with
# `nspawnctl copy-to`/`copy-from`, on this host or, with --host ssh://…, on another one.

from __future__ import annotations

DOCUMENTATION = r"""
---
name: nspawnctl
short_description: Run tasks inside systemd-nspawn machines with nspawnctl
description:
  - Runs each command Ansible sends inside a running machine with
    C(nspawnctl exec MACHINE -- /bin/sh -c COMMAND); the machine is the inventory host's name
    (or C(ansible_host)).
  - Module code goes to the machine's Python on the command's stdin (pipelining), so a task costs one
    C(nspawnctl exec); no terminal is used, and stdout, stderr and the exit status stay apart.
  - Files go in with C(nspawnctl copy-to) and come out with C(nspawnctl copy-from) on the local host.
    Through O(nspawnctl_host) (where nspawnctl copies nothing) they go through C(nspawnctl exec) as a
    byte stream (C(cat)) instead.
  - A command that fails inside the machine fails with its own exit status. nspawnctl's own failures
    (no such machine, a machine that is not running, an unreachable host) make the host unreachable,
    with nspawnctl's message.
  - With O(nspawnctl_host), the machines are on another host, reached with
    C(nspawnctl --host ssh://[USER@]HOST[:PORT]); ssh uses your own configuration and keys, and the
    remote ssh user must be root there (nspawnd runs commands in machines for root only).
version_added: "0.1.0"
author:
  - nspawnctl contributors
requirements:
  - nspawnctl on the controller, run as root (or, with O(nspawnctl_host), root on that host).
  - The machine running, with C(/bin/sh), and Python 3 for modules.
options:
  pipelining:
    description:
      - Send module code to the machine's Python on stdin, one C(nspawnctl exec) per task, instead of copying it
        into a temporary file first.
      - On by default here, since nothing in the way (a terminal, sudo's C(requiretty)) is involved.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
  remote_addr:
    description:
      - The machine's name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_nspawnctl_machine
  remote_user:
    description:
      - The user inside the machine that commands run as (C(nspawnctl exec --user)), a name or a
        numeric uid. Unset, nspawnctl runs them as root.
      - To change user only for some tasks, use C(become_method=nspawnctl.machines.nspawnctl).
    type: str
    vars:
      - name: ansible_user
      - name: ansible_nspawnctl_user
    env:
      - name: ANSIBLE_REMOTE_USER
    ini:
      - section: defaults
        key: remote_user
    keyword:
      - name: remote_user
  nspawnctl_path:
    description:
      - The nspawnctl executable on the controller, a path or a name looked up in E(PATH).
    type: str
    default: nspawnctl
    vars:
      - name: ansible_nspawnctl_path
    env:
      - name: ANSIBLE_NSPAWNCTL_PATH
    ini:
      - section: nspawnctl_connection
        key: path
  nspawnctl_host:
    description:
      - The host the machines are on, as C(ssh://[USER@]HOST[:PORT]), passed to nspawnctl as C(--host).
        Unset, the machines are on the controller.
    type: str
    vars:
      - name: ansible_nspawnctl_host
    env:
      - name: ANSIBLE_NSPAWNCTL_HOST
    ini:
      - section: nspawnctl_connection
        key: host
  nspawnctl_transfer:
    description:
      - How files go in and out of the machine.
      - V(copy) uses C(nspawnctl copy-to) and C(copy-from), which write the machine's root file system
        on disk as root (on the local host only); a path below a file system the guest mounts at run
        time (a C(tmpfs) C(/tmp)) is not reached, which is why Ansible's remote temporary directory should
        stay in the user's home (the default C(~/.ansible/tmp)).
      - V(exec) streams the file through C(nspawnctl exec) and C(cat) inside the running machine, as
        the connection's user, and sees what the guest sees.
      - V(auto) is V(copy) on the local host and V(exec) with O(nspawnctl_host).
    type: str
    default: auto
    choices: [auto, copy, exec]
    vars:
      - name: ansible_nspawnctl_transfer
    env:
      - name: ANSIBLE_NSPAWNCTL_TRANSFER
    ini:
      - section: nspawnctl_connection
        key: transfer
notes:
  - The shell Ansible's commands run with is C(ansible_shell_executable) (default C(/bin/sh)); no terminal is
    allocated, so nothing depends on one.
  - Become with C(become_method=nspawnctl.machines.nspawnctl) runs the task's commands as O(remote_user)'s
    replacement through C(nspawnctl exec --user); other become methods (C(sudo)) run inside the machine as
    usual, when they need no password.
"""

EXAMPLES = r"""
# inventory.yml: the machines on this host, by name
nspawn_machines:
  hosts:
    web1:
    db1:
  vars:
    ansible_connection: nspawnctl.machines.nspawnctl
    ansible_python_interpreter: /usr/bin/python3

# The same machines, on another host (ssh as root there, with your ~/.ssh/config)
remote_machines:
  hosts:
    web1:
  vars:
    ansible_connection: nspawnctl.machines.nspawnctl
    ansible_nspawnctl_host: ssh://root@build1.example
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# exec's own failures: 125 for nspawnctl's (bad usage, no such machine, no permission, an
# unreachable host...), 5 for a machine that is not running. With --json nspawnctl reports them on
# stderr as one line {"error": {"code": ..., "message": ...}}.
OWN_FAILURES = (125, 5)
BECOME_METHOD = 'nspawnctl.machines.nspawnctl'


def nspawnctl_error(stderr):
    """nspawnctl's own error (code, message) in `stderr`'s last line, or None."""
    lines = [line for line in to_text(stderr, errors='surrogate_or_strict').splitlines() if line.strip()]
    if not lines:
        return None
    try:
        body = json.loads(lines[-1])
    except ValueError:
        return None
    error = body.get('error') if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get('message'), str):
        return str(error.get('code') or 'error'), error['message']
    return None


class Connection(ConnectionBase):
    """Commands and files in a systemd-nspawn machine, through nspawnctl."""

    transport = 'nspawnctl.machines.nspawnctl'
    has_pipelining = True
    # Ansible's commands arrive as one shell command string (executable -c 'QUOTED'), run with sh -c.
    allow_executable = True
    # nspawnctl exec never allocates a terminal here; become methods that need one cannot work.
    has_tty = False

    def __init__(self, play_context, new_stdin, *args, **kwargs):
        super().__init__(play_context, new_stdin, *args, **kwargs)
        self._executable = None

    def set_become_plugin(self, plugin):
        super().set_become_plugin(plugin)
        # The nspawnctl become method works only here, where commands get --user; it checks for this.
        if plugin is not None and plugin.name == BECOME_METHOD:
            plugin.nspawnctl_connection = True

    @property
    def machine(self):
        name = self.get_option('remote_addr')
        if not name:
            raise AnsibleConnectionFailure('nspawnctl connection: no machine name (inventory_hostname or ansible_host)')
        return name

    def _connect(self):
        """Finds nspawnctl; there is nothing to keep open (each command is its own nspawnctl exec)."""
        if not self._connected:
            path = self.get_option('nspawnctl_path') or 'nspawnctl'
            found = shutil.which(path) or next(
                (os.path.join(d, path) for d in ('/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin')
                 if '/' not in path and os.access(os.path.join(d, path), os.X_OK)), None)
            if not found:
                raise AnsibleError("nspawnctl connection: cannot find the nspawnctl executable '%s'" % path)
            self._executable = found
            host = self.get_option('nspawnctl_host')
            display.vvv('nspawnctl %s machine %s' % ('on ' + host if host else 'local', self.machine), host=self.machine)
            self._connected = True
        return self

    def _base(self):
        argv = [self._executable]
        host = self.get_option('nspawnctl_host')
        if host:
            argv += ['--host', host]
        return argv

    def _user(self, sudoable):
        """The guest user a command runs as: the become user for a become command, else remote_user."""
        if sudoable and self.become is not None and self.become.name == BECOME_METHOD:
            return self.become.get_option('become_user', playcontext=self._play_context) or 'root'
        return self.get_option('remote_user')

    def _exec_argv(self, command, user=None, interactive=False):
        argv = self._base() + ['exec', '--json']
        if user:
            argv += ['--user', str(user)]
        if interactive:
            argv.append('--interactive')
        return argv + [self.machine, '--'] + list(command)

    def _run(self, argv, in_data=None, stdout=subprocess.PIPE):
        display.vvv('EXEC %s' % ' '.join(shlex.quote(to_text(a)) for a in argv), host=self.machine)
        try:
            process = subprocess.Popen([to_bytes(a, errors='surrogate_or_strict') for a in argv],
                                       stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
                                       stdout=stdout, stderr=subprocess.PIPE)
        except OSError as e:
            raise AnsibleConnectionFailure('nspawnctl connection: cannot run %s: %s' % (argv[0], to_native(e)))
        out, err = process.communicate(in_data)
        return process.returncode, out if out is not None else b'', err

    def _refuse_own_failure(self, rc, stderr, what):
        """Raises AnsibleConnectionFailure when nspawnctl itself failed rather than the command."""
        if rc not in OWN_FAILURES:
            return
        error = nspawnctl_error(stderr)
        if error is not None:
            raise AnsibleConnectionFailure('nspawnctl %s in machine %s failed (exit %d, %s): %s'
                                           % (what, self.machine, rc, error[0], error[1]))
        text = to_text(stderr, errors='surrogate_or_replace').strip()
        # A command line nspawnctl's parser refused (an option this nspawnctl lacks) is not JSON.
        if rc == 125 and text.startswith('Error:'):
            raise AnsibleConnectionFailure('nspawnctl %s in machine %s failed (exit %d): %s' % (what, self.machine, rc, text))

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Runs `cmd` (a shell command string) inside the machine with /bin/sh -c; returns (rc, stdout, stderr)."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become is not None and self.become.name != BECOME_METHOD and self.become.expect_prompt():
            raise AnsibleError('nspawnctl connection: become method %s would ask for a password, which this connection '
                               'cannot answer; use become_method=%s (nspawnctl exec --user)' % (self.become.name, BECOME_METHOD))
        shell = self._play_context.executable or '/bin/sh'
        argv = self._exec_argv([shell, '-c', cmd], user=self._user(sudoable), interactive=in_data is not None)
        rc, out, err = self._run(argv, in_data=in_data)
        self._refuse_own_failure(rc, err, 'exec')
        return rc, out, err

    def _transfer(self):
        method = self.get_option('nspawnctl_transfer') or 'auto'
        if method == 'auto':
            return 'exec' if self.get_option('nspawnctl_host') else 'copy'
        if method == 'copy' and self.get_option('nspawnctl_host'):
            raise AnsibleError('nspawnctl connection: nspawnctl_transfer=copy works on the local host only '
                               '(nspawnctl copy-to and copy-from do not go through --host); use exec or auto')
        return method

    def _copy(self, verb, source, destination):
        argv = self._base() + [verb, '--json', '--replace', self.machine, source, destination]
        rc, out, err = self._run(argv)
        if rc != 0:
            error = nspawnctl_error(err)
            message = error[1] if error else to_text(err, errors='surrogate_or_replace').strip()
            raise AnsibleError('nspawnctl %s %s %s %s failed (exit %d): %s' % (verb, self.machine, source, destination, rc, message))

    def put_file(self, in_path, out_path):
        """Copies the controller's file `in_path` to `out_path` in the machine."""
        super().put_file(in_path, out_path)
        display.vvv('PUT %s TO %s' % (in_path, out_path), host=self.machine)
        if not os.path.isfile(to_bytes(in_path, errors='surrogate_or_strict')):
            raise AnsibleFileNotFound('file or module does not exist: %s' % to_native(in_path))
        if self._transfer() == 'copy':
            self._copy('copy-to', in_path, out_path)
            return
        # Written beside the destination, then renamed over it: a reader never sees half a file.
        script = 'set -e; umask 077; tmp="$1.nspawnctl-put.$$"; trap \'rm -f "$tmp"\' EXIT; cat > "$tmp"; mv -f "$tmp" "$1"; trap - EXIT'
        with open(to_bytes(in_path, errors='surrogate_or_strict'), 'rb') as source:
            data = source.read()
        rc, out, err = self._run(self._exec_argv(['/bin/sh', '-c', script, 'sh', out_path],
                                                 user=self.get_option('remote_user'), interactive=True), in_data=data)
        self._refuse_own_failure(rc, err, 'exec (put_file)')
        if rc != 0:
            raise AnsibleError('failed to transfer %s to %s in machine %s (exit %d): %s'
                               % (in_path, out_path, self.machine, rc, to_text(err, errors='surrogate_or_replace').strip()))

    def fetch_file(self, in_path, out_path):
        """Copies `in_path` in the machine to the controller's `out_path`."""
        super().fetch_file(in_path, out_path)
        display.vvv('FETCH %s TO %s' % (in_path, out_path), host=self.machine)
        if self._transfer() == 'copy':
            self._copy('copy-from', in_path, out_path)
            return
        b_out = to_bytes(out_path, errors='surrogate_or_strict')
        directory = os.path.dirname(b_out) or b'.'
        handle, b_tmp = tempfile.mkstemp(dir=directory, prefix=b'.nspawnctl-fetch.')
        try:
            with os.fdopen(handle, 'wb') as sink:
                rc, out, err = self._run(self._exec_argv(['/bin/sh', '-c', 'exec cat -- "$1"', 'sh', in_path],
                                                         user=self.get_option('remote_user')), stdout=sink)
            self._refuse_own_failure(rc, err, 'exec (fetch_file)')
            if rc != 0:
                message = to_text(err, errors='surrogate_or_replace').strip()
                if re.search(r'No such file|not found', message):
                    raise AnsibleFileNotFound('file %s not found in machine %s: %s' % (in_path, self.machine, message))
                raise AnsibleError('failed to fetch %s from machine %s (exit %d): %s' % (in_path, self.machine, rc, message))
            os.rename(b_tmp, b_out)
            b_tmp = None
        finally:
            if b_tmp is not None:
                try:
                    os.unlink(b_tmp)
                except OSError:
                    pass

    def close(self):
        """Nothing stays open between commands."""
        self._connected = False

    def reset(self):
        self.close()
