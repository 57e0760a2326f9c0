"""Entry point of the fl-shm-inspect console script.

It lives outside the fast_litellm package on purpose: importing fast_litellm maps the
process-wide region read-write and registers the process in it, and patches LiteLLM (which
imports it). The inspector must never change a region and needs no LiteLLM, so it turns both
off for its own process before importing anything.
"""

import os
import sys


def main() -> int:
    target = os.environ.get("FAST_LITELLM_SHM", "")
    os.environ["FAST_LITELLM_SHM"] = "off"
    os.environ["FAST_LITELLM_DISABLE"] = "1"
    from fast_litellm.inspect import main as run

    return run(sys.argv[1:], default_path=target)
