"""Parity through the whole proxy: LiteLLM alone (FAST_LITELLM_DISABLE=1) and accelerated, two
real gunicorn proxies (deploy/) on one config and one mock upstream, sent the same recorded
requests in the same order. Status codes, response headers and bodies (every stream chunk),
and each success or failure callback's `standard_logging_object` and `response_cost` must be
equal apart from ids, timestamps and durations."""

import json
import os
import re
import uuid

import httpx
import pytest

from proxy import Upstream, config, proxy

pytestmark = pytest.mark.timeout(600)

MODELS = [
    {"name": "gpt-4o-mini", "upstream": "gpt-4o-mini"},  # in the cost map
    {"name": "parity-unknown", "upstream": "mock-parity-unknown"},  # no cost entry
    {"name": "parity-fail", "upstream": "mock-fail"},  # the mock answers 500
    {"name": "parity-fallback", "upstream": "mock-fail-then-fallback"},  # 500, then the router's fallback
]
ROUTER = {"num_retries": 0, "fallbacks": [{"parity-fallback": ["gpt-4o-mini"]}]}
CALLBACKS = {"callbacks": ["parity_callback.handler"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def _request(tag, model="gpt-4o-mini", key="sk-parity", **body):
    return {"tag": tag, "key": key, "body": {"model": model, "messages": [{"role": "user", "content": f"Hello {tag}"}],
                                             "metadata": {"parity": tag}, **body}}


RECORDED = [
    _request("plain"),
    _request("stream", stream=True, stream_options={"include_usage": True}),
    _request("tools", tools=TOOLS, tool_choice="auto", temperature=0.2, max_tokens=50),
    _request("unknown-cost", model="parity-unknown"),
    _request("not-configured", model="no-such-model"),
    _request("upstream-error", model="parity-fail"),
    _request("fallback", model="parity-fallback"),
    _request("rpm1-first", key="sk-parity-once-rpm1"),
    _request("rpm1-second", key="sk-parity-once-rpm1"),
    _request("stream-error", model="parity-fail", stream=True),
]

#: What differs between two identical requests: ids, clocks, durations, the port a proxy
#: listens on. Everything else is compared.
VOLATILE_KEYS = {
    "id", "created", "litellm_call_id", "trace_id", "startTime", "endTime", "completionStartTime", "response_time",
    "litellm_overhead_time_ms", "date", "llm_provider-date", "x-litellm-call-id", "x-litellm-response-duration-ms",
    "x-litellm-overhead-duration-ms", "x-litellm-callback-duration-ms", "host",
}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CHATCMPL = re.compile(r"chatcmpl-[0-9A-Za-z]+")
_CLOCK = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?")


def normalized(value):
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE_KEYS else normalized(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return _CLOCK.sub("<clock>", _CHATCMPL.sub("chatcmpl-<id>", _UUID.sub("<uuid>", value)))
    return value


def _body(response):
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[6:]) if line[6:].strip() != "[DONE]" else "[DONE]"
                for line in text.splitlines() if line.startswith("data: ")]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _replay(p):
    answers = {}
    with httpx.Client(timeout=60) as client:
        for r in RECORDED:
            response = client.post(p.url + "/v1/chat/completions", json=r["body"],
                                   headers={"Authorization": f"Bearer {r['key']}"})
            answers[r["tag"]] = {"status": response.status_code, "headers": dict(response.headers),
                                 "body": _body(response)}
    return answers


def _events(path):
    by_tag = {}
    with open(path) as f:
        for line in f:
            event = json.loads(line)
            by_tag.setdefault(event["tag"], []).append(event)
    return by_tag


def test_responses_headers_callbacks_and_costs_are_litellms_own(tmp_path):
    upstream = Upstream()
    try:
        cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS, router_settings=ROUTER, litellm_settings=CALLBACKS)
        runs = {}
        for name, env in (("litellm", {"FAST_LITELLM_DISABLE": "1"}), ("fast_litellm", {})):
            events = str(tmp_path / f"events-{name}.jsonl")
            region = f"/dev/shm/fl-parity-{uuid.uuid4().hex[:8]}"
            try:
                with proxy(cfg, region, tmp_path, workers=1, env={**env, "FL_PARITY_LOG": events}) as p:
                    answers = _replay(p)
                # After the proxy stopped: every callback has run.
                runs[name] = {"answers": answers, "events": _events(events)}
            finally:
                if os.path.exists(region):
                    os.unlink(region)
    finally:
        upstream.close()
    stock, accelerated = runs["litellm"], runs["fast_litellm"]
    # The recorded set exercises what it says it does, under LiteLLM alone.
    status = {tag: a["status"] for tag, a in stock["answers"].items()}
    assert status == {"plain": 200, "stream": 200, "tools": 200, "unknown-cost": 200, "not-configured": 400,
                      "upstream-error": 500, "fallback": 200, "rpm1-first": 200, "rpm1-second": 429,
                      "stream-error": 500}, status
    assert stock["answers"]["fallback"]["headers"].get("x-litellm-attempted-fallbacks") == "1"
    assert stock["events"]["plain"][0]["response_cost"] > 0, "gpt-4o-mini has a cost entry"
    assert {e["event"] for e in stock["events"]["upstream-error"]} == {"failure"}
    differing = [tag for tag in status if normalized(accelerated["answers"][tag]) != normalized(stock["answers"][tag])]
    assert not differing, _differences(accelerated["answers"], stock["answers"], differing)
    assert set(accelerated["events"]) == set(stock["events"])
    differing = [tag for tag in stock["events"] if normalized(accelerated["events"][tag]) != normalized(stock["events"][tag])]
    assert not differing, _differences(accelerated["events"], stock["events"], differing)


def _differences(accelerated, stock, tags):
    """Each differing leaf, as path: (accelerated, LiteLLM alone)."""
    out = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            out.append(f"{path}: {a!r} != {b!r}")

    for tag in tags:
        walk(normalized(accelerated[tag]), normalized(stock[tag]), tag)
    return "\n".join(out)
