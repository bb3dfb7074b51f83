#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs `nspawnctl apply` (or `plan` in check mode) on the managed host and reports what it did.
# Ansible owns the inventory, the parallelism and ssh; nspawnctl owns the machines.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nspawnctl_apply
short_description: Converge systemd-nspawn machines to a manifest with nspawnctl
description:
  - Runs C(nspawnctl apply -f MANIFEST --json) on the managed host, so the machines there match
    the manifest (create, update, and with O(prune) remove the ones the manifest made earlier).
  - In check mode it runs C(nspawnctl plan -f MANIFEST --json) instead and changes nothing.
  - With C(--diff) it shows the plan (check mode) or what was done, per machine.
  - The task is changed only when nspawnctl reports changes; a second run of the same manifest
    reports none.
version_added: "0.1.0"
author:
  - nspawnctl contributors
requirements:
  - nspawnctl with the C(plan) and C(apply) verbs on the managed host, run as root (or as a member of
    the C(nspawn) group when it goes through nspawnd).
options:
  manifest:
    description:
      - Path of the manifest (YAML) on the managed host.
      - Exactly one of O(manifest) and O(content) is required.
    type: path
  content:
    description:
      - The manifest's text. It is written to a private temporary file on the managed host
        (mode 0600 in a 0700 directory), named after O(name), and removed after the run.
      - Exactly one of O(manifest) and O(content) is required.
    type: str
  name:
    description:
      - With O(content), the file's name without C(.yaml), which nspawnctl takes as the manifest's
        name when the text has no C(name:) key. The manifest's name is recorded on the machines it
        creates and decides which machines O(prune) may remove, so keep it stable across runs.
      - Letters, digits, C(.), C(_) and C(-); ignored with O(manifest).
    type: str
    default: ansible
  prune:
    description:
      - Also remove machines that this manifest created earlier and no longer lists
        (C(nspawnctl apply --prune)).
    type: bool
    default: false
  keep_going:
    description:
      - Keep applying the other machines after one fails (C(nspawnctl apply --keep-going)).
        Without it, the machines after a failed one are skipped.
    type: bool
    default: false
  nspawnctl:
    description:
      - The nspawnctl binary, a path or a name looked up in E(PATH) and the sbin directories.
    type: str
    default: nspawnctl
notes:
  - Check mode is supported; it runs C(nspawnctl plan) and never C(apply).
  - Diff mode is supported.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Converge the web machines from a manifest already on the host
  nspawnctl.machines.nspawnctl_apply:
    manifest: /etc/nspawnctl/web.yaml

- name: Converge from a template rendered on the controller, removing machines it no longer lists
  nspawnctl.machines.nspawnctl_apply:
    content: "{{ lookup('ansible.builtin.template', 'fleet.yaml.j2') }}"
    name: fleet
    prune: true
    keep_going: true
  register: fleet

- name: Show what would change, without changing anything
  nspawnctl.machines.nspawnctl_apply:
    manifest: /etc/nspawnctl/web.yaml
  check_mode: true
  diff: true
"""

RETURN = r"""
manifest:
  description: The manifest's name, as nspawnctl reports it.
  returned: when nspawnctl printed a report
  type: str
  sample: demo
file:
  description: The absolute path nspawnctl read the manifest from (a temporary file with O(content)).
  returned: when nspawnctl printed a report
  type: str
  sample: /etc/nspawnctl/demo.yaml
changes:
  description: >-
    The number of changes made (or, in check mode, that apply would make). 0 means the host
    already matched the manifest.
  returned: when nspawnctl printed a report
  type: int
  sample: 2
failures:
  description: The number of machines that failed (always 0 in check mode).
  returned: when nspawnctl printed a report
  type: int
  sample: 0
machines:
  description:
    - One entry per machine of the manifest (and, with O(prune), each machine it would remove).
    - In check mode, the plan's entries, with RV(machines[].action).
    - Otherwise the apply report's entries, with RV(machines[].result), and RV(machines[].error) for a failed machine.
  returned: when nspawnctl printed a report
  type: list
  elements: dict
  contains:
    name:
      description: The machine's name.
      type: str
      sample: web1
    action:
      description: What apply would do (check mode only).
      type: str
      choices: [create, update, remove, none]
    result:
      description: What apply did.
      type: str
      choices: [changed, unchanged, failed, skipped]
    changes:
      description: >-
        The changes, each with C(op) (C(+), C(~) or C(-)), C(field), and C(old) and C(new) where
        they apply.
      type: list
      elements: dict
      sample: [{op: "~", field: flavor, old: small, new: medium}]
    error:
      description: Why the machine failed.
      type: str
      returned: for a failed machine
    rolled_back:
      description: Whether what apply had done to the failed machine was undone.
      type: bool
      returned: for a failed machine
lines:
  description: The changes as nspawnctl's text output prints them, one per line.
  returned: success
  type: list
  elements: str
  sample: ["+ web1 machine: clone of debian-base", "~ web1 flavor: small → medium"]
rc:
  description: nspawnctl's exit status.
  returned: always, once nspawnctl ran
  type: int
  sample: 0
stderr:
  description: What nspawnctl printed on stderr.
  returned: always, once nspawnctl ran
  type: str
"""

import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

EXIT_FAILED = 1
EXIT_REFUSED = 2
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def render_value(value):
    """A change's value as nspawnctl's text output shows it: `text`, `[a, b]`, `true`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "[" + ", ".join(value) + "]"
    return json.dumps(value, sort_keys=True)


