"""litellm.token_counter with and without fast_litellm, and raw tiktoken, side by side.

    python benches/bench_tokens.py [--quick] [--rounds R] [--json FILE]

Each configuration runs in its own fresh interpreter (patching happens at import) and the
configurations take turns, round after round; the table gives the median of R rounds of the
per-call time (each round itself the median of several timed repeats):

- litellm: FAST_LITELLM_DISABLE=1, LiteLLM's own `litellm.token_counter`;
- fast_litellm: fast_litellm imported, the same call;
- tiktoken: `len(enc.encode(text, disallowed_special=()))` of Python's tiktoken over the same
  texts, with the encoding LiteLLM picks (what a caller who counts by hand pays; it skips
  LiteLLM's chunking and message rules, so its counts differ slightly).

Cases, for gpt-4o (o200k_base) and gpt-3.5-turbo (cl100k_base): one 23-token user message;
a 10-message chat of about 500 tokens with a tool; a 50,000-token document (`text=`); a
batch of 1,000 short texts (`fast_litellm.count_tokens_batch` against a loop of
`litellm.token_counter` and of tiktoken). Encoders are loaded before timing. Every
configuration checks that its counts equal LiteLLM's first.

RSS: the resident memory of each interpreter after all its counting (encoders loaded).

Memory per worker: a parent imports fast_litellm and forks 2 children (as a gunicorn master
with --preload does), each counts with both encodings; the children's private memory (USS,
smaps_rollup Private_*) and proportional share (PSS) are compared between encoders loaded
lazily in each child and loaded once in the parent before the fork (`tokens.preload()`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

CONFIGS = ("litellm", "fast_litellm", "tiktoken")
MODELS = ("gpt-4o", "gpt-3.5-turbo")
CASES = ("23-token message", "10-message chat + tool (~500 tokens)", "50,000-token document", "batch of 1,000 short texts")

PARAGRAPH = (
    "The quarterly report shows revenue growth of 12% across all regions, driven by strong "
    "demand in the enterprise segment. def handler(event, context):\n    return {'status': 200, "
    "'body': json.dumps(event)}\n"
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def inputs() -> Dict[str, Any]:
    message = [{"role": "user", "content": "What is the weather like in Paris today, and should I bring an umbrella?"}]
    chat = [{"role": "system", "content": "You are a helpful assistant that answers briefly and cites sources."}]
    for i in range(9):
        role = "user" if i % 2 == 0 else "assistant"
        chat.append({"role": role, "content": f"Turn {i}: " + PARAGRAPH[: 150 + 7 * i]})
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather for a city",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}]
    document = PARAGRAPH * 1220
    texts = [f"Short text number {i}: " + PARAGRAPH[: 40 + i % 80] for i in range(1000)]
    return {"message": message, "chat": chat, "tools": tools, "document": document, "texts": texts}


def child(config: str, repeats: int) -> Dict[str, Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if config == "fast_litellm":
        import fast_litellm

        batch: Optional[Callable[..., List[int]]] = fast_litellm.count_tokens_batch
    else:
        batch = None
    import litellm
    from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding_name

    data = inputs()
    results: Dict[str, Any] = {}
    for model in MODELS:
        if config == "tiktoken":
            # LiteLLM's bundled BPE files (its default_encoding module points tiktoken there);
            # tiktoken would download them otherwise.
            import litellm.litellm_core_utils.default_encoding  # noqa: F401
            import tiktoken

            enc = tiktoken.get_encoding(openai_tokenizer_encoding_name(model))

            def count(text: str) -> int:
                return len(enc.encode(text, disallowed_special=()))

            def concat(msgs: List[Dict[str, str]]) -> List[str]:
                return [m["content"] for m in msgs]

            calls: Dict[str, Callable[[], Any]] = {
                CASES[0]: lambda: [count(t) for t in concat(data["message"])],
                CASES[1]: lambda: [count(t) for t in concat(data["chat"])] + [count(json.dumps(data["tools"]))],
                CASES[2]: lambda: count(data["document"]),
                CASES[3]: lambda: [count(t) for t in data["texts"]],
            }
        else:
            tc = litellm.token_counter

            def loop(m: str = model) -> List[int]:
                return [tc(model=m, text=t) for t in data["texts"]]

            calls = {
                CASES[0]: lambda m=model: tc(model=m, messages=data["message"]),
                CASES[1]: lambda m=model: tc(model=m, messages=data["chat"], tools=data["tools"]),
                CASES[2]: lambda m=model: tc(model=m, text=data["document"]),
                CASES[3]: (lambda m=model: batch(m, data["texts"])) if batch else loop,
            }
        for case, call in calls.items():
            result = call()  # loads the encoder; the value is checked by the parent
            number = {CASES[2]: 3, CASES[3]: 3}.get(case, 2000)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(number):
                    call()
                times.append((time.perf_counter() - start) / number)
            results[f"{model}|{case}"] = {"us": statistics.median(times) * 1e6, "value": result}
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {"results": results, "rss_kib": rss}


def smaps_kib() -> Dict[str, int]:
    fields: Dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return {"pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def fork_memory(preload: bool) -> Dict[str, float]:
    """The mean USS and PSS (KiB) of 2 forked children that counted with both encodings."""
    import litellm
    from fast_litellm import tokens

    if preload:
        tokens.preload()
    readers, pids = [], []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for model in MODELS:
                litellm.token_counter(model=model, messages=[{"role": "user", "content": PARAGRAPH}])
            os.write(w, json.dumps(smaps_kib()).encode())
            os._exit(0)
        os.close(w)
        readers.append(r)
        pids.append(pid)
    got = []
    for r, pid in zip(readers, pids):
        got.append(json.loads(os.read(r, 4096).decode()))
        os.waitpid(pid, 0)
    return {k: statistics.mean(g[k] for g in got) for k in ("uss", "pss")}


def run_child(config: str, repeats: int) -> Dict[str, Any]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", FAST_LITELLM_SHM="off")
    if config == "litellm":
        env["FAST_LITELLM_DISABLE"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", config, "--repeats", str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def versions() -> Dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "litellm": version("litellm"),
        "tiktoken": version("tiktoken"),
        "fast_litellm": version("fast_litellm"),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"),
        "cores": str(os.cpu_count()),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and repeats (a smoke run)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--child", choices=CONFIGS + ("fork-lazy", "fork-preload"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child in ("fork-lazy", "fork-preload"):
        print(json.dumps(fork_memory(args.child == "fork-preload")))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    rounds, repeats = (1, 2) if args.quick else (args.rounds, args.repeats)
    runs: Dict[str, List[Dict[str, Any]]] = {c: [] for c in CONFIGS}
    forks: Dict[str, List[Dict[str, float]]] = {"fork-lazy": [], "fork-preload": []}
    for r in range(rounds):
        for config in CONFIGS:
            log(f"round {r + 1}/{rounds}: {config}")
            runs[config].append(run_child(config, repeats))
        for kind in forks:
            forks[kind].append(run_child(kind, repeats))
    for key, want in runs["litellm"][0]["results"].items():
        got = runs["fast_litellm"][0]["results"][key]["value"]
        if got != want["value"]:
            raise SystemExit(f"{key}: fast_litellm counted {got}, LiteLLM {want['value']}: not publishing")
    median = {c: {k: statistics.median(run["results"][k]["us"] for run in runs[c]) for k in runs[c][0]["results"]}
              for c in CONFIGS}
    v = versions()
    print(f"`python benches/bench_tokens.py --rounds {rounds} --repeats {repeats}`: Python {v['python']}, "
          f"LiteLLM {v['litellm']}, tiktoken {v['tiktoken']}, fast_litellm {v['fast_litellm']}, {v['cpu']} ({v['cores']} cores)\n")
    print("| model | case | litellm µs | fast_litellm µs | speed-up | tiktoken µs | fast_litellm vs tiktoken |")
    print("|---|---|---:|---:|---|---:|---|")
    for key in median["litellm"]:
        model, case = key.split("|")
        lt, fl, tk = median["litellm"][key], median["fast_litellm"][key], median["tiktoken"][key]
        print(f"| {model} | {case} | {lt:,.1f} | {fl:,.1f} | **{lt / fl:.2f}×** | {tk:,.1f} | {tk / fl:.2f}× |")
    rss = {c: statistics.median(run["rss_kib"] for run in runs[c]) / 1024 for c in CONFIGS}
    print(f"\nRSS after counting (MiB, median): litellm {rss['litellm']:.0f}, fast_litellm {rss['fast_litellm']:.0f}, "
          f"tiktoken alone {rss['tiktoken']:.0f}")
    fork = {kind: {k: statistics.median(run[k] for run in runs_) / 1024 for k in ("uss", "pss")} for kind, runs_ in forks.items()}
    print("\nPer forked worker, after counting with both encodings (MiB, median):\n")
    print("| encoders loaded | worker USS (private) | worker PSS |")
    print("|---|---:|---:|")
    print(f"| lazily, in each worker (the default) | {fork['fork-lazy']['uss']:.1f} | {fork['fork-lazy']['pss']:.1f} |")
    print(f"| once in the parent (`tokens.preload()`) | {fork['fork-preload']['uss']:.1f} | {fork['fork-preload']['pss']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": v, "median_us": median, "rss_mib": rss, "fork_mib": fork}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
