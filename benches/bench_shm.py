"""fast_litellm's shared-memory counters side by side with LiteLLM's in-memory counters.

    python benches/bench_shm.py [--quick] [--json FILE] [--n N] [--repeats R]

Every row runs both sides in this one process (the two-process row forks), alternating which
side goes first, and reports the median of R repeats of N operations. The table goes to
stdout, progress to stderr.

The LiteLLM side is InMemoryCache.increment_cache(key, 1, ttl=window): the sync
read-modify-write under a threading.Lock that LiteLLM's in-memory counters use. LiteLLM's v3
limiter (proxy/hooks/parallel_request_limiter_v3.py) without Redis does a little more per
counter: `in_memory_cache_sliding_window` awaits DualCache.async_get_cache twice and
async_set_cache once under an asyncio.Lock. increment_cache is therefore the cheaper, more
favourable stand-in for LiteLLM; supplementary row S1 measures the limiter's own path.
Neither LiteLLM call compares against a limit; fast_litellm's hit checks and increments.
"""

from __future__ import annotations

import os

# Before any import of litellm or fast_litellm: no network fetch of the model cost map, and no
# process-wide region (only the regions this benchmark creates exist).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["FAST_LITELLM_SHM"] = "off"

import argparse
import asyncio
import gc
import json
import platform
import secrets
import shlex
import statistics
import struct
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter_ns
from typing import Callable, Dict, List, Optional, Tuple

import fast_litellm
from fast_litellm import shm
from litellm.caching.in_memory_cache import InMemoryCache

LIMIT = 1 << 46  # never refuses: the count field is 48 bits, and no run comes close
WINDOW_S = 3600.0  # long enough that no window rolls over during a run (cost is the same as 60 s)
TTL = int(WINDOW_S)  # LiteLLM's counters get the same lifetime
N_KEYS = 10_000
MAX_SLOTS = 1 << 20

Run = Callable[[], None]


# ----------------------------------------------------------------------------------------------
# timing


def time_once(run: Run) -> int:
    gc.collect()
    gc.disable()
    try:
        t0 = perf_counter_ns()
        run()
        t1 = perf_counter_ns()
    finally:
        gc.enable()
    return t1 - t0


def summarize(samples_ns: List[int], ops: int) -> Dict[str, object]:
    med = statistics.median(samples_ns)
    return {
        "samples_ns": samples_ns,
        "ops_per_sample": ops,
        "median_ns": med,
        "ops_s": ops / (med / 1e9),
        "min_ops_s": ops / (max(samples_ns) / 1e9),
        "max_ops_s": ops / (min(samples_ns) / 1e9),
    }


def measure_pair(fast: Optional[Run], lit: Optional[Run], ops: int, repeats: int) -> Tuple[Optional[dict], Optional[dict]]:
    """Times each side `repeats` times, alternating which goes first."""
    fast_ns: List[int] = []
    lit_ns: List[int] = []
    for i in range(repeats):
        order = [(fast, fast_ns), (lit, lit_ns)]
        if i % 2:
            order.reverse()
        for run, out in order:
            if run is not None:
                out.append(time_once(run))
    return (summarize(fast_ns, ops) if fast else None, summarize(lit_ns, ops) if lit else None)


# ----------------------------------------------------------------------------------------------
# forked processes


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise RuntimeError("a benchmark child exited without reporting")
        data += chunk
    return data


