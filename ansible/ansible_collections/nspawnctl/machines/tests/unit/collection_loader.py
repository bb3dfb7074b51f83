"""Sets up Ansible's collection loader for this collection once per process, whichever test file
is imported first, so the plugins load as `nspawnctl.machines.*` as they would for a playbook."""

import os
import sys

from ansible.plugins.loader import init_plugin_loader

COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))

if not any(type(finder).__name__ == "_AnsibleCollectionFinder" for finder in sys.meta_path):
    init_plugin_loader([COLLECTIONS_ROOT])
