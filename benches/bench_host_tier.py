"""LiteLLM's v3 limiter with Redis, alone and through fast_litellm's host tier, over 2 and 3
"hosts" sharing one redis-server.

    python benches/bench_host_tier.py [--quick] [--calls N] [--rounds R] [--json FILE]
        [--host-counts 2,3] [--key-counts 1,100,10000] [--redis-rtt-ms MS] [--pace-ms MS]

A host is a group of W = 2 worker processes, each running N awaited
`should_rate_limit([api_key descriptor], skip_tpm_check=True)` calls (the proxy's pre-call rpm
check) on one of K keys in turn, with an rpm limit never reached; with the host tier, each host
has its own region (and a third configuration turns its refill ahead off,
FAST_LITELLM_REDIS_REFILL_AHEAD=off). Every worker of a run starts at once (a start barrier). Reported per
(configuration, hosts, keys), the median over R rounds, the configurations taking turns:

- checks/s: all checks of the run / the slowest worker's time;
- p50 / p99: the limiter's added latency per check, over every check of the run;
- Redis commands per check (INFO commandstats, scripts' inner commands included);
- Redis CPU ms per 1,000 checks (INFO cpu, user + sys).

--redis-rtt-ms puts a forwarder in front of Redis that holds each reply MS ms (tests/tcp_proxy.py),
as a Redis on another machine would answer; commands and CPU are still read from Redis itself.
--pace-ms makes each worker wait between its checks (a key's requests as a proxy sees them,
rather than back to back); checks/s then counts the pauses too.

It measures the limiter's rpm check only: the post-call token increments and the proxy
around it are not in it (docs/host-tier.md has the proxy's counts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_limiter import RedisServer, build_limiter  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from tcp_proxy import TcpProxy  # noqa: E402

CONFIGS = ("litellm + redis", "host tier", "host tier, no refill ahead")
WORKERS = 2


def child(args: argparse.Namespace) -> int:
    import asyncio

    import fast_litellm  # noqa: F401 - first, as the proxy must: patching happens at import

    limiter = build_limiter(args.redis_port)
    tag = args.tag

    def desc(i: int) -> List[Dict[str, Any]]:
        return [{"key": "api_key", "value": f"{tag}-{i % args.keys}",
                 "rate_limit": {"requests_per_unit": 1 << 40, "tokens_per_unit": None, "max_parallel_requests": None}}]

    async def run() -> Dict[str, Any]:
        await limiter.should_rate_limit(descriptors=desc(args.offset), skip_tpm_check=True)  # scripts loaded
        while not os.path.exists(args.start):
            await asyncio.sleep(0.005)
        latencies = []
        began = time.perf_counter()
        for i in range(args.calls):
            t = time.perf_counter()
            response = await limiter.should_rate_limit(descriptors=desc(args.offset + i), skip_tpm_check=True)
            latencies.append(time.perf_counter() - t)
            assert response["overall_code"] == "OK", response
            if args.pace_ms:
                await asyncio.sleep(args.pace_ms / 1000)
        return {"elapsed": time.perf_counter() - began, "latencies_us": [x * 1e6 for x in latencies]}

    print("RESULT " + json.dumps(asyncio.run(run())), flush=True)
    return 0


def redis_counts(server: RedisServer) -> Dict[str, float]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    commands = sum(int(v["calls"]) for v in client.info("commandstats").values())
    cpu = client.info("cpu")
    return {"commands": commands, "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}


def one_run(server: RedisServer, config: str, hosts: int, keys: int, calls: int, port: int,
            pace_ms: float) -> Dict[str, float]:
    """One run; the workers reach Redis on `port` (the server's, or the forwarder's) and wait
    `pace_ms` between checks."""
    tag = uuid.uuid4().hex[:8]
    start = os.path.join(tempfile.gettempdir(), f"fl-bench-ht-{tag}.go")
    procs = []
    for h in range(hosts):
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", FAST_LITELLM_REDIS_HOSTS=str(hosts))
        if config.startswith("host tier"):
            env["FAST_LITELLM_SHM"] = f"/dev/shm/fl-bench-ht-{tag}-{h}"
            env["FAST_LITELLM_REDIS_REFILL_AHEAD"] = "off" if "no refill ahead" in config else "on"
        else:
            env.update(FAST_LITELLM_DISABLE="1", FAST_LITELLM_SHM="off")
        for w in range(WORKERS):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--child", "--redis-port", str(port), "--calls", str(calls),
                 "--keys", str(keys), "--tag", tag, "--offset", str((h * WORKERS + w) * 7919), "--start", start,
                 "--pace-ms", str(pace_ms)],
                stdout=subprocess.PIPE, text=True, env=env))
    time.sleep(0.5)
    # Wait for every worker to be imported and warmed up: the barrier file starts them together.
    time.sleep(6.0)
    before = redis_counts(server)
    open(start, "w").close()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"a worker failed:\n{out[-3000:]}")
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    after = redis_counts(server)
    os.unlink(start)
    for h in range(hosts):
        path = f"/dev/shm/fl-bench-ht-{tag}-{h}"
        if os.path.exists(path):
            os.unlink(path)
    total = calls * len(procs)
    latencies = sorted(x for r in results for x in r["latencies_us"])
    return {
        "checks_per_s": total / max(r["elapsed"] for r in results),
        "p50_us": latencies[len(latencies) // 2],
        "p99_us": latencies[int(len(latencies) * 0.99)],
        "redis_commands_per_check": (after["commands"] - before["commands"]) / total,
        "redis_cpu_ms_per_1000": (after["cpu_s"] - before["cpu_s"]) * 1e6 / total,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--start", default="")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--host-counts", default="2,3")
    parser.add_argument("--key-counts", default="1,100,10000")
    parser.add_argument("--redis-rtt-ms", type=float, default=0.0)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.calls, args.rounds = 300, 1
    from importlib.metadata import version

    server = RedisServer()
    forwarder = TcpProxy(server.port, args.redis_rtt_ms / 1000) if args.redis_rtt_ms else None
    port = forwarder.port if forwarder else server.port
    table: Dict[str, List[Dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for hosts in [int(h) for h in args.host_counts.split(",")]:
                for keys in [int(k) for k in args.key_counts.split(",")]:
                    for config in CONFIGS:  # taking turns, side by side in one run
                        row = f"{config} | {hosts} hosts | {keys} keys"
                        table.setdefault(row, []).append(one_run(server, config, hosts, keys, args.calls, port, args.pace_ms))
                        print(f"{row}: {table[row][-1]}", file=sys.stderr, flush=True)
    finally:
        if forwarder:
            forwarder.close()
        server.stop()
    medians = {row: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for row, runs in table.items()}
    print(f"LiteLLM {version('litellm')}, redis-py {version('redis')}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores, {args.calls} checks per worker, {WORKERS} workers per host, median of {args.rounds}"
          + (f", each Redis reply held {args.redis_rtt_ms:g} ms" if args.redis_rtt_ms else "")
          + (f", {args.pace_ms:g} ms between a worker's checks" if args.pace_ms else ""))
    print("| configuration | hosts | keys | checks/s | p50 µs | p99 µs | Redis commands / check | Redis CPU ms / 1,000 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row, m in medians.items():
        config, hosts_s, keys_s = (part.strip() for part in row.split("|"))
        print(f"| {config} | {hosts_s.split()[0]} | {int(keys_s.split()[0]):,} | {m['checks_per_s']:,.0f} | "
              f"{m['p50_us']:,.0f} | {m['p99_us']:,.0f} | {m['redis_commands_per_check']:.2f} | "
              f"{m['redis_cpu_ms_per_1000']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(medians, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