def pin_cpus(n_procs: int) -> Optional[List[int]]:
    """One CPU per child when there are enough. Without pinning, the pipe wake-up of the start
    barrier tends to put both children on the parent's CPU until the load balancer moves one,
    which made the two-process rows swing by tens of percent."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:n_procs] if len(cpus) >= n_procs else None


def run_forked(prepare: Callable[[int], Callable[[], int]], n_procs: int) -> Tuple[int, List[Tuple[int, int]]]:
    """Forks n_procs children. Each calls prepare(i) (untimed warm-up, returns the timed
    callable), waits at a shared start barrier, runs it with gc off and reports
    (own elapsed ns, value). Returns the parent's wall clock from releasing the barrier to the
    last report, and the children's reports."""
    sys.stdout.flush()
    sys.stderr.flush()
    cpus = pin_cpus(n_procs)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    children: List[Tuple[int, int]] = []
    for i in range(n_procs):
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                os.close(res_r)
                for _, other in children:
                    os.close(other)
                if cpus:
                    os.sched_setaffinity(0, {cpus[i]})
                run = prepare(i)
                gc.collect()
                gc.disable()
                os.write(ready_w, b"r")
                if os.read(go_r, 1) != b"g":
                    raise RuntimeError("start barrier broken")
                t0 = perf_counter_ns()
                value = run()
                t1 = perf_counter_ns()
                os.write(res_w, struct.pack("<qq", t1 - t0, int(value)))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)  # no atexit handlers, no inherited buffers flushed twice
        os.close(res_w)
        children.append((pid, res_r))
    os.close(ready_w)
    os.close(go_r)
    try:
        _read_exact(ready_r, n_procs)  # every child warmed up and waiting
        t0 = perf_counter_ns()
        os.write(go_w, b"g" * n_procs)
        reports = [struct.unpack("<qq", _read_exact(res_r, 16)) for _, res_r in children]
        t1 = perf_counter_ns()
    finally:
        os.close(ready_r)
        os.close(go_w)
        failed = []
        for pid, res_r in children:
            os.close(res_r)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(pid)
    if failed:
        raise RuntimeError(f"benchmark children {failed} failed")
    return t1 - t0, [(int(e), int(v)) for e, v in reports]


# ----------------------------------------------------------------------------------------------
# the workloads (methods bound to locals/closure cells on both sides alike)


def fast_keys(r: shm.Region, keys: List[str]) -> Run:
    hit = r.hit
    limit, window = LIMIT, WINDOW_S

    def run() -> None:
        for k in keys:
            hit(k, limit, window, 1)

    return run


def lit_keys(c: InMemoryCache, keys: List[str]) -> Run:
    inc = c.increment_cache
    ttl = TTL

    def run() -> None:
        for k in keys:
            inc(k, 1, ttl=ttl)

    return run


def fast_hit_many(r: shm.Region, keys: List[str], n: int) -> Run:
    hit_many = r.hit_many
    limits = [(k, LIMIT, WINDOW_S, 1) for k in keys]

    def run() -> None:
        for _ in range(n):
            hit_many(limits)

    return run


def lit_four_increments(c: InMemoryCache, keys: List[str], n: int) -> Run:
    inc = c.increment_cache
    ttl = TTL
    k0, k1, k2, k3 = keys

    def run() -> None:
        for _ in range(n):
            inc(k0, 1, ttl=ttl)
            inc(k1, 1, ttl=ttl)
            inc(k2, 1, ttl=ttl)
            inc(k3, 1, ttl=ttl)

    return run


def fast_acquire_release(r: shm.Region, key: str, n: int) -> Run:
    acquire, release = r.acquire, r.release

    def run() -> None:
        for _ in range(n):
            if not acquire(key, MAX_SLOTS):
                raise AssertionError("acquire refused")
            release(key)

    return run


# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def fmt_ops(s: Optional[dict]) -> str:
    if s is None:
        return "n/a"
    spread = (s["max_ops_s"] - s["min_ops_s"]) / 2 / s["ops_s"] * 100
    return f"{s['ops_s']:,.0f} ±{spread:.0f}%"


