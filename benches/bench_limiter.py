"""LiteLLM's proxy limiter with and without fast_litellm, called as the proxy calls it.

    python benches/bench_limiter.py [--quick] [--json FILE] [--calls N] [--rounds R] [--keys K]

Each configuration runs in its own fresh interpreter (patching happens at import), built the
way the proxy builds it: `_PROXY_MaxParallelRequestsHandler_v3(InternalUsageCache(DualCache(
default_in_memory_ttl=1)))`, with `dual_cache.redis_cache` set for the Redis rows, then timed
over N awaited `should_rate_limit(descriptors, skip_tpm_check=True)` calls (what
async_pre_call_hook does with TPM reservation on, the default), with 1 and with 4 descriptors
(api_key, user, team, end_user) each with an rpm limit that is never reached. The
configurations take turns, round after round; the table gives the median of R rounds.

- litellm in-memory: FAST_LITELLM_DISABLE=1, no Redis (LiteLLM's per-worker counters);
- litellm + redis: FAST_LITELLM_DISABLE=1, a redis-server on 127.0.0.1 started and stopped
  here (Debian's redis-server; scripts/ensure-redis.sh installs it);
- fast_litellm: the region at /dev/shm (host-wide counters, no Redis);
- fast_litellm + redis: fast_litellm imported with Redis configured: it leaves LiteLLM's Redis
  path alone (the cost of declining is what this row shows).

Memory: K keys (default 100,000) each limited once at rpm 1. LiteLLM's in-memory cache holds
200 entries by default, so for that side the cache is raised to hold them all (what it would
need to keep every limit); the growth is measured by RSS (anonymous memory). The region is
shared memory whose pages are all reserved and touched when it is created, so its cost is its
size, reported per key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    "litellm in-memory": {"disable": True, "redis": False},
    "litellm + redis": {"disable": True, "redis": True},
    "fast_litellm": {"disable": False, "redis": False},
    "fast_litellm + redis": {"disable": False, "redis": True},
}
DESCRIPTOR_KINDS = ("api_key", "user", "team", "end_user")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# child side: one configuration in a fresh interpreter


def rss_kib() -> Dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssShmem"):
                out[name] = int(value.split()[0])
    return out


def build_limiter(redis_port: Optional[int], max_keys: Optional[int] = None) -> Any:
    from litellm.caching.dual_cache import DualCache
    from litellm.caching.in_memory_cache import InMemoryCache
    from litellm.proxy.hooks.parallel_request_limiter_v3 import _PROXY_MaxParallelRequestsHandler_v3
    from litellm.proxy.utils import InternalUsageCache

    if max_keys:
        dual = DualCache(in_memory_cache=InMemoryCache(max_size_in_memory=max_keys), default_in_memory_ttl=1)
    else:
        dual = DualCache(default_in_memory_ttl=1)
    if redis_port is not None:
        from litellm.caching.redis_cache import RedisCache

        dual.redis_cache = RedisCache(host="127.0.0.1", port=redis_port)
    return _PROXY_MaxParallelRequestsHandler_v3(internal_usage_cache=InternalUsageCache(dual_cache=dual))


def descriptors(n: int, key_suffix: str = "bench") -> List[Dict[str, Any]]:
    return [
        {
            "key": kind,
            "value": f"{kind}-{key_suffix}",
            "rate_limit": {"requests_per_unit": 1 << 40, "tokens_per_unit": None, "max_parallel_requests": None},
        }
        for kind in DESCRIPTOR_KINDS[:n]
    ]


def child_speed(redis_port: Optional[int], calls: int) -> Dict[str, Any]:
    import asyncio

    import fast_litellm  # first, as the proxy must: patching happens at import

    limiter = build_limiter(redis_port)
    out: Dict[str, Any] = {}

    async def run(n: int) -> float:
        descs = descriptors(n, uuid.uuid4().hex[:8])
        for _ in range(50):  # warm up: first window, caches, Redis scripts
            await limiter.should_rate_limit(descriptors=descs, skip_tpm_check=True)
        start = time.perf_counter()
        for _ in range(calls):
            response = await limiter.should_rate_limit(descriptors=descs, skip_tpm_check=True)
        elapsed = time.perf_counter() - start
        assert response["overall_code"] == "OK", response
        return elapsed / calls * 1e6

    for n in (1, 4):
        out[f"us_per_call_{n}"] = asyncio.run(run(n))
    out["status"] = {k: {"state": v["state"], "calls": v["calls"], "declined": v["declined"]}
                     for k, v in fast_litellm.status().items() if k == "rate_limiter"}
    return out


def child_memory(keys: int) -> Dict[str, Any]:
    import asyncio
    import gc

    import fast_litellm  # first, as in child_speed

    patched = fast_litellm.status().get("rate_limiter", {}).get("state") == "on"
    limiter = build_limiter(None, max_keys=None if patched else keys * 4)

    async def run() -> None:
        for i in range(keys):
            desc = [{"key": "api_key", "value": f"key-{i}",
                     "rate_limit": {"requests_per_unit": 1, "tokens_per_unit": None, "max_parallel_requests": None}}]
            await limiter.should_rate_limit(descriptors=desc, skip_tpm_check=True)

    async def warm() -> None:  # everything but the keys: imports, first calls, event-loop objects
        desc = [{"key": "api_key", "value": "warm",
                 "rate_limit": {"requests_per_unit": 1, "tokens_per_unit": None, "max_parallel_requests": None}}]
        await limiter.should_rate_limit(descriptors=desc, skip_tpm_check=True)

    asyncio.run(warm())
    gc.collect()
    before = rss_kib()
    asyncio.run(run())
    gc.collect()
    after = rss_kib()
    region = fast_litellm.shm.region() if patched else None
    return {
        "patched": patched,
        "anon_growth_bytes_per_key": (after["RssAnon"] - before["RssAnon"]) * 1024 / keys,
        "region_bytes": region.size_bytes if region is not None else None,
        "region_used": region.stats()["used"] if region is not None else None,
    }


def child_main(args: argparse.Namespace) -> int:
    if args.child == "speed":
        result = child_speed(args.redis_port, args.calls)
    else:
        result = child_memory(args.keys)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# parent side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on 127.0.0.1, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: run scripts/ensure-redis.sh (Debian's redis-server package)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fl-bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit("redis-server did not answer PING within 10 s")
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()
        self.version = next((w.split("=")[1] for w in version if w.startswith("v=")), "?")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_child(kind: str, config: Dict[str, bool], region: str, extra: List[str],
              redis_port: Optional[int]) -> Dict[str, Any]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", FAST_LITELLM_SHM=region)
    env["FAST_LITELLM_DISABLE"] = "1" if config["disable"] else "0"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, *extra]
    if config.get("redis"):
        cmd += ["--redis-port", str(redis_port)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {kind} {config} failed:\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(lines[-1][len("RESULT "):]))


def versions() -> Dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "litellm": version("litellm"),
        "fast_litellm": version("fast_litellm"),
        "cpu": _cpu(),
        "cores": str(os.cpu_count()),
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer calls, rounds and keys (a smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--child", choices=("speed", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.quick:
        args.calls, args.rounds, args.keys = 500, 2, 10_000

    region = f"/dev/shm/fl-bench-{uuid.uuid4().hex[:8]}"
    redis = RedisServer()
    samples: Dict[str, Dict[int, List[float]]] = {name: {1: [], 4: []} for name in CONFIGS}
    try:
        for r in range(args.rounds):
            for name, config in CONFIGS.items():
                log(f"round {r + 1}/{args.rounds}: {name}")
                out = run_child("speed", config, region, ["--calls", str(args.calls)], redis.port)
                for n in (1, 4):
                    samples[name][n].append(out[f"us_per_call_{n}"])
                limiter_calls = out["status"].get("rate_limiter", {}).get("calls", 0)
                if name == "fast_litellm" and limiter_calls < args.calls:
                    raise SystemExit(f"fast_litellm row ran without the limiter patched: {out['status']}")
        log("memory: litellm in-memory")
        mem_litellm = run_child("memory", CONFIGS["litellm in-memory"], region, ["--keys", str(args.keys)], None)
        log("memory: fast_litellm")
        # Room for 2 entries (window + counter) per key within the sizing rule's 0.75 load.
        os.environ["FAST_LITELLM_SHM_CAPACITY"] = str(max(1 << 16, int(args.keys * 2 / 0.75)))
        mem_fast = run_child("memory", CONFIGS["fast_litellm"], region + "-mem", ["--keys", str(args.keys)], None)
    finally:
        redis.stop()
        for path in (region, region + "-mem"):
            if os.path.exists(path):
                os.unlink(path)

    med = {name: {n: statistics.median(v) for n, v in per.items()} for name, per in samples.items()}
    meta = versions()
    meta["redis"] = redis.version
    command = "python benches/bench_limiter.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [
        f"## LiteLLM proxy limiter (`should_rate_limit`), {args.calls} calls × median of {args.rounds} rounds",
        "",
        f"`{command.strip()}` — Python {meta['python']}, LiteLLM {meta['litellm']}, fast_litellm "
        f"{meta['fast_litellm']}, redis-server {meta['redis']}, {meta['cpu']} ({meta['cores']} cores)",
        "",
        "| descriptors | litellm in-memory µs | fast_litellm µs | speed-up | litellm + redis µs | speed-up vs redis "
        "| fast_litellm + redis µs (declines) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in (1, 4):
        mem, red = med["litellm in-memory"][n], med["litellm + redis"][n]
        fast, fred = med["fast_litellm"][n], med["fast_litellm + redis"][n]
        lines.append(
            f"| {n} | {mem:.1f} | {fast:.1f} | **{mem / fast:.2f}×** | {red:.1f} | **{red / fast:.2f}×** "
            f"| {fred:.1f} | {red / fred:.2f}× |"
        )
    entries_per_key = mem_fast["region_used"] / args.keys
    lines += [
        "",
        f"Memory per limited key, {args.keys:,} keys each limited once (RSS growth; "
        "LiteLLM's cache raised from 200 entries so that it keeps them all):",
        "",
        "| | bytes per key |",
        "|---|---|",
        f"| LiteLLM in-memory cache, process RSS (anonymous) growth | {mem_litellm['anon_growth_bytes_per_key']:.0f} |",
        f"| fast_litellm, process RSS (anonymous) growth | {mem_fast['anon_growth_bytes_per_key']:.0f} |",
        f"| fast_litellm, the whole region ({mem_fast['region_bytes'] / 2**20:.1f} MiB, touched at creation) / keys | "
        f"{mem_fast['region_bytes'] / args.keys:.0f} |",
        f"| fast_litellm, region: {entries_per_key:.1f} entries of 64 B per key, at the sizing rule's 0.75 load "
        f"| {entries_per_key * 64 / 0.75:.0f} |",
        "",
        "LiteLLM's process memory is per worker; the region is one per host, whatever the worker count.",
    ]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "samples": samples, "median": med, "memory": {"litellm": mem_litellm,
                       "fast_litellm": mem_fast}}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
