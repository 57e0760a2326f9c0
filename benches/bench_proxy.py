"""The whole LiteLLM proxy, LiteLLM alone and with fast_litellm, side by side.

    python benches/bench_proxy.py [--quick] [--rounds R] [--requests N] [--concurrency C]
        [--servers launcher,deploy] [--workers 1,2] [--cases plain,stream,plain-keepalive,stream-keepalive]
        [--variants litellm,fast_litellm,...]

Servers: `launcher` is LiteLLM's own CLI as users start it, `litellm --config c.yaml
--num_workers W` (uvicorn, spawned workers) against `fast-litellm` with the same arguments;
`deploy` is deploy/app.py under gunicorn --preload (deploy/gunicorn.conf.py) with and without
FAST_LITELLM_DISABLE=1. For each server and worker count, every variant is started once and
they take turns, round after round, with the mock upstream alone measured in the same turns.
A round sends N chat completions of `gpt-4o-mini` (a model with a cost entry), C at once, over
200 keys with an rpm limit never reached, each on a new connection or on C kept-alive ones,
streamed or not. Reported per case, medians over the rounds: requests/s, p50 and p99 latency
added over the mock alone, CPU ms per request (every process of the proxy), and after the
rounds PSS and USS per worker. The load generator and the mock run on the same cores as the
proxy: read the ratios.

Variants: litellm (FAST_LITELLM_DISABLE=1), fast_litellm, and for measuring one part
fast_litellm-no-gc-freeze (FAST_LITELLM_GC_FREEZE=off) and fast_litellm-gc-T (PYTHON_GC_THRESHOLD
gen0 = T, LiteLLM's own setting). Any variant ending in -h11 runs with httptools hidden, so
uvicorn parses HTTP with h11 as it does where only `litellm[proxy]` is installed (httptools
comes with `fast_litellm[proxy]`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from typing import Dict, Iterator, List, Optional

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from proxy import DEPLOY, MESSAGE, Proxy, Upstream, cli_proxy, config, proxy  # noqa: E402  (the tests' harness)

KEYS = [f"sk-bench{i}-rpm1000000" for i in range(200)]
MODEL = "gpt-4o-mini"
CASES = {"plain": (False, False), "stream": (True, False), "plain-keepalive": (False, True),
         "stream-keepalive": (True, True)}


HIDE_HTTPTOOLS = tempfile.mkdtemp(prefix="fl-bench-no-httptools-")
atexit.register(shutil.rmtree, HIDE_HTTPTOOLS, ignore_errors=True)
pathlib.Path(HIDE_HTTPTOOLS, "httptools.py").write_text(
    'raise ImportError("hidden by bench_proxy: uvicorn falls back to h11")\n')


def variant_env(name: str) -> Dict[str, str]:
    if name.endswith("-h11"):  # uvicorn's "auto" HTTP protocol imports httptools or falls back to h11
        return {**variant_env(name[: -len("-h11")]), "PYTHONPATH": os.pathsep.join([HIDE_HTTPTOOLS, DEPLOY])}
    if name == "litellm":
        return {"FAST_LITELLM_DISABLE": "1"}
    if name == "fast_litellm":
        return {}
    if name == "fast_litellm-no-gc-freeze":
        return {"FAST_LITELLM_GC_FREEZE": "off"}
    if name.startswith("fast_litellm-gc-"):
        return {"PYTHON_GC_THRESHOLD": f"{int(name.rsplit('-', 1)[1])},10,10"}
    raise SystemExit(f"unknown variant {name!r}")


async def load(url: str, n: int, concurrency: int, keys: List[str] = KEYS, urls: Optional[List[str]] = None,
               stream: bool = False, keepalive: bool = False, model: str = "gpt-4o",
               path: str = "/v1/chat/completions") -> Dict[str, float]:
    """N chat completions, C at once, request i with keys[i % len(keys)] to urls[i % len(urls)]
    (default: all to `url`); each on its own connection unless `keepalive`. A request's latency
    ends with the last byte of its body (the whole stream)."""
    urls = urls or [url]
    latencies: List[float] = []
    failures = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0)
    body = {"model": model, "messages": [MESSAGE], **({"stream": True} if stream else {})}
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def one(i: int) -> None:
            nonlocal failures
            async with sem:
                start = time.perf_counter()
                async with client.stream("POST", urls[i % len(urls)] + path, json=body,
                                         headers={"Authorization": f"Bearer {keys[i % len(keys)]}"}) as r:
                    await r.aread()
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


def tree(pid: int) -> Iterator[int]:
    """pid and all its descendants."""
    yield pid
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        yield from tree(int(child))


def cpu_s(pid: int) -> float:
    """CPU seconds of a process tree (what has exited is lost: proxies keep their workers)."""
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


def memory_mib(pid: int) -> Dict[str, float]:
    """PSS and USS (private clean + dirty) of one process, MiB."""
    rollup: Dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                rollup[parts[0].rstrip(":")] = int(parts[1])
    return {"pss": rollup["Pss"] / 1024, "uss": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024}


def workers(px: Proxy, server: str, n: int) -> List[int]:
    """The pids that serve: gunicorn's and uvicorn's workers; uvicorn with one worker serves in
    its only process."""
    if server == "launcher" and n == 1:
        return [px.process.pid]
    found = []
    for pid in tree(px.process.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
        if pid != px.process.pid and ("multiprocessing.spawn" in cmd or "gunicorn" in cmd):
            found.append(pid)
    return found


def start(stack: ExitStack, server: str, n_workers: int, variant: str, cfg: str, tmp: pathlib.Path) -> Proxy:
    env = variant_env(variant)
    if server == "deploy":
        region = f"/dev/shm/fl-bench-{uuid.uuid4().hex[:8]}"
        stack.callback(lambda: os.path.exists(region) and os.unlink(region))
        return stack.enter_context(proxy(cfg, region, tmp, workers=n_workers, env=env))
    # LiteLLM alone is `litellm`; every fast_litellm variant goes through the launcher.
    return stack.enter_context(cli_proxy(cfg, tmp, ["--num_workers", str(n_workers), "--timeout_worker_healthcheck", "60"],
                                         workers=n_workers, launcher=variant.startswith("fast_litellm"), env=env,
                                         ready_line="Application startup complete"))


def run_config(server: str, n_workers: int, args: argparse.Namespace, cases: List[str],
               rounds: int, n: int) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{case: {variant: medians}} for one server and worker count."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        upstream = Upstream()
        stack.callback(upstream.close)
        cfg = config(os.path.join(tmp, "config.yaml"), upstream, [{"name": MODEL, "upstream": MODEL}])
        proxies = {v: start(stack, server, n_workers, v, cfg, pathlib.Path(tmp)) for v in args.variants}
        for case in cases:
            stream, keepalive = CASES[case]
            shape = dict(stream=stream, keepalive=keepalive, model=MODEL)
            for px in proxies.values():  # warm up: imports, first-call paths, encoders, connections
                asyncio.run(load(px.url, 200, args.concurrency, **shape))
            runs: Dict[str, List[Dict[str, float]]] = {v: [] for v in ["mock", *proxies]}
            for r in range(rounds):
                print(f"{server} W={n_workers} {case}: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
                runs["mock"].append(asyncio.run(load(upstream.url.removesuffix("/v1"), n, args.concurrency, **shape)))
                for v, px in proxies.items():
                    cpu = cpu_s(px.process.pid)
                    result = asyncio.run(load(px.url, n, args.concurrency, **shape))
                    result["cpu_ms"] = (cpu_s(px.process.pid) - cpu) * 1e3 / n
                    runs[v].append(result)
            med = {v: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for v, rs in runs.items()}
            for v, px in proxies.items():
                mem = [memory_mib(pid) for pid in workers(px, server, n_workers)]
                med[v]["pss"] = statistics.mean(m["pss"] for m in mem) if mem else float("nan")
                med[v]["uss"] = statistics.mean(m["uss"] for m in mem) if mem else float("nan")
                med[v]["added_p50"] = med[v]["p50_ms"] - med["mock"]["p50_ms"]
                med[v]["added_p99"] = med[v]["p99_ms"] - med["mock"]["p99_ms"]
            out[case] = med
    return out


def report(server: str, n_workers: int, results: Dict[str, Dict[str, Dict[str, float]]], variants: List[str]) -> None:
    print(f"\n### {server}, W = {n_workers}\n")
    print("| case | variant | requests/s | × | added p50 ms | added p99 ms | p99 × | CPU ms/request | PSS MiB/worker | USS MiB/worker | non-200 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, med in results.items():
        base = med[variants[0]]
        for v in variants:
            m = med[v]
            print(f"| {case} | {v} | {m['rps']:.0f} | {m['rps'] / base['rps']:.2f} | {m['added_p50']:.1f} | "
                  f"{m['added_p99']:.1f} | {m['added_p99'] / base['added_p99']:.2f} | {m['cpu_ms']:.1f} | "
                  f"{m['pss']:.0f} | {m['uss']:.0f} | {m['failures']:.0f} |")
        print(f"| {case} | mock alone | {med['mock']['rps']:.0f} | | p50 {med['mock']['p50_ms']:.1f} | "
              f"p99 {med['mock']['p99_ms']:.1f} | | | | | |")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round of 200 requests, deploy W=2, plain only")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--servers", default="launcher,deploy")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--variants", default="litellm,fast_litellm")
    args = p.parse_args(argv)
    args.variants = args.variants.split(",")
    for v in args.variants:
        variant_env(v)
    servers, worker_counts, cases = args.servers.split(","), [int(w) for w in args.workers.split(",")], args.cases.split(",")
    rounds, n = args.rounds, args.requests
    if args.quick:
        rounds, n, servers, worker_counts, cases = 1, 200, ["deploy"], [2], ["plain"]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}: choose from {list(CASES)}")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    from importlib.metadata import version

    command = " ".join(["python benches/bench_proxy.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`: Python {platform.python_version()}, LiteLLM {version('litellm')}, "
          f"gunicorn {version('gunicorn')}, uvicorn {version('uvicorn')}, {os.cpu_count()} cores; "
          f"{rounds} rounds of {n} requests, {args.concurrency} at once")
    for server in servers:
        for w in worker_counts:
            report(server, w, run_config(server, w, args, cases, rounds, n), args.variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
