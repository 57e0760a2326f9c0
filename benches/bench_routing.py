"""Whether a Rust deployment pick could speed up LiteLLM's routing: LiteLLM's whole selection
against the part of it a Rust pick would replace.

    python benches/bench_routing.py [--quick] [--json FILE] [--calls N] [--rounds R]

A real `litellm.Router` per configuration (strategy x deployments), its deployments with rpm
and tpm set (simple-shuffle uses them as weights; usage-based-routing-v2 as limits, with
usage counters filled in the router's cache), then per round:

- selection: `await router.async_get_available_deployment(model, request_kwargs={},
  messages=[one short user message])`, the call the proxy makes for each request;
- the pick, called alone with the same arguments the router passes:
  simple-shuffle: `simple_shuffle(...)` (router_strategy/simple_shuffle.py), all of its
  work: weights from the deployments, normalising, `random.choices`;
  usage-based-routing-v2: `_return_potential_deployments(...)` + `random.choice` (the lowest
  usage among the deployments under their limits), and apart from it the rest of
  `_common_checks_available_deployment`, whose main cost is counting the input tokens.

A Rust pick saves at most the pick's time (it would still be called from Python, with the
weights gathered from the deployment dicts). The configurations take turns, round after round;
the table gives the median of R rounds. cProfile over one more round cross-checks the shares.
For scale, a whole `Router.acompletion` per strategy (10 deployments) against a local
OpenAI-compatible server in another process that answers at once. Pure LiteLLM: fast_litellm
is not imported.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "gpt-4o"
MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]
STRATEGIES = ("simple-shuffle", "usage-based-routing-v2")
SIZES = (1, 10)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_list(n: int) -> List[Dict[str, Any]]:
    return [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": f"http://127.0.0.1:9/d{i}/v1",  # never called
                "api_key": "sk-bench",
                "rpm": 100 * (i + 1),
                "tpm": 100_000 * (i + 1),
            },
            "model_info": {"id": f"deployment-{i}"},
        }
        for i in range(n)
    ]


class Config:
    """One router and the parts of its selection, ready to be timed."""

    def __init__(self, strategy: str, n: int) -> None:
        import litellm
        from litellm.router_strategy.simple_shuffle import simple_shuffle

        self.name = f"{strategy}, {n} deployment{'s' if n > 1 else ''}"
        self.strategy = strategy
        self.n = n
        self.router = litellm.Router(model_list=model_list(n), routing_strategy=strategy)
        self.healthy = [d for d in self.router.model_list if d["model_name"] == MODEL]
        router = self.router
        if strategy == "simple-shuffle":

            def pick() -> Any:
                return simple_shuffle(
                    resolve_model_alias=router.get_model_from_alias,
                    healthy_deployments=self.healthy,
                    model=MODEL,
                    request_kwargs={},
                )

            self.parts: Dict[str, Callable[[], Any]] = {"pick": pick}
        else:
            selector = router._get_routing_context(MODEL, {})[1]
            tpm_keys, rpm_keys = selector.usage_counter_keys(self.healthy)
            # Some usage this minute, under every limit: each deployment stays a candidate.
            for i, (tpm_key, rpm_key) in enumerate(zip(tpm_keys, rpm_keys)):
                router.cache.set_cache(tpm_key, 1_000 * (i + 1), ttl=3600)
                router.cache.set_cache(rpm_key, i + 1, ttl=3600)
            tpm_values = router.cache.batch_get_cache(tpm_keys)
            rpm_values = router.cache.batch_get_cache(rpm_keys)
            tpm_dict = {k.split(":")[0]: v for k, v in zip(tpm_keys, tpm_values)}
            rpm_dict = {k.split(":")[0]: v for k, v in zip(rpm_keys, rpm_values)}

            def lowest_usage_pick() -> Any:
                potential = selector._return_potential_deployments(
                    healthy_deployments=self.healthy, all_deployments=tpm_dict, input_tokens=20, rpm_dict=rpm_dict
                )
                return random.choice(potential)

            def common_checks() -> Any:
                return selector._common_checks_available_deployment(
                    model_group=MODEL,
                    healthy_deployments=self.healthy,
                    tpm_keys=tpm_keys,
                    tpm_values=tpm_values,
                    rpm_keys=rpm_keys,
                    rpm_values=rpm_values,
                    messages=MESSAGES,
                )

            self.parts = {"pick": lowest_usage_pick, "common checks (token count + pick)": common_checks}

    async def select(self) -> Any:
        return await self.router.async_get_available_deployment(model=MODEL, request_kwargs={}, messages=MESSAGES)


async def time_selection(config: Config, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await config.select()
    return (time.perf_counter() - start) / calls * 1e6


def time_part(part: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        part()
    return (time.perf_counter() - start) / calls * 1e6


PROFILED = ("async_get_available_deployment", "simple_shuffle", "_return_potential_deployments", "token_counter")


async def profile_shares(config: Config, calls: int) -> Dict[str, float]:
    """cProfile cumulative time of each PROFILED function per selection, in µs (inflated by
    the profiler: read the ratios, not the values)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await config.select()
    profiler.disable()
    totals: Dict[str, float] = {}
    for (_, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        if name in PROFILED:
            totals[name] = max(totals.get(name, 0.0), cumulative / calls * 1e6)
    return totals


def picks_agree(config: Config, draws: int) -> Tuple[Dict[str, int], Dict[str, int]]:
    """How often each deployment is chosen by the router and by the pick alone: the pick timed
    is the one the router makes."""
    by_router: Dict[str, int] = {}
    by_pick: Dict[str, int] = {}

    async def run() -> None:
        for _ in range(draws):
            chosen = (await config.select())["model_info"]["id"]
            by_router[chosen] = by_router.get(chosen, 0) + 1

    asyncio.run(run())
    for _ in range(draws):
        chosen = config.parts["pick"]()["model_info"]["id"]
        by_pick[chosen] = by_pick.get(chosen, 0) + 1
    return by_router, by_pick


UPSTREAM = """
import asyncio
from aiohttp import web
BODY = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}
async def answer(request):
    await request.read()
    return web.json_response(BODY)
async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def time_requests(calls: int) -> Dict[str, float]:
    """µs per serial Router.acompletion, per strategy, 10 deployments, against a local upstream."""
    import litellm

    server = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out: Dict[str, float] = {}
        for strategy in STRATEGIES:
            deployments = model_list(10)
            for d in deployments:
                d["litellm_params"]["api_base"] = f"http://127.0.0.1:{port}/v1"
            router = litellm.Router(model_list=deployments, routing_strategy=strategy)

            async def run(n: int) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    await router.acompletion(model=MODEL, messages=MESSAGES)
                return (time.perf_counter() - start) / n * 1e6

            asyncio.run(run(100))
            out[strategy] = statistics.median(asyncio.run(run(calls)) for _ in range(3))
        return out
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per round (default 2000, quick 300)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7, quick 3)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    calls = args.calls or (300 if args.quick else 2000)
    rounds = args.rounds or (3 if args.quick else 7)

    from importlib.metadata import version

    log(f"litellm {version('litellm')}, python {platform.python_version()}, {os.cpu_count()} cpus; "
        f"{rounds} rounds x {calls} calls")
    configs = [Config(strategy, n) for strategy in STRATEGIES for n in SIZES]

    async def warm() -> None:
        for config in configs:
            for _ in range(100):
                await config.select()

    asyncio.run(warm())
    samples: Dict[str, Dict[str, List[float]]] = {c.name: {} for c in configs}
    for r in range(rounds):
        for config in configs:
            samples[config.name].setdefault("selection", []).append(asyncio.run(time_selection(config, calls)))
            for part_name, part in config.parts.items():
                samples[config.name].setdefault(part_name, []).append(time_part(part, calls))
        log(f"round {r + 1}/{rounds} done")

    results = []
    for config in configs:
        medians = {name: statistics.median(values) for name, values in samples[config.name].items()}
        shares = asyncio.run(profile_shares(config, max(calls // 4, 50)))
        by_router, by_pick = picks_agree(config, 2000)
        results.append({"config": config.name, "median_us": medians, "cprofile_us": shares,
                        "choices_router": by_router, "choices_pick": by_pick})

    print("| configuration | selection (µs) | part a Rust pick could replace (µs) | share | cProfile share |")
    print("|---|---:|---:|---:|---:|")
    for result in results:
        selection = result["median_us"]["selection"]
        pick = result["median_us"]["pick"]
        profiled = result["cprofile_us"]
        pick_fn = "simple_shuffle" if "simple-shuffle" in result["config"] else "_return_potential_deployments"
        profiled_share = profiled.get(pick_fn, 0.0) / profiled["async_get_available_deployment"]
        print(f"| {result['config']} | {selection:.1f} | {pick:.1f} | {pick / selection:.1%} | {profiled_share:.1%} |")
    print()
    for result in results:
        extra = {k: v for k, v in result["median_us"].items() if k not in ("selection", "pick")}
        if extra:
            print(f"{result['config']}: " + ", ".join(f"{k} {v:.1f} µs" for k, v in extra.items())
                  + f" (token_counter in cProfile: {result['cprofile_us'].get('token_counter', 0.0):.1f} µs"
                  + f" of {result['cprofile_us']['async_get_available_deployment']:.1f})")
    print()
    print("Deployments chosen in 2000 draws, in deployment order (the pick timed is the router's):")
    for result in results:
        ids = sorted(set(result["choices_router"]) | set(result["choices_pick"]), key=lambda i: int(i.rsplit("-", 1)[1]))
        print(f"  {result['config']}: by the router {[result['choices_router'].get(i, 0) for i in ids]}, "
              f"by the pick alone {[result['choices_pick'].get(i, 0) for i in ids]}")
    requests = time_requests(max(calls // 4, 100))
    print()
    for strategy, us in requests.items():
        print(f"{strategy}, 10 deployments: a whole Router.acompletion {us:.0f} µs (local upstream, serial)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"calls": calls, "rounds": rounds, "results": results, "request_us": requests}, fh, indent=2)


if __name__ == "__main__":
    main()
