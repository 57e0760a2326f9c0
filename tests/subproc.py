"""Runs Python in a fresh interpreter with its own environment: how the integration tests see
`import fast_litellm` exactly as a process starting under that environment would."""

import json
import os
import re
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional

RESULT_MARK = "FL-RESULT:"

# LiteLLM 1.110's native Redis client (litellm.rust_bridge) aborts some interpreters at exit: one
# of its runtime threads takes the GIL while Python finalizes. Stock LiteLLM 1.110.2 without
# fast_litellm: 3 aborts in 16 runs of a script that acquires parallel-request slots with Redis,
# both cores busy. Only that abort, after the child emitted its result, is not the child failing.
LITELLM_EXIT_ABORT = re.compile(r"^Fatal Python error: PyGILState_Release: thread state 0x[0-9a-f]+ must be current "
                                r"when releasing\nPython runtime state: finalizing \(tstate=0x[0-9a-f]+\)\n\n"
                                r"Thread 0x[0-9a-f]+ \(most recent call first\):\n  <no Python frame>\n*"
                                r"(Extension modules: [^\n]*\n)?\Z", re.MULTILINE)


def _failed(returncode: int, stderr: str) -> bool:
    return returncode != 0 and not (returncode == -6 and LITELLM_EXIT_ABORT.search(stderr))


def run_python(code: str, env: Optional[Dict[str, str]] = None, timeout: float = 120.0) -> Any:
    """Runs `code`, which calls `emit(value)` once; returns that value (JSON round-tripped).
    Fails with the child's output when it exits non-zero or emits nothing."""
    prelude = (
        "import json as _json\n"
        f"def emit(value):\n    print({RESULT_MARK!r} + _json.dumps(value), flush=True)\n"
    )
    child_env = dict(os.environ)
    child_env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    child_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if _failed(proc.returncode, proc.stderr) or not lines:
        raise AssertionError(f"child failed (exit {proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def host_tier_metrics(region):
    """The host tier's counters in the Prometheus output of a process on that host's region."""
    text = run_python("""
        from fast_litellm import metrics
        emit(metrics.render().decode())
    """, env={"FAST_LITELLM_SHM": region, "FAST_LITELLM_DISABLE": "0"})
    prefix = "fast_litellm_host_tier_"
    return {line.split()[0][len(prefix):].removesuffix("_total"): float(line.split()[1])
            for line in text.splitlines() if line.startswith(prefix) and line.split()[0].endswith("_total")}