def fmt_ratio(ratio: Optional[float], mark: str = "") -> str:
    if ratio is None:
        return "n/a"
    if ratio >= 1:
        return f"**{ratio:.2f}×** faster{mark}"
    return f"**{ratio:.2f}×** (LOSS: {1 / ratio:.2f}× slower){mark}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter repeats (smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    p.add_argument("--n", type=int, help="operations per repeat (default 200000, 20000 with --quick)")
    p.add_argument("--repeats", type=int, help="repeats per side (default 7, 3 with --quick)")
    args = p.parse_args(argv)
    n = args.n or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (3 if args.quick else 7)
    n_async = max(1, n // 4)  # LiteLLM's async limiter path is ~4x slower per call: keep the run short

    command = f"cd {shlex.quote(os.getcwd())} && " + shlex.join([sys.executable] + sys.argv)
    meta = {
        "command": command,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "litellm": pkg_version("litellm"),
        "fast_litellm": fast_litellm.__version__,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "n": n,
        "n_async": n_async,
        "repeats": repeats,
        "two_process_children_pinned_to_cpus": pin_cpus(2),
        "limit": LIMIT,
        "window_s": WINDOW_S,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    path = f"/dev/shm/fast_litellm-bench-{os.getpid()}-{secrets.token_hex(4)}"
    r = shm.Region(path, capacity=1 << 16)
    rows: List[dict] = []
    notes: List[str] = []
    t_start = time.monotonic()
    try:
        def row(rid: str, case: str, op: str, fast: Optional[dict], lit: Optional[dict], mark: str = "", **extra) -> None:
            ratio = fast["ops_s"] / lit["ops_s"] if fast and lit else None
            rows.append({"id": rid, "case": case, "op": op, "fast_litellm": fast, "litellm": lit,
                         "ratio_fast_over_litellm": ratio, "mark": mark, **extra})
            log(f"  row {rid} done ({time.monotonic() - t_start:.1f}s elapsed)")

        # 1. one process, one key ------------------------------------------------------------
        log(f"bench: n={n} repeats={repeats} region={path}")
        key1 = "{api_key:sk-bench-hot}:requests"
        c1 = InMemoryCache()
        fast_keys(r, [key1] * 10_000)()
        lit_keys(c1, [key1] * 10_000)()
        f, l = measure_pair(fast_keys(r, [key1] * n), lit_keys(c1, [key1] * n), n, repeats)
        expected = 10_000 + n * repeats
        got_fast = r.peek(key1, LIMIT, WINDOW_S).current
        got_lit = c1.get_cache(key1)
        if got_fast != expected or got_lit != expected:
            notes.append(f"row 1 count check: fast_litellm {got_fast}, LiteLLM {got_lit}, expected {expected}")
        row("1", "1 process, 1 key", "1 counter hit", f, l)

        # 2. one process, 10k keys cycling ----------------------------------------------------
        keys = [f"{{api_key:sk-{i:05d}}}:requests" for i in range(N_KEYS)]
        cycle = (keys * (n // N_KEYS + 1))[:n]
        # LiteLLM's default InMemoryCache holds 200 entries; give it room for every counter so
        # both sides keep all 10k (row S2 shows the default).
        c2 = InMemoryCache(max_size_in_memory=2 * N_KEYS)
        fast_keys(r, keys)()
        lit_keys(c2, keys)()
        f, l = measure_pair(fast_keys(r, cycle), lit_keys(c2, cycle), n, repeats)
        row("2", f"1 process, {N_KEYS:,} keys cycling", "1 counter hit", f, l,
            litellm_max_size_in_memory=c2.max_size_in_memory)

        # 3. two processes on one key ---------------------------------------------------------
        c3 = InMemoryCache()
        fast_wall: List[int] = []
        lit_wall: List[int] = []
        fast_child: List[List[Tuple[int, int]]] = []
        lit_child: List[List[Tuple[int, int]]] = []
        shared_counts: List[int] = []
        for i in range(repeats):
            key3 = f"{{api_key:sk-bench-contended}}:requests:{i}"

            def prep_fast(_: int, key3: str = key3) -> Callable[[], int]:
                hit = r.hit
                limit, window = LIMIT, WINDOW_S
                for _ in range(1000):  # first call registers the forked worker: keep it untimed
                    hit("{api_key:sk-bench-warm}:requests", limit, window, 1)

                def run() -> int:
                    d = None
                    for _ in range(n):
                        d = hit(key3, limit, window, 1)
                    return d.current

                return run

            def prep_lit(_: int, key3: str = key3) -> Callable[[], int]:
                inc = c3.increment_cache  # the child's own copy of the parent's dict (fork)
                ttl = TTL
                for _ in range(1000):
                    inc("{api_key:sk-bench-warm}:requests", 1, ttl=ttl)

                def run() -> int:
                    v = 0
                    for _ in range(n):
                        v = inc(key3, 1, ttl=ttl)
                    return v

                return run

            sides = [("fast", prep_fast), ("lit", prep_lit)]
            if i % 2:
                sides.reverse()
            for side, prep in sides:
                wall, reports = run_forked(prep, 2)
                if side == "fast":
                    fast_wall.append(wall)
                    fast_child.append(reports)
                    shared_counts.append(r.peek(key3, LIMIT, WINDOW_S).current)
                else:
                    lit_wall.append(wall)
                    lit_child.append(reports)
                    if c3.get_cache(key3) is not None:
                        notes.append("row 3: LiteLLM's parent cache saw a child's counter (unexpected)")
        f, l = summarize(fast_wall, 2 * n), summarize(lit_wall, 2 * n)
        lit_final = sorted({v for reps in lit_child for _, v in reps})
        row("3", "2 processes, 1 shared key (contended)", "1 counter hit, both processes, wall clock", f, l,
            mark=" †", fast_child_reports=fast_child, litellm_child_reports=lit_child,
            fast_shared_final_counts=shared_counts, litellm_per_process_final_counts=lit_final)
        ok = all(c == 2 * n for c in shared_counts)
        notes.append(
            f"† row 3 is not like for like. fast_litellm's two processes share one counter: it ended at "
            f"{'2N = ' + format(2 * n, ',') if ok else shared_counts} every repeat. LiteLLM's counters are NOT "
            f"shared across processes: each process counted in its own dict and ended at "
            f"{', '.join(format(v, ',') for v in lit_final)} (= N), so a limit would not be enforced across "
            f"them and its number is two independent, uncontended dicts."
        )

        # 4. hit_many with 4 limits vs 4 x increment_cache ------------------------------------
        keys4 = ["{api_key:sk-bench}:requests", "{user:u-bench}:requests",
                 "{team:t-bench}:requests", "{model:gpt-4o}:requests"]
        c4 = InMemoryCache()
        fast_hit_many(r, keys4, 10_000)()
        lit_four_increments(c4, keys4, 10_000)()
        f, l = measure_pair(fast_hit_many(r, keys4, n), lit_four_increments(c4, keys4, n), n, repeats)
        row("4", "4 limits per request", "1 request: hit_many(4) vs 4 × increment_cache", f, l)

        # 5. acquire + release ----------------------------------------------------------------
        key5 = "{deployment:gpt-4o}:parallel"
        fast_acquire_release(r, key5, 10_000)()
        f, _ = measure_pair(fast_acquire_release(r, key5, n), None, n, repeats)
        row("5", "slot acquire + release", "1 acquire + 1 release", f, None)
        if r.slots_in_use(key5) != 0:
            notes.append(f"row 5: {r.slots_in_use(key5)} slots still held after the run (unexpected)")

        # S1. LiteLLM v3 limiter's own in-memory window update (async) ------------------------
        try:
            from litellm.caching.dual_cache import DualCache
            from litellm.proxy.hooks.parallel_request_limiter_v3 import _PROXY_MaxParallelRequestsHandler_v3
            from litellm.proxy.utils import InternalUsageCache
        except Exception as e:  # noqa: BLE001 - the proxy extras may be missing; the row is optional
            notes.append(f"row S1 skipped: cannot import LiteLLM's v3 limiter ({type(e).__name__}: {e})")
        else:
            # What ProxyLogging builds for the limiter: DualCache(default_in_memory_ttl=1), no Redis.
            handler = _PROXY_MaxParallelRequestsHandler_v3(InternalUsageCache(DualCache(default_in_memory_ttl=1)))
            window_fn = handler.in_memory_cache_sliding_window
            loop = asyncio.new_event_loop()
            v3_keys = ["{api_key:sk-bench-v3}:window", "{api_key:sk-bench-v3}:requests"]
            key_s1 = "{api_key:sk-bench-s1}:requests"

            def async_run(make_coro: Callable[[], object]) -> Run:
                return lambda: loop.run_until_complete(make_coro())

            async def lit_v3(count: int) -> None:
                fn, ks, now, w = window_fn, v3_keys, int(time.time()), 60
                for _ in range(count):
                    await fn(ks, now, w)

            async def fast_in_loop(count: int) -> None:
                hit, limit, window = r.hit, LIMIT, WINDOW_S
                for _ in range(count):
                    hit(key_s1, limit, window, 1)

            try:
                async_run(lambda: lit_v3(5_000))()
                async_run(lambda: fast_in_loop(5_000))()
                f, l = measure_pair(async_run(lambda: fast_in_loop(n_async)), async_run(lambda: lit_v3(n_async)),
                                    n_async, repeats)
            finally:
                loop.close()
            row("S1", "1 key, inside an asyncio coroutine: r.hit vs the v3 limiter's in-memory path",
                "1 counter hit", f, l,
                litellm_call="await _PROXY_MaxParallelRequestsHandler_v3.in_memory_cache_sliding_window("
                             "[window_key, counter_key], now, 60)")

        # S2. 10k keys with LiteLLM's default cache size --------------------------------------
        c_default = InMemoryCache()
        lit_keys(c_default, keys)()
        f, l = measure_pair(fast_keys(r, cycle), lit_keys(c_default, cycle), n, repeats)
        fast_k0 = r.peek(keys[0], LIMIT, WINDOW_S).current
        lit_k0 = c_default.get_cache(keys[0])
        row("S2", f"1 process, {N_KEYS:,} keys, LiteLLM default InMemoryCache (max {c_default.max_size_in_memory} entries)",
            "1 counter hit", f, l, mark=" ‡", fast_key0_count=fast_k0, litellm_key0_count=lit_k0)
        notes.append(
            f"‡ row S2: LiteLLM's default InMemoryCache (what DualCache() builds for the limiter) keeps "
            f"{c_default.max_size_in_memory} entries, so cycling {N_KEYS:,} keys evicts counters on every call: "
            f"after the run, key 0's count is {fast_k0:,} in fast_litellm and {lit_k0!r} in LiteLLM. "
            f"Its speed here is that of a cache that loses counts."
        )
    finally:
        r.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    elapsed = time.monotonic() - t_start
    meta["elapsed_s"] = round(elapsed, 1)

    # ------------------------------------------------------------------------------------------
    out = []
    out.append("## fast_litellm shared-memory counters vs LiteLLM in-memory counters")
    out.append("")
    out.append(f"- command: `{command}`")
    out.append(f"- python {meta['python']} ({meta['python_implementation']}), litellm {meta['litellm']}, "
               f"fast_litellm {meta['fast_litellm']}")
    out.append(f"- machine: nproc {meta['nproc']}, CPU `{meta['cpu_model']}`, Linux {meta['kernel']}")
    pinned = meta["two_process_children_pinned_to_cpus"]
    out.append(f"- row 3: 2 forked children, {'pinned to CPUs ' + str(pinned) if pinned else 'not pinned (fewer than 2 CPUs)'}, "
               f"N calls each, wall clock from a shared start barrier to both done; ops/s = 2N / wall")
    out.append(f"- N = {n:,} operations per repeat ({n_async:,} in S1), median of {repeats} repeats "
               f"(± = half the min–max range), gc off in timed loops; took {elapsed:.0f} s")
    out.append("- fast_litellm: `Region.hit(key, limit=2**46, window_s=3600)` on a file-backed region in /dev/shm; "
               "LiteLLM: `InMemoryCache.increment_cache(key, 1, ttl=3600)` (sync), unless the row says otherwise")
    out.append("")
    out.append("| # | case | one op | fast_litellm ops/s | LiteLLM ops/s | fast_litellm / LiteLLM |")
    out.append("|---|---|---|---:|---:|---|")
    for rw in rows:
        out.append(f"| {rw['id']} | {rw['case']} | {rw['op']} | {fmt_ops(rw['fast_litellm'])} | "
                   f"{fmt_ops(rw['litellm'])} | {fmt_ratio(rw['ratio_fast_over_litellm'], rw['mark'])} |")
    out.append("")
    out.append("Notes:")
    out.append("- Ratio > 1 means fast_litellm is faster. LiteLLM's increment_cache only counts; fast_litellm's "
               "hit also checks the limit (and hit_many is all-or-nothing across its 4 limits).")
    out.append("- LiteLLM's v3 limiter without Redis does not call increment_cache: per counter it awaits 2 "
               "DualCache reads and 1 write under an asyncio.Lock (row S1). Rows 1–4 use the cheaper sync "
               "increment_cache, which favours LiteLLM.")
    out.append("- Row 5 has no LiteLLM equivalent (its parallel-request counts are per process too).")
    for note in notes:
        out.append(f"- {note}")
    print("\n".join(out), flush=True)

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows, "notes": notes}, fh, indent=2)
            fh.write("\n")
        log(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
