"""End to end through the real LiteLLM proxy under real gunicorn (deploy/app.py and
deploy/gunicorn.conf.py), 3 workers, one region file, the mock upstream on 127.0.0.1; the
same requests with FAST_LITELLM_DISABLE=1 show LiteLLM's own per-worker behaviour."""

import collections
import os
import signal
import time
import uuid

import pytest

from fast_litellm import shm
from proxy import NO_ANSWER, Upstream, config, proxy, send

pytestmark = pytest.mark.timeout(600)

WORKERS = 3
MODELS = [
    {"name": "gpt-4o", "upstream": "mock-gpt-4o"},
    {"name": "slow", "upstream": "mock-slow", "params": {"max_parallel_requests": 2}},
    {"name": "flaky", "upstream": "mock-fail"},
    {"name": "flaky", "upstream": "mock-backup"},
]
ROUTER = {"allowed_fails": 0, "cooldown_time": 120, "num_retries": 0}


def _key(name):
    return f"sk-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def upstream():
    u = Upstream(slow_delay_s=1.5)
    yield u
    u.close()


def _region(tmp_path):
    return f"/dev/shm/fl-e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def accelerated(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accelerated")
    region = _region(tmp)
    try:
        with proxy(config(str(tmp / "config.yaml"), upstream, MODELS, ROUTER), region, tmp, workers=WORKERS) as p:
            p.region = region
            yield p
    finally:
        if os.path.exists(region):
            os.unlink(region)


