"""Runs Python in a fresh interpreter with its own environment: how the integration tests see
`import fast_litellm` exactly as a process starting under that environment would."""

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional

RESULT_MARK = "FL-RESULT:"


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
    if proc.returncode != 0 or not lines:
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
