"""The whole LiteLLM proxy under gunicorn, with and without fast_litellm, side by side.

    python benches/bench_proxy.py [--quick] [--rounds R] [--requests N] [--concurrency C]

The real proxy (deploy/app.py, deploy/gunicorn.conf.py, 3 workers, --preload) in front of the
mock upstream on 127.0.0.1, started once with fast_litellm (a region in /dev/shm) and once with
FAST_LITELLM_DISABLE=1 (LiteLLM alone, per-worker counters); both stay up and take turns,
round after round. Each round sends N chat completions at C at once (httpx, new connection per
request), spread over 200 keys that each carry an rpm limit never reached (so every request
goes through the limiter) and count their prompt tokens (the router's pre-call check is off;
the limiter reserves TPM by its own estimate). Reported: requests per second and latency
percentiles, medians over the rounds. The load generator runs on the same 2 cores as the
proxy, so absolute numbers are low; read the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from typing import Dict, List, Optional

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from proxy import MESSAGE, Upstream, config, proxy  # noqa: E402  (the tests' harness)

KEYS = [f"sk-bench{i}-rpm1000000" for i in range(200)]


async def load(url: str, n: int, concurrency: int, keys: List[str] = KEYS,
               urls: Optional[List[str]] = None) -> Dict[str, float]:
    """N chat completions, C at once, request i with keys[i % len(keys)] to urls[i % len(urls)]
    (default: all to `url`)."""
    urls = urls or [url]
    latencies: List[float] = []
    failures = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def one(i: int) -> None:
            nonlocal failures
            async with sem:
                start = time.perf_counter()
                r = await client.post(urls[i % len(urls)] + "/v1/chat/completions",
                                      headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                                      json={"model": "gpt-4o", "messages": [MESSAGE]})
                latencies.append(time.perf_counter() - start)
                failures += r.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": n / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
        "failures": failures,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    rounds, n = (1, 200) if args.quick else (args.rounds, args.requests)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    results: Dict[str, List[Dict[str, float]]] = {"litellm": [], "fast_litellm": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        upstream = Upstream()
        stack.callback(upstream.close)
        cfg = config(os.path.join(tmp, "config.yaml"), upstream, [{"name": "gpt-4o", "upstream": "mock-gpt-4o"}])
        region = f"/dev/shm/fl-bench-{uuid.uuid4().hex[:8]}"
        stack.callback(lambda: os.path.exists(region) and os.unlink(region))

        proxies = {
            "litellm": stack.enter_context(proxy(cfg, region, pathlib.Path(tmp), env={"FAST_LITELLM_DISABLE": "1"})),
            "fast_litellm": stack.enter_context(proxy(cfg, region, pathlib.Path(tmp))),
        }
        for name, px in proxies.items():  # warm up: imports, first-call paths, encoders
            asyncio.run(load(px.url, 100, args.concurrency))
        for r in range(rounds):
            for name, px in proxies.items():
                print(f"round {r + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                results[name].append(asyncio.run(load(px.url, n, args.concurrency)))
    med = {name: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for name, runs in results.items()}
    from importlib.metadata import version

    print(f"`python benches/bench_proxy.py --rounds {rounds} --requests {n} --concurrency {args.concurrency}`: "
          f"Python {platform.python_version()}, LiteLLM {version('litellm')}, gunicorn {version('gunicorn')}, "
          f"3 workers, {os.cpu_count()} cores\n")
    print("| | requests/s | p50 ms | p99 ms | non-200 |")
    print("|---|---:|---:|---:|---:|")
    for name in ("litellm", "fast_litellm"):
        m = med[name]
        print(f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['failures']:.0f} |")
    print(f"\nfast_litellm / litellm: {med['fast_litellm']['rps'] / med['litellm']['rps']:.2f}× the requests per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
