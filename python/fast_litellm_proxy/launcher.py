"""`fast-litellm`: LiteLLM's own CLI with fast_litellm active in every process.

    fast-litellm --config config.yaml --num_workers 4 --port 4000

takes exactly `litellm`'s arguments and replaces itself (exec) by `litellm` with them, so the
process tree, signals and exit codes are LiteLLM's. Before that it:

- puts `bootstrap/` first on PYTHONPATH: every Python process started under it (the master,
  uvicorn's and granian's spawned workers; gunicorn's forked workers inherit the master's
  import) imports fast_litellm right after it imports litellm;
- when FAST_LITELLM_SHM is unset, points it at /dev/shm/fast_litellm-proxy.<pid> so every
  worker attaches to one region, removed when the master exits (see `_region`).

The pattern is that of `ddtrace-run` and `opentelemetry-instrument`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Optional

from . import _region

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")

HELP = """
fast_litellm (fast-litellm):
  fast-litellm takes exactly litellm's arguments above and runs litellm with them, with
  fast_litellm active in the master and in every worker (uvicorn --num_workers, --run_gunicorn,
  --run_granian, --run_hypercorn): rate limits, router state and deployment slots are shared
  by every worker of this host. FAST_LITELLM_SHM names the shared region; unset, it is
  /dev/shm/fast_litellm-proxy.<pid>, removed when the proxy exits. FAST_LITELLM_DISABLE=1 runs
  plain litellm. Other settings: the FAST_LITELLM_* variables in fast_litellm's README.
"""


def find_litellm() -> Optional[str]:
    """LiteLLM's CLI beside this interpreter (the same environment), else on PATH."""
    here = os.path.dirname(sys.executable)
    return shutil.which("litellm", path=here) or shutil.which("litellm")


def environment(env: "os._Environ[str]") -> str:
    """Prepares `env` for the litellm process that replaces this one; returns the region path
    it chose ('' when FAST_LITELLM_SHM was set)."""
    python_path = env.get("PYTHONPATH", "")
    parts = [p for p in python_path.split(os.pathsep) if p and p != BOOTSTRAP]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *parts])
    return _region.choose_for_master(env, os.getpid(), starting=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    litellm = find_litellm()
    if litellm is None:
        print(
            "fast-litellm: LiteLLM's CLI `litellm` is not installed in this environment "
            "(pip install 'litellm[proxy]')",
            file=sys.stderr,
        )
        return 2
    if "--help" in args:
        done = subprocess.run([litellm, *args], stdout=subprocess.PIPE, text=True)
        sys.stdout.write(done.stdout)
        sys.stdout.write(HELP)
        return done.returncode
    region = environment(os.environ)
    if region:
        print(f"fast-litellm: shared region {region} (removed when the proxy exits)", file=sys.stderr, flush=True)
    os.execv(litellm, [litellm, *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