def change_line(machine, change):
    """The line nspawnctl's text output prints for a change: `~ web1 flavor: small → medium`."""
    head = "%s %s %s" % (change.get("op", "?"), machine, change.get("field", "?"))
    old, new = change.get("old"), change.get("new")
    if old is not None and new is not None:
        return "%s: %s → %s" % (head, render_value(old), render_value(new))
    if new is not None:
        return "%s: %s" % (head, render_value(new))
    if old is not None:
        return "%s (was %s)" % (head, render_value(old))
    return head


def machine_diff(entry):
    """One Ansible diff per machine: the old values of what changes before, the new ones after."""
    name = entry.get("name", "?")
    before, after = [], []
    for change in entry.get("changes") or []:
        field = change.get("field", "?")
        if change.get("old") is not None:
            before.append("%s: %s\n" % (field, render_value(change["old"])))
        if change.get("new") is not None:
            after.append("%s: %s\n" % (field, render_value(change["new"])))
        elif change.get("op") in ("+", "~"):
            after.append("%s\n" % field)
    label = entry.get("action") or entry.get("result") or "machine"
    return {
        "before_header": "%s (%s)" % (name, "before"),
        "after_header": "%s (%s)" % (name, label),
        "before": "".join(before),
        "after": "".join(after),
    }


def parse_report(stdout):
    """nspawnctl's JSON report, or None when stdout holds none."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(report, dict) or not isinstance(report.get("machines"), list):
        return None
    if not isinstance(report.get("changes"), int) or isinstance(report.get("changes"), bool):
        return None
    return report


def summary(report):
    """What the module returns from a report; `failed` is Ansible's own key, so it becomes `failures`."""
    return {
        "manifest": report.get("manifest"),
        "file": report.get("file"),
        "changes": report["changes"],
        "failures": report.get("failed", 0),
        "machines": report["machines"],
    }


def error_message(text):
    """The message of the error object nspawnctl prints on stderr with --json: {"error": {"message": …}}."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def nspawnctl_message(verb, rc, stdout, stderr, manifest=None, label=None):
    text = error_message(stderr) or error_message(stdout) or (stderr or "").strip() or (stdout or "").strip()
    if manifest and label:
        # The temporary file is gone by the time anyone reads this; name what it held.
        text = text.replace(manifest, label)
    return "nspawnctl %s exited %d%s" % (verb, rc, (": " + text) if text else "")


def write_content(module, content, name):
    """Writes the manifest text to NAME.yaml in a directory only its owner can enter."""
    directory = tempfile.mkdtemp(prefix="nspawnctl-apply-", dir=module.tmpdir)
    path = os.path.join(directory, name + ".yaml")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(content)
    return directory, path


def run(module, binary, manifest, label=None):
    params = module.params
    verb = "plan" if module.check_mode else "apply"
    argv = [binary, verb, "-f", manifest, "--json"]
    if params["prune"]:
        argv.append("--prune")
    if params["keep_going"] and not module.check_mode:
        argv.append("--keep-going")
    rc, stdout, stderr = module.run_command(argv, check_rc=False, environ_update={"LC_ALL": "C.UTF-8", "NO_COLOR": "1"})
    base = {"rc": rc, "stderr": stderr, "cmd": argv}

    if rc == EXIT_REFUSED:
        # A refused manifest: nspawnctl's message names the file, the line and the key.
        module.fail_json(msg=nspawnctl_message(verb, rc, stdout, stderr, manifest, label), **base)
    report = parse_report(stdout) if rc in (0, EXIT_FAILED) else None
    if report is None:
        module.fail_json(msg=nspawnctl_message(verb, rc, stdout, stderr, manifest, label), stdout=stdout, **base)

    result = dict(base, **summary(report))
    result["changed"] = report["changes"] > 0
    if module._diff:
        result["diff"] = [machine_diff(entry) for entry in report["machines"] if entry.get("changes")]
    if rc == EXIT_FAILED:
        failed = [entry for entry in report["machines"] if entry.get("result") == "failed"]
        reasons = "; ".join(entry.get("error") or ("machine '%s' failed" % entry.get("name")) for entry in failed)
        result["msg"] = "nspawnctl apply: %d of %d machines failed: %s" % (
            len(failed), len(report["machines"]), reasons or (stderr or "").strip())
        module.fail_json(**result)
    lines = [change_line(entry.get("name", "?"), change)
             for entry in report["machines"] for change in entry.get("changes") or []]
    result["msg"] = "%s: %d changes" % (verb, report["changes"])
    result["lines"] = lines
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="path"),
            content=dict(type="str"),
            name=dict(type="str", default="ansible"),
            prune=dict(type="bool", default=False),
            keep_going=dict(type="bool", default=False),
            nspawnctl=dict(type="str", default="nspawnctl"),
        ),
        mutually_exclusive=[("manifest", "content")],
        required_one_of=[("manifest", "content")],
        supports_check_mode=True,
    )
    params = module.params
    binary = params["nspawnctl"]
    if "/" not in binary:
        binary = module.get_bin_path(binary, required=True)

    if params["content"] is None:
        run(module, binary, params["manifest"])
        return
    if not NAME_PATTERN.match(params["name"]):
        module.fail_json(msg="invalid name '%s': letters, digits, '.', '_' and '-' only" % params["name"])
    directory, path = write_content(module, params["content"], params["name"])
    try:
        run(module, binary, path, label="content (%s.yaml)" % params["name"])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
