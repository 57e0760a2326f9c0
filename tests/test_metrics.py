"""Metrics: per-component counts aggregated host-wide through the region, in Prometheus
text format, by a function and an ASGI app."""

import asyncio
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from subproc import run_python

# A child that declares a component "demo", patches a function that fails on odd inputs,
# and calls it `n` times: n calls, n//2 errors and fallbacks (the breaker stays closed).
CHILD = """
import types, sys
import fast_litellm
from fast_litellm import _acceleration as acc, metrics
mod = types.ModuleType("demo_target"); sys.modules["demo_target"] = mod
mod.work = lambda x: ("original", x)
def accelerated(x):
    if x % 2:
        raise ValueError("odd")
    return ("fast", x)
c = acc.component("demo", "FAST_LITELLM_RUST_DEMO", env={{"FAST_LITELLM_BREAKER_THRESHOLD": "1000"}})
c.patch(mod, "work", accelerated)
results = [mod.work(i) for i in range({n})]
emit({{"results": results, "text": metrics.render().decode()}})
"""


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("component"))] = s.value
    return out


@pytest.mark.timeout(120)
def test_any_process_sees_the_host_totals_of_every_process(region_path):
    env = {"FAST_LITELLM_SHM": region_path}
    first = run_python(CHILD.format(n=10), env)
    second = run_python(CHILD.format(n=7), env)
    assert first["results"][:2] == [["fast", 0], ["original", 1]], "an error falls back on the same call"
    own = samples(first["text"])
    assert own[("fast_litellm_calls_total", "demo")] == 10
    assert own[("fast_litellm_host_totals", None)] == 1
    host = samples(second["text"])
    # 10 + 7 calls; errors (= fallbacks) on the odd inputs: 5 + 3.
    assert host[("fast_litellm_calls_total", "demo")] == 17
    assert host[("fast_litellm_errors_total", "demo")] == 8
    assert host[("fast_litellm_fallbacks_total", "demo")] == 8
    assert host[("fast_litellm_breaker_trips_total", "demo")] == 0
    assert host[("fast_litellm_breaker_open", "demo")] == 0
    assert host[("fast_litellm_component_active", "demo")] == 1
    assert host[("fast_litellm_region_used_slots", None)] >= 3, "the table's stats come with them"


@pytest.mark.timeout(120)
def test_without_a_region_the_counts_are_the_process_own_and_say_so():
    out = run_python(CHILD.format(n=4), {"FAST_LITELLM_SHM": "off"})
    s = samples(out["text"])
    assert s[("fast_litellm_host_totals", None)] == 0
    assert s[("fast_litellm_calls_total", "demo")] == 4
    assert ("fast_litellm_region_capacity_slots", None) not in s


def test_the_asgi_app_serves_the_text_format():
    from fast_litellm import metrics

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(metrics.asgi_app({"type": "http", "method": "GET", "path": "/"}, receive, send))
    start, body = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-type"].startswith(b"text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(body["body"].decode())}
    assert "fast_litellm_host_totals" in names
    sent.clear()
    asyncio.run(metrics.asgi_app({"type": "http", "method": "POST", "path": "/"}, receive, send))
    assert sent[0]["status"] == 405


def test_register_adds_the_collector_to_a_registry_once():
    from prometheus_client import CollectorRegistry, generate_latest

    from fast_litellm import metrics

    registry = CollectorRegistry()
    metrics.register(registry)
    assert b"fast_litellm_host_totals" in generate_latest(registry)
