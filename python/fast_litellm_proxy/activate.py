"""The config-line activation, for a command that cannot be changed (LiteLLM's Docker image):

    litellm_settings:
      callbacks: ["fast_litellm_proxy.activate.callback"]

LiteLLM imports this module in every process that loads the config (each worker, at start-up)
and adds `callback`, a CustomLogger that does nothing, to its callbacks. Importing it imports
fast_litellm, after litellm; when FAST_LITELLM_SHM is unset it first points it at the region
of this proxy's master (`_region`), so spawned workers share one region.

What it cannot cover (README, "Without the launcher"): it runs after `import litellm` and
after the proxy module made its objects, so the import-order check applies (it logs anything
left unaccelerated at ERROR); the master process, which never loads the config, is not
accelerated; the region file of a proxy whose master exits stays until the next proxy started
through fast_litellm_proxy on this host removes it (or `rm /dev/shm/fast_litellm-proxy.*`).
"""

from __future__ import annotations

import os

from . import _hook, _region


def _master_pid() -> int:
    """A worker's master is its parent; a proxy of one process is its own master."""
    return os.getppid() if _region.server_parent_command() is not None else os.getpid()


if _region.choose_for_master(os.environ, _master_pid(), starting=False):
    _region.remove_at_exit_if_owner()
_hook.show_own_log()

import fast_litellm  # noqa: E402 - after the region is chosen
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402


class _Activated(CustomLogger):
    """Nothing to log: being imported was the point."""


callback = _Activated()
__all__ = ["callback", "fast_litellm"]