@pytest.fixture(scope="module")
def litellm_alone(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("litellm_alone")
    region = _region(tmp)
    with proxy(config(str(tmp / "config.yaml"), upstream, MODELS, ROUTER), region, tmp, workers=WORKERS,
               env={"FAST_LITELLM_DISABLE": "1"}) as p:
        yield p
    assert not os.path.exists(region), "FAST_LITELLM_DISABLE=1 maps no region"


def _spread(p, send_burst, attempts=3):
    """Sends bursts (each with a fresh key) until one reached at least 2 workers: a limit that
    holds within one worker proves nothing about sharing. Returns each burst's (key, codes,
    {worker pid: requests}), the last one spread."""
    bursts = []
    for _ in range(attempts):
        key = _key("burst") + "-rpm10"
        codes = collections.Counter(send_burst(key))
        bursts.append((key, codes, p.workers_of(key)))
        if len(bursts[-1][2]) >= 2:
            return bursts
    pytest.fail(f"{attempts} bursts never reached 2 of the {WORKERS} workers: {bursts}")


def test_one_key_rpm_10_admits_exactly_10_of_40_across_3_workers(accelerated):
    for key, codes, served in _spread(accelerated, lambda key: send(accelerated, [key] * 40, stagger_s=0.01)):
        assert codes == {200: 10, 429: 30}, (codes, served)
    assert "fast_litellm: region" in accelerated.log() and "IMPORT ORDER" not in accelerated.log()


def test_litellm_alone_counts_per_worker_and_admits_more(litellm_alone):
    for key, codes, served in _spread(litellm_alone, lambda key: send(litellm_alone, [key] * 40, stagger_s=0.01)):
        # Each worker admits 10 of the requests it receives, counting on its own.
        assert codes[200] == sum(min(10, n) for n in served.values()) and sum(codes.values()) == 40, (codes, served)
    assert codes[200] > 10


def test_2000_keys_at_rpm_1_two_rounds_every_second_request_refused(accelerated):
    """Each key's second request comes inside its 60 s window: 200 keys at a time, sent twice
    back to back (all 2,000 twice outlasts a window on a loaded machine, and a key whose window
    ended is rightly admitted again). All 2,000 are live in the region by the end."""
    keys = [_key(f"many{i}") + "-rpm1" for i in range(2000)]
    first, second = collections.Counter(), collections.Counter()
    for start in range(0, len(keys), 200):
        began = time.monotonic()
        first.update(send(accelerated, keys[start:start + 200], concurrency=50))
        second.update(send(accelerated, keys[start:start + 200], concurrency=50))
        assert time.monotonic() - began < 55, "a chunk outlasted its keys' window: the test cannot judge"
    assert first == {200: 2000}
    assert second == {429: 2000}


def _slow_bursts(p, upstream, n=12):
    """Bursts of n slow requests, started 50 ms apart (all in flight together: the upstream
    answers after 1.5 s), until one reached 2 workers; (codes, most the upstream saw at once)
    of each."""
    seen = []

    def burst(key):
        upstream.reset()
        codes = send(p, [key] * n, model="slow", concurrency=n, stagger_s=0.05)
        seen.append((collections.Counter(codes), upstream.stats()["by_model"]["mock-slow"]["max_in_flight"]))
        return codes

    _spread(p, burst)
    return seen


def test_deployment_max_parallel_requests_holds_across_workers(accelerated, litellm_alone, upstream):
    for codes, most_at_once in _slow_bursts(accelerated, upstream):
        assert most_at_once <= 2 and codes[200] >= 2 and set(codes) <= {200, 429}, (codes, most_at_once)
    codes, most_at_once = _slow_bursts(litellm_alone, upstream)[-1]
    assert most_at_once > 2, (codes, most_at_once)  # 2 per worker, and 2 workers got some


def _failing_deployment_hits(p, upstream, n=30):
    """Requests to a group of a failing deployment and a healthy one, one at a time (each
    worker decides with what it knows); the failing deployment's hits and how the requests
    spread over the workers."""
    upstream.reset()
    key = _key("flaky")
    for _ in range(n):
        send(p, [key], model="flaky", concurrency=1)
    return upstream.stats()["by_model"].get("mock-fail", {}).get("requests", 0), p.workers_of(key)


def test_a_deployment_cooled_down_in_one_worker_is_skipped_by_the_others(accelerated, litellm_alone, upstream):
    shared, served = _failing_deployment_hits(accelerated, upstream)
    assert len(served) >= 2, f"the requests reached one worker only: {served}"
    assert shared == 1, (shared, served)  # the first failure cools it down for every worker
    alone, served = _failing_deployment_hits(litellm_alone, upstream)
    # Each worker sends to the failing deployment until it fails there itself; a worker that
    # served 6 requests picked it at least once but with a chance of 1 in 64.
    assert 1 <= alone <= len(served), (alone, served)
    if sum(1 for n in served.values() if n >= 6) >= 2:
        assert alone >= 2, (alone, served)


def _held_by_pid(region_path):
    return {w["pid"]: w["slots_held"] for w in shm.RegionView(region_path).workers() if w["status"] == "live"}


def test_a_worker_killed_mid_request_gives_its_slots_back_and_the_proxy_serves(upstream, tmp_path, region_path):
    models = [{"name": "slow", "upstream": "mock-slow", "params": {"max_parallel_requests": 2}},
              {"name": "gpt-4o", "upstream": "mock-gpt-4o"}]
    with proxy(config(str(tmp_path / "config.yaml"), upstream, models), region_path, tmp_path, workers=WORKERS) as p:
        import threading

        # The killed worker's request gets no answer (NO_ANSWER), the other one its 200.
        burst = threading.Thread(target=send, args=(p, [_key("kill")] * 2),
                                 kwargs={"model": "slow", "concurrency": 2, "transport_errors": True})
        burst.start()
        deadline = time.time() + 20
        holders = {}
        while time.time() < deadline and not holders:
            holders = {pid: n for pid, n in _held_by_pid(region_path).items() if n > 0 and pid != p.process.pid}
            time.sleep(0.05)
        assert holders, "no worker held a slot while the slow requests were in flight"
        victim = next(iter(holders))
        os.kill(victim, signal.SIGKILL)
        burst.join(120)
        assert not burst.is_alive(), "both requests were answered or broke"
        # The master reaps it (child_exit) and forks a new worker; its slots are free again,
        # and the surviving request's slot is given back once its answer is sent.
        deadline = time.time() + 60
        while time.time() < deadline and (victim in _held_by_pid(region_path) or sum(_held_by_pid(region_path).values())
                                          or p.log().count("Application startup complete") < WORKERS + 1):
            time.sleep(0.2)
        assert victim not in _held_by_pid(region_path)
        assert sum(_held_by_pid(region_path).values()) == 0
        upstream.reset()
        codes = collections.Counter(send(p, [_key("after")] * 4, model="slow", concurrency=2))
        assert codes == {200: 4}, codes
        assert collections.Counter(send(p, [_key("after")] * 10)) == {200: 10}


def test_limits_hold_while_gunicorn_recycles_workers(upstream, tmp_path, region_path):
    with proxy(config(str(tmp_path / "config.yaml"), upstream, MODELS[:1]), region_path, tmp_path, workers=WORKERS,
               extra_args=["--max-requests", "4", "--max-requests-jitter", "0"]) as p:
        key = _key("recycled") + "-rpm10"
        codes = collections.Counter()
        for _ in range(8):  # 40 requests in waves, so workers hit max_requests and are replaced
            codes.update(send(p, [key] * 5, concurrency=5, transport_errors=True))
        # A worker that ends at max_requests can drop a connection it had just accepted
        # (uvicorn's behaviour, with or without fast_litellm); such a request may have been
        # counted. Never more than 10 admitted, and 10 counting those.
        assert sum(codes.values()) == 40 and set(codes) <= {200, 429, NO_ANSWER}, codes
        assert codes[200] <= 10 <= codes[200] + codes[NO_ANSWER] and codes[NO_ANSWER] <= 5, codes
        # uvicorn's worker ends itself at max_requests and gunicorn boots a replacement: more
        # workers than run at once served this key, so replacements counted on the same limit.
        assert p.log().count("Maximum request limit of 4 exceeded") >= 3, "workers were recycled during the run"
        assert len(p.workers_of(key)) > WORKERS, p.workers_of(key)


def test_without_preload_workers_attach_the_same_region_file(upstream, tmp_path, region_path):
    with proxy(config(str(tmp_path / "config.yaml"), upstream, MODELS[:1]), region_path, tmp_path, workers=WORKERS,
               preload=False) as p:
        codes = collections.Counter(send(p, [_key("nopreload") + "-rpm10"] * 40))
        assert codes == {200: 10, 429: 30}, codes
        assert "IMPORT ORDER" not in p.log()


def test_a_dev_shm_too_small_stops_the_proxy_at_start_naming_shm_size(upstream, tmp_path, small_tmpfs):
    too_small = os.path.join(small_tmpfs, "fl")  # 4 MiB: the default 16.5 MiB region does not fit
    with pytest.raises(AssertionError, match="gunicorn exited") as failed:
        with proxy(config(str(tmp_path / "config.yaml"), upstream, MODELS[:1]), too_small, tmp_path, workers=WORKERS):
            pass
    assert "RegionSpaceError" in str(failed.value) and "--shm-size" in str(failed.value)
