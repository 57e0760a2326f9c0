"""Whole proxies sharing one redis-server: LiteLLM alone and through fast_litellm's host tier,
with 2 and 3 hosts, side by side.

    python benches/bench_host_tier_proxy.py [--quick] [--rounds R] [--requests N] [--hosts 2,3]
                                            [--key-counts 1,100,10000] [--limit rpm1000000]

A host is one real proxy (deploy/, gunicorn --preload, W = 2 workers) with its own region,
configured with Redis as LiteLLM's docs say (REDIS_HOST / REDIS_PORT). For each host count,
two fleets start, one with FAST_LITELLM_DISABLE=1 (LiteLLM's own Redis path) and one with
fast_litellm, and take turns, round after round. A run sends N chat completions, 32 at once
(new connection per request), request i to host i % H with key i % K of a fresh set of K keys
at an rpm limit never reached, for K = 1 (a hot key), 100 and 10,000 (with N < 10,000 every
request is its key's first in the window). `--limit par64` gives each key max_parallel_requests
64 instead (deploy/demo_auth.py's key suffixes), never reached at 32 at once: LiteLLM's gauge
acquire and release against the host tier's pool. Reported per (hosts, keys, fleet), the median over R
rounds: requests/s, p50 and p99 latency (end to end, the mock upstream answers at once), Redis
commands per request (INFO commandstats, scripts' inner commands included; the largest ones
named, and the router's cooldown MGET on its own) and Redis CPU ms per 1,000 requests (INFO
cpu, user + sys). The load generator and Redis run on the same 2 cores as the proxies: read
the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from bench_limiter import RedisServer  # noqa: E402
from bench_proxy import load  # noqa: E402
from proxy import Upstream, config, proxy  # noqa: E402  (the tests' harness)

FLEETS = ("litellm + redis", "host tier")
KEY_COUNTS = (1, 100, 10_000)


def redis_state(server: RedisServer) -> Dict[str, Any]:
    import redis

    client = redis.Redis(port=server.port)
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    return {"calls": {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()},
            "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}


def one_run(server: RedisServer, urls: List[str], keys: int, n: int, limit: str = "rpm1000000") -> Dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    before = redis_state(server)
    out: Dict[str, Any] = dict(asyncio.run(load(urls[0], n, 32, [f"sk-htp{tag}-{k}-{limit}" for k in range(keys)],
                                                urls)))
    after = redis_state(server)
    calls = collections.Counter({c: after["calls"][c] - before["calls"].get(c, 0) for c in after["calls"]})
    out["commands"] = sum(calls.values()) / n
    out["top"] = {c: v / n for c, v in calls.most_common(3) if v}
    out["mget"] = calls["mget"] / n  # the router's cooldown read (item 5 of issue 12)
    out["redis_cpu_ms_per_1000"] = (after["cpu_s"] - before["cpu_s"]) * 1e6 / n
    return out


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--hosts", default="2,3")
    p.add_argument("--key-counts", default=",".join(map(str, KEY_COUNTS)))
    p.add_argument("--limit", default="rpm1000000", help="each key's limit, as a demo_auth key suffix")
    args = p.parse_args(argv)
    rounds, n = (1, 300) if args.quick else (args.rounds, args.requests)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    results: Dict[tuple, List[Dict[str, Any]]] = collections.defaultdict(list)
    server = RedisServer()
    try:
        for hosts in [int(h) for h in args.hosts.split(",")]:
            with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
                upstream = Upstream()
                stack.callback(upstream.close)
                models = [{"name": "gpt-4o", "upstream": "mock-gpt-4o"}]
                cfg = config(os.path.join(tmp, "config.yaml"), upstream, models)
                env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port),
                       "FAST_LITELLM_REDIS_HOSTS": str(hosts)}
                fleets: Dict[str, List[str]] = {}
                for fleet in FLEETS:
                    extra = {"FAST_LITELLM_DISABLE": "1"} if fleet == "litellm + redis" else {}
                    fleets[fleet] = []
                    for _ in range(hosts):
                        region = f"/dev/shm/fl-bench-htp-{uuid.uuid4().hex[:8]}"
                        stack.callback(lambda r=region: os.path.exists(r) and os.unlink(r))
                        px = stack.enter_context(proxy(cfg, region, pathlib.Path(tmp), workers=2, env={**env, **extra}))
                        fleets[fleet].append(px.url)
                for urls in fleets.values():  # warm up: imports, first-call paths, connections to Redis
                    one_run(server, urls, 100, 200)
                for r in range(rounds):
                    for keys in [int(k) for k in args.key_counts.split(",")]:
                        for fleet, urls in fleets.items():
                            print(f"{hosts} hosts, round {r + 1}/{rounds}, {keys} keys: {fleet}", file=sys.stderr,
                                  flush=True)
                            results[(hosts, keys, fleet)].append(one_run(server, urls, keys, n, args.limit))
    finally:
        server.stop()

    from importlib.metadata import version

    print(f"`python benches/bench_host_tier_proxy.py --rounds {rounds} --requests {n} --hosts {args.hosts} "
          f"--key-counts {args.key_counts} --limit {args.limit}`: "
          f"Python {platform.python_version()}, LiteLLM {version('litellm')}, redis-server {server.version}, "
          f"{os.cpu_count()} cores, 2 workers per host, median of {rounds}\n")
    print("| hosts | keys | fleet | requests/s | p50 ms | p99 ms | Redis commands / request | largest | "
          "MGET / request | Redis CPU ms / 1,000 | non-200 |")
    print("|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for (hosts, keys, fleet), runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in ("rps", "p50_ms", "p99_ms", "commands",
                                                                     "mget", "redis_cpu_ms_per_1000", "failures")}
        top = ", ".join(f"{c} {v:.2f}" for c, v in runs[len(runs) // 2]["top"].items())
        print(f"| {hosts} | {keys:,} | {fleet} | {med['rps']:.0f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
              f"{med['commands']:.2f} | {top} | {med['mget']:.3f} | {med['redis_cpu_ms_per_1000']:.0f} | "
              f"{med['failures']:.0f} |")
    print()
    for hosts, keys in dict.fromkeys((h, k) for h, k, _ in results):
        base, tier = (statistics.median(run["rps"] for run in results[(hosts, keys, f)]) for f in FLEETS)
        print(f"- {hosts} hosts, {keys:,} keys: host tier / LiteLLM alone {tier / base:.2f}× the requests per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
