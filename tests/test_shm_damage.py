"""A region whose counters and worker entries were overwritten with garbage (a stray write,
a bad disk) must never crash a process: every call returns, the inspector still reads it."""

import json
import os
import random
import subprocess
import sys

import pytest

from fast_litellm import shm

HEADER, WORKER, SLOT = 4096, 4096, 64


@pytest.mark.parametrize("seed", [1234, 7, 99])
def test_garbage_in_the_table_and_worker_entries_never_crashes(region_path, seed):
    capacity, workers = 256, 8
    shm.Region(region_path, capacity=capacity, max_workers=workers).close()
    rng = random.Random(seed)
    with open(region_path, "r+b") as f:
        # Everything after the header's fixed fields: counters, workers and slots.
        f.seek(64)
        f.write(rng.randbytes(HEADER - 64))
        f.write(rng.randbytes(workers * WORKER))
        f.write(rng.randbytes(capacity * SLOT))
    # In a child process, so that a crash shows up as a signal instead of killing pytest.
    code = f"""
import json, sys
from fast_litellm import shm
r = shm.Region({region_path!r})
out = {{}}
out["hits"] = [r.hit(f"k{{i}}", 5, 60.0).allowed for i in range(50)]
out["many"] = r.hit_many([("a", 5, 60.0, 1), ("b", 5, 60.0, 1)]).allowed
out["slot"] = r.acquire("s", 2)
if out["slot"]:
    r.release("s")
out["reaped"] = r.reap()
out["stats"] = r.stats()
out["top"] = len(r.top_keys(10))
print(json.dumps(out))
"""
    env = dict(os.environ, FAST_LITELLM_SHM="off")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    result = json.loads(out.stdout)
    assert len(result["hits"]) == 50 and result["stats"]["capacity"] == capacity
    inspect = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fl-shm-inspect"), region_path, "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert inspect.returncode == 0, inspect.stderr
    json.loads(inspect.stdout)
