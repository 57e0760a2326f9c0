"""The host tier through real LiteLLM proxies: three "hosts" (gunicorn, 2 workers each, each
with its own region) sharing one real redis-server configured as LiteLLM's docs say
(REDIS_HOST / REDIS_PORT), and a mixed fleet with a stock LiteLLM proxy."""

import collections
import concurrent.futures
import uuid

import pytest

from proxy import Upstream, config, proxy, send

pytestmark = pytest.mark.timeout(900)

MODELS = [{"name": "gpt-4o", "upstream": "mock-gpt-4o"}]


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.close()


def _hosts(tmp_path, upstream, redis_server, stock=()):
    """Context managers for 3 proxies; those whose index is in `stock` run LiteLLM alone."""
    cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS)
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "FAST_LITELLM_REDIS_HOSTS": "3"}
    return [proxy(cfg, f"/dev/shm/fl-hosttier-{uuid.uuid4().hex[:8]}", tmp_path, workers=2,
                  env={**env, **({"FAST_LITELLM_DISABLE": "1"} if i in stock else {})}) for i in range(3)]


def _burst(proxies, key, per_proxy):
    with concurrent.futures.ThreadPoolExecutor(len(proxies)) as pool:
        results = pool.map(lambda p: send(p, [key] * per_proxy, concurrency=6), proxies)
    return [collections.Counter(r) for r in results]


def _run(tmp_path, upstream, redis_server, stock=()):
    managers = _hosts(tmp_path, upstream, redis_server, stock)
    proxies = [m.__enter__() for m in managers]
    try:
        before = redis_server.scripts_run()
        key = f"sk-hosttier-{uuid.uuid4().hex[:8]}-rpm30"
        per_proxy = _burst(proxies, key, 30)
        return per_proxy, redis_server.scripts_run() - before
    finally:
        for m in managers:
            m.__exit__(None, None, None)


def test_three_hosts_admit_exactly_the_limit_as_litellm_alone_does(tmp_path, upstream, redis_server):
    """90 requests at once on rpm 30 over three proxies: exactly 30, spread over hosts, as
    LiteLLM alone gives. (Redis calls are counted where the tier's bound is stated:
    tests/test_host_tier.py and benches/bench_host_tier.py; at rpm 30 the two are about even.)"""
    per_proxy, _ = _run(tmp_path, upstream, redis_server)
    total = sum(per_proxy, collections.Counter())
    assert total == {200: 30, 429: 60}, per_proxy
    assert sum(1 for c in per_proxy if c[200]) >= 2, per_proxy
    stock, _ = _run(tmp_path, upstream, redis_server, stock=(0, 1, 2))
    assert sum(stock, collections.Counter()) == {200: 30, 429: 60}, stock


def test_a_mixed_fleet_with_a_stock_litellm_proxy_shares_one_limit(tmp_path, upstream, redis_server):
    per_proxy, _ = _run(tmp_path, upstream, redis_server, stock=(0,))
    assert sum(per_proxy, collections.Counter()) == {200: 30, 429: 60}, per_proxy
    assert per_proxy[0][200] > 0 and per_proxy[1][200] + per_proxy[2][200] > 0, per_proxy
