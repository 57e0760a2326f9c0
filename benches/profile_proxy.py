"""Where one proxy worker spends its CPU: py-spy over LiteLLM alone and with fast_litellm.

    python benches/profile_proxy.py [--seconds S] [--rounds R] [--top N] [--stream] [--server deploy|launcher]

Both proxies (one worker each, the same config as benches/bench_proxy.py) serve 8 kept-alive
connections of chat completions to the mock upstream, one after the other, round after
round, while `py-spy record --gil` samples the worker at 100 Hz. `--gil` counts only the
thread holding the GIL, i.e. CPU spent running Python and the C it calls (without it py-spy
counts idle threads as busy here). Non-blocking sampling, so the worker runs at full speed;
it loses some samples to read errors and misses few from the executor threads.

Printed: the top N functions by self time (the innermost frame of a sample; line numbers
merged), as % of each variant's samples, ranked by LiteLLM alone, with fast_litellm's own top
N that are not in that list below them; and CPU ms per request of each worker while sampled.
py-spy comes from requirements-bench.txt (`make bench` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from typing import Counter, Dict, List, Optional, Tuple

from bench_proxy import MODEL, cpu_s, load, start, workers
from proxy import Upstream, config  # bench_proxy put tests/ on sys.path

VARIANTS = ("litellm", "fast_litellm")
#: `function (path/to/file.py:123)`, py-spy's raw frame.
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::\d+)?\)$")


def py_spy() -> str:
    found = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install -r requirements-bench.txt (or `make bench`)")
    return found


def frame_name(frame: str) -> str:
    """`function (file)` with the line number dropped and the path cut at site-packages."""
    m = FRAME.match(frame)
    if m is None:
        return frame
    path = m["path"].split("site-packages/")[-1]
    return f"{m['function']} ({path})"


def self_time(raw: str) -> Tuple[Counter[str], int]:
    """Samples per innermost frame, and all samples, from py-spy's raw (collapsed) output."""
    leaves: Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames:
            leaves[frame_name(frames[-1])] += int(count)
            total += int(count)
    return leaves, total


async def load_for(url: str, seconds: float, stream: bool) -> int:
    """Chat completions on 8 kept-alive connections for about `seconds`; how many were sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await load(url, 200, 8, stream=stream, keepalive=True, model=MODEL)
        sent += 200
    return sent


def profile(worker: int, url: str, seconds: float, stream: bool, out: pathlib.Path) -> Tuple[str, int, float]:
    """py-spy's raw output over one sampled load, the requests sent and the worker's CPU s."""
    spy = subprocess.Popen([py_spy(), "record", "--pid", str(worker), "--rate", "100", "--gil", "--threads",
                            "--nonblocking", "--format", "raw", "--duration", str(int(seconds)), "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu = cpu_s(worker)
    sent = asyncio.run(load_for(url, seconds, stream))
    cpu = cpu_s(worker) - cpu
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed ({spy.returncode}): {err.strip()[-500:]}")
    return out.read_text(), sent, cpu


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30, help="sampled seconds per variant and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--stream", action="store_true", help="streamed chat completions")
    p.add_argument("--server", choices=("deploy", "launcher"), default="deploy")
    args = p.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    py_spy()
    leaves: Dict[str, Counter[str]] = {v: collections.Counter() for v in VARIANTS}
    totals = {v: 0 for v in VARIANTS}
    cpu_ms: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        upstream = Upstream()
        stack.callback(upstream.close)
        cfg = config(os.path.join(tmp, "config.yaml"), upstream, [{"name": MODEL, "upstream": MODEL}])
        proxies = {v: start(stack, args.server, 1, v, cfg, pathlib.Path(tmp)) for v in VARIANTS}
        for px in proxies.values():  # warm up: imports, first-call paths, connections
            asyncio.run(load(px.url, 300, 8, stream=args.stream, keepalive=True, model=MODEL))
        for r in range(args.rounds):
            for v, px in proxies.items():
                print(f"{v}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
                [worker] = workers(px, args.server, 1)
                raw, sent, cpu = profile(worker, px.url, args.seconds, args.stream, pathlib.Path(tmp) / f"{v}-{r}.txt")
                counted, total = self_time(raw)
                leaves[v].update(counted)
                totals[v] += total
                cpu_ms[v].append(cpu * 1e3 / sent)

    from importlib.metadata import version

    command = " ".join(["python benches/profile_proxy.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`: Python {platform.python_version()}, LiteLLM {version('litellm')}, py-spy "
          f"{version('py-spy')}, {args.server}, 1 worker, {'streamed' if args.stream else 'non-streamed'} chat "
          f"completions on 8 kept-alive connections, {args.rounds} × {args.seconds:.0f} s sampled per variant\n")
    share = {v: {f: 100 * n / max(totals[v], 1) for f, n in leaves[v].items()} for v in VARIANTS}
    before = [f for f, _ in leaves["litellm"].most_common(args.top)]
    after_only = [f for f, _ in leaves["fast_litellm"].most_common(args.top) if f not in before]
    print("| # | function (self time) | litellm | fast_litellm |")
    print("|---:|---|---:|---:|")
    for i, f in enumerate(before + after_only, 1):
        rank = str(i) if i <= len(before) else "+"
        print(f"| {rank} | `{f}` | {share['litellm'].get(f, 0):.1f} % | {share['fast_litellm'].get(f, 0):.1f} % |")
    print(f"| | samples | {totals['litellm']} | {totals['fast_litellm']} |")
    print("| | worker CPU ms/request while sampled (median of rounds) | "
          + " | ".join(f"{statistics.median(cpu_ms[v]):.1f}" for v in VARIANTS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
