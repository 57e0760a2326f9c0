"""rate_limiter: LiteLLM's proxy limiter (v3) with its counters and slots in the region.

Every scenario runs in a fresh interpreter (`run_python`), against the real LiteLLM; the
processes that share a region are forked from it after the imports, as gunicorn --preload
forks its workers.
"""

import concurrent.futures
import math
import os
import socket

import pytest

from subproc import run_python

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# What every child starts with: the limiter built as proxy/utils.py:1501 builds its cache,
# descriptors as create_rate_limit_descriptors makes them, and the forked-children helper.
PRELUDE = """
import asyncio, contextvars, inspect, json, logging, os, signal, sys, time
from datetime import datetime
sys.path.insert(0, os.environ["FL_TESTS_DIR"])
import fast_litellm
from fast_litellm import shm
from forked import run_forked
from litellm.caching.dual_cache import DualCache
from litellm.proxy.utils import InternalUsageCache
from litellm.proxy.hooks import parallel_request_limiter_v3 as prl


def new_limiter(time_provider=None, redis_cache=None):
    cache = InternalUsageCache(dual_cache=DualCache(redis_cache=redis_cache, default_in_memory_ttl=1))
    # The default model-group resolver imports the whole proxy server (4 s) to find no
    # router and answer None: answer None without it.
    return prl._PROXY_MaxParallelRequestsHandler_v3(
        internal_usage_cache=cache, time_provider=time_provider, model_group_resolver=lambda model: None)


def desc(key, value, rpm=None, tpm=None, parallel=None, window=None):
    return {"key": key, "value": value, "rate_limit": {
        "requests_per_unit": rpm, "tokens_per_unit": tpm, "max_parallel_requests": parallel, "window_size": window}}


# How this LiteLLM names what the limiter counts: str cache keys up to 1.109, RateLimitCounter /
# RateLimitScope objects of the limiter's RateLimitStore from 1.110. The scripts below say what
# they mean with these helpers, so one script runs on every release.
TYPED = hasattr(prl, "RateLimitScope")


def counter(key, value, kind):
    return prl.RateLimitScope(key, value).counter(kind) if TYPED else f"{{{key}:{value}}}:{kind}"


def gauge(key, value):
    return prl.RateLimitScope(key, value) if TYPED else f"{{{key}:{value}}}:max_parallel_requests"


def gauge_meta(key, value, limit):
    return {("scope" if TYPED else "counter_key"): gauge(key, value), "limit": limit, "descriptor_key": key}


def acquisition(slot_id, gauges):
    return {"slot_id": slot_id, ("gauges" if TYPED else "counter_keys"): list(gauges)}


def increment(key, value, kind, amount, ttl):
    c = counter(key, value, kind)
    return prl.CounterIncrement(counter=c, amount=amount, ttl=ttl) if TYPED else {"key": c, "increment_value": amount, "ttl": ttl}


def window_arg(counters):  # in_memory_cache_sliding_window's argument: counters, or flat [window, counter, ...]
    return list(counters) if TYPED else [k for c in counters for k in (c.rpartition(":")[0] + ":window", c)]


def flat(states):  # a window step's or read's result as a flat [start, count, ...] (1.110 gives pairs)
    return [v for state in states for v in state] if TYPED else list(states)


async def maybe(value):  # the in-memory steps are sync from 1.110
    return await value if inspect.isawaitable(value) else value


async def window_step(lim, counters, now_int, window_size):
    return flat(await lim.in_memory_cache_sliding_window(window_arg(counters), now_int, window_size))


async def read_counters(lim, counters, local_only=True):
    if TYPED:
        return flat(lim._local_counter_states(counters))
    return await lim._batch_get_counter_values(window_arg(counters), None, local_only)


async def litellm_gauge(lim, key, value):  # LiteLLM's own slot registry of a gauge
    if TYPED:
        return lim.rate_limits.local((prl.RateLimitScope(key, value).gauge,))[0]
    return await lim.internal_usage_cache.async_get_cache(gauge(key, value), litellm_parent_otel_span=None, local_only=True)


def admitted(limiter, descriptors):
    async def run():
        return sum([(await limiter.should_rate_limit([d]))["overall_code"] == "OK" for d in descriptors])
    return asyncio.run(run())
"""

# One recorded sequence, run patched, then again after remove_acceleration(): both runs
# must log the same thing.
PARITY = PRELUDE + """
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.hooks.batch_rate_limiter import _PROXY_BatchRateLimiter
from litellm.proxy.hooks.dynamic_rate_limiter_v3 import _PROXY_DynamicRateLimitHandlerV3
from litellm.types.utils import ModelResponse, Usage

now = [0.0]
clock = lambda: datetime.fromtimestamp(now[0])


def reset():
    global lim, log
    now[0] = 1_800_000_000.25
    lim = new_limiter(time_provider=clock)
    log = []


def plain(value):
    if hasattr(value, "__dataclass_fields__"):  # 1.110's counters and ops
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return sorted(map(plain, value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


async def record(tag, awaitable):
    try:
        log.append([tag, plain(await awaitable)])
    except Exception as e:
        log.append([tag, {"raised": type(e).__name__, "status": getattr(e, "status_code", None),
                          "detail": str(getattr(e, "detail", e)), "headers": getattr(e, "headers", None)}])


api = desc("api_key", "k1", rpm=3)
user = desc("user", "u1", rpm=5, tpm=100)
team = desc("team", "t1", rpm=10, parallel=2)
end_user = desc("end_user", "e1", tpm=50)
per_key_model = desc("model_per_key", "k1:gpt-4o", rpm=2)
tag = desc("tag", "prod", rpm=4)
saturation = desc("model_saturation_check", "gpt-4o", rpm=100, tpm=1000)


async def request(name, key, outcome, **limits):
    # One proxy request as the proxy runs it: the pre-call hook, then the success callback's
    # steps, the LLM failure callback or the proxy's failure hook. Runs in its own context,
    # as each proxy request task does (the stash is a ContextVar).
    call_id = f"call-{name}"
    data = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there " * 8}],
            "litellm_call_id": call_id, "metadata": {"model_group": "gpt-4o"}}
    auth = UserAPIKeyAuth(api_key=key, user_id="u-hook", team_id="t-hook", **limits)
    await record(name + ":pre", lim.async_pre_call_hook(auth, DualCache(), data, "acompletion"))
    stash = prl.get_request_stash()
    log.append([name + ":stash", plain([stash.reserved_tokens, stash.reserved_scopes, stash.parallel_slot is not None])])
    kwargs = {"litellm_call_id": call_id, "litellm_params": {"metadata": {"model_group": "gpt-4o"}},
              "standard_logging_object": {"metadata": {"user_api_key_hash": auth.api_key,
                                                       "user_api_key_user_id": "u-hook",
                                                       "user_api_key_team_id": "t-hook"}}}
    if outcome == "success":
        # async_log_success_event (PRL:5053) without its proxy-config read of the rate-limit type.
        release = lim._release_stashed_parallel_slot
        if "in_logging_callback" in inspect.signature(release).parameters:  # from 1.105
            await release(stash, None, in_logging_callback=True)
        else:
            await release(stash, None)
        response = ModelResponse(usage=Usage(prompt_tokens=9, completion_tokens=21, total_tokens=30))
        ops = lim._build_success_event_pipeline_operations(kwargs=kwargs, response_obj=response, rate_limit_type="total")
        log.append([name + ":ops", plain(ops)])
        await lim.async_increment_tokens_with_ttl_preservation(pipeline_operations=ops)
    elif outcome == "llm_failure":
        await lim.async_log_failure_event(kwargs, None, None, None)
    elif outcome == "proxy_failure":
        await lim.async_post_call_failure_hook(data, RuntimeError("guardrail"), auth)


async def in_own_context(*args, **limits):
    await asyncio.get_running_loop().create_task(request(*args, **limits), context=contextvars.copy_context())


async def main():
    # A fixed window that starts at the first request; the limiter's clock ends it.
    for i in range(3):
        await record(f"api{i}", lim.should_rate_limit([api]))
    now[0] += 61
    # Increment before the check: the first refusal counts (limit_remaining -1), the next
    # one is refused by the pre-read, and so is every one after it while the window's
    # cache entry lives, whatever the limiter's clock says.
    for i in range(5):
        await record(f"api-next-window{i}", lim.should_rate_limit([api]))
    await record("api-read-only", lim.should_rate_limit([api], read_only=True))
    await record("tag-read-only", lim.should_rate_limit([tag], read_only=True))
    now[0] += 61
    await record("api-stays-refused", lim.should_rate_limit([api]))
    # Several kinds in one call, rpm and tpm on one window key (a str start, then an int).
    for i in range(3):
        await record(f"multi{i}", lim.should_rate_limit([user, end_user, per_key_model, tag]))
    counters = [counter("user", "u1", "requests"), counter("user", "u1", "tokens"), counter("tag", "prod", "requests"),
                counter("nobody", "x", "requests")]
    await record("pre-read", read_counters(lim, counters, True))
    await record("read", read_counters(lim, counters, False))
    pair = [counter("w", "1", "requests"), counter("w", "1", "tokens")]
    await record("window-step", window_step(lim, pair, int(now[0]), 60))
    await record("window-step-again", window_step(lim, pair[:1], int(now[0]) + 5, 60))
    # max_parallel_requests gauges; a second release of the same slot frees nothing.
    for i in range(3):
        await record(f"gauge{i}", lim.should_rate_limit([team], parallel_slot_id=f"s{i}"))
    await record("gauge-read-only", lim.should_rate_limit([team], read_only=True))
    await record("gauge-counts", maybe(lim._read_local_gauge_counts([gauge("team", "t1"), gauge("x", "y")])))
    declined = fast_litellm.status()["rate_limiter"]["declined"]
    for _ in range(2):
        await lim._release_parallel_request_slots(acquisition("s0", [gauge("team", "t1")]))
    releases_declined.append(fast_litellm.status()["rate_limiter"]["declined"] - declined)
    await record("gauge-after-release", lim.should_rate_limit([team], parallel_slot_id="s3"))
    await record("gauge-full-again", lim.should_rate_limit([team], parallel_slot_id="s4"))
    org = desc("organization", "o1", parallel=3)
    await record("gauge-all-or-nothing", lim.should_rate_limit([org, team], parallel_slot_id="s5"))
    await record("gauge-all-or-nothing-counts", maybe(lim._read_local_gauge_counts(
        [gauge("organization", "o1"), gauge("team", "t1")])))
    # TPM: all-or-nothing reservations, reconciliation to the actual usage, refunds.
    for i in range(3):
        await record(f"reserve{i}", lim.reserve_tpm_tokens([user, end_user], 20))
    ops = lim._build_reservation_aware_tpm_ops(targets=[("user", "u1"), ("end_user", "e1"), ("team", "t1")],
                                               reserved_scopes={("user", "u1"), ("end_user", "e1")},
                                               actual_tokens=8, reserved_tokens=20)
    await lim.async_increment_tokens_with_ttl_preservation(pipeline_operations=ops)
    await record("tokens-after-reconcile", lim.should_rate_limit([user, end_user], read_only=True))
    await record("reserve-after-reconcile", lim.reserve_tpm_tokens([user, end_user], 25))
    reserved = await lim.reserve_tpm_tokens([end_user], 5)
    log.append(["reserved", plain(reserved)])
    await lim._refund_reserved_tokens([("end_user", "e1")], 5, reserved["reservation_windows"])
    await record("after-window-guarded-refund", lim.should_rate_limit([end_user], read_only=True))
    await lim._refund_reserved_tokens([("end_user", "e1")], 5)
    await record("after-unguarded-refund", lim.should_rate_limit([end_user], read_only=True))
    # The other readers: the priority limiter's saturation (counted by its own v3 limiter, as
    # LiteLLM's priority hooks do), the batch limiter's TPD window.
    dynamic = _PROXY_DynamicRateLimitHandlerV3(lim.internal_usage_cache.dual_cache, time_provider=clock)
    await dynamic.v3_limiter.should_rate_limit([saturation])
    await dynamic.v3_limiter.async_increment_tokens_with_ttl_preservation(
        pipeline_operations=[increment("model_saturation_check", "gpt-4o", "tokens", 77, 60)])
    for value, kind in (("gpt-4o", "requests"), ("gpt-4o", "tokens"), ("other", "tokens")):
        await record(f"saturation {value}:{kind}",
                     dynamic._get_saturation_value_from_cache(counter("model_saturation_check", value, kind)))
    batch = _PROXY_BatchRateLimiter(lim.internal_usage_cache, parallel_request_limiter=lim, time_provider=clock)
    tpd = desc("api_key_tpd", "k1", tpm=1000, window=86400)
    tpd_reserved = await lim.atomic_check_and_increment_by_n([tpd], [{"tokens": 600}])
    log.append(["tpd-reserve", plain(tpd_reserved)])
    await record("tpd-over", lim.atomic_check_and_increment_by_n([user, tpd], [{"tokens": 1}, {"tokens": 600}]))
    for key in ("api_key_tpd", "api_key"):
        status = {"descriptor_key": key, "descriptor_value": "k1"}
        await record("tpd-window " + key, batch._read_tpd_window_start(status, None))
    refund = batch._build_tpd_refund_ops([tpd], 100, tpd_reserved["reservation_windows"])
    await lim.async_increment_reservation_aware_tokens(refund)
    await record("tpd-after-refund", lim.atomic_check_and_increment_by_n([tpd], [{"tokens": 0}]))
    # Whole requests: success (slot released, tokens reconciled), an LLM failure and a proxy
    # failure (reservation refunded through the cache pipeline), then the counts left.
    limits = dict(rpm_limit=5, tpm_limit=400, max_parallel_requests=1)
    for name, outcome in (("ok1", "success"), ("ok2", "success"), ("llm-fail", "llm_failure"),
                          ("proxy-fail", "proxy_failure"), ("ok3", "success")):
        await in_own_context(name, "sk-hook", outcome, **limits)
    hashed = UserAPIKeyAuth(api_key="sk-hook").api_key
    hook_key = desc("api_key", hashed, rpm=5, tpm=400, parallel=1)
    await record("hook-counts", lim.should_rate_limit([hook_key], read_only=True))
    await in_own_context("over-rpm", "sk-other", "success", rpm_limit=1)
    await in_own_context("over-rpm2", "sk-other", "success", rpm_limit=1)
    now[0] += 61
    await in_own_context("next-window", "sk-hook", "success", **limits)
    # A slot whose release never came stops counting after PARALLEL_REQUEST_SLOT_TTL_SECONDS.
    leaky = desc("team", "leaky", parallel=1)
    await record("leak", lim.should_rate_limit([leaky], parallel_slot_id="never-released"))
    await record("leak-blocks", lim.should_rate_limit([leaky], parallel_slot_id="x1"))
    now[0] += prl.PARALLEL_REQUEST_SLOT_TTL_SECONDS + 1
    await record("leak-expired", lim.should_rate_limit([leaky], parallel_slot_id="x2"))


runs = {}
releases_declined = []
for run in ("patched", "unpatched"):
    if run == "unpatched":
        fast_litellm.remove_acceleration()
    reset()
    asyncio.run(main())
    runs[run] = {"log": log, "status": fast_litellm.status()["rate_limiter"]}
emit({**runs, "releases_declined": releases_declined})
"""


def child_env(region_path, **extra):
    return {"FAST_LITELLM_SHM": region_path, "FL_TESTS_DIR": TESTS_DIR, **extra}


@pytest.mark.timeout(120)
def test_the_region_gives_exactly_what_litellm_gives(region_path):
    """The same recorded sequence, patched and after remove_acceleration(): every
    RateLimitResponse, raised 429, stash and counter read is the same."""
    out = run_python(PARITY, child_env(region_path))
    patched, unpatched = out["patched"], out["unpatched"]
    assert patched["status"]["state"] == "on" and patched["status"]["errors"] == 0
    assert unpatched["status"]["state"] == "off" and unpatched["status"]["patched"] == []
    assert [tag for tag, _ in patched["log"]] == [tag for tag, _ in unpatched["log"]]
    for (tag, got), (_, expected) in zip(patched["log"], unpatched["log"]):
        assert got == expected, tag
    log = dict(patched["log"])
    # The sequence reaches what it is meant to (so the comparison above is not vacuous).
    assert [log[f"api-next-window{i}"]["statuses"][0]["limit_remaining"] for i in range(5)] == [2, 1, 0, -1, -1]
    assert log["window-step"][0] == str(int(1_800_000_000.25 + 122)) and str(log["window-step"][2]) == log["window-step"][0]
    assert [log[f"gauge{i}"]["overall_code"] for i in range(3)] == ["OK", "OK", "OVER_LIMIT"]
    assert log["gauge-after-release"]["overall_code"] == "OK" and log["gauge-full-again"]["overall_code"] == "OVER_LIMIT"
    assert log["gauge-all-or-nothing"]["overall_code"] == "OVER_LIMIT" and log["gauge-all-or-nothing-counts"] == [0, 2]
    assert [log[f"reserve{i}"]["overall_code"] for i in range(3)] == ["OK", "OK", "OVER_LIMIT"]
    assert log["ok1:pre"] is None and log["ok1:stash"][0] > 0, "the hook reserved tokens"
    assert log["over-rpm2:pre"]["status"] == 429 and log["next-window:pre"] is None
    assert log["saturation gpt-4o:tokens"] == 1 + 77, "the window step counts 1 token too"
    assert log["tpd-after-refund"]["statuses"][0]["limit_remaining"] == 1000 - 500, "the TPD refund landed"
    assert [log[k]["overall_code"] for k in ("leak", "leak-blocks", "leak-expired")] == ["OK", "OVER_LIMIT", "OK"]
    # (The logging callbacks' releases from 1.108, through the host tier's pool, decline too.)
    assert out["releases_declined"][0] == 1, "the second release of s0 is not a region slot"


CROSS_PROCESS = PRELUDE + """
race = run_forked(3, lambda i: admitted(new_limiter(), [desc("api_key", "race", rpm=10)] * 10))

# 2,000 keys at rpm 1: one process takes the first round, another the second; both rounds
# in one process too (LiteLLM's 200-entry cache forgets counters past a few dozen keys).
few = [desc("api_key", f"sk-{i}", rpm=1) for i in range(2000)]
first_round = run_forked(1, lambda i: admitted(new_limiter(), few))
second_round = run_forked(1, lambda i: admitted(new_limiter(), few))
fresh = [desc("api_key", f"sk-again-{i}", rpm=1) for i in range(500)]
both_rounds = run_forked(1, lambda i: (lambda lim: admitted(lim, fresh) * 10000 + admitted(lim, fresh))(new_limiter()))

# 10,000 keys at rpm 2: one hit each, then two processes racing one hit each on every key.
many = [desc("user", f"u-{i}", rpm=2) for i in range(10000)]
many_first = run_forked(1, lambda i: admitted(new_limiter(), many))
many_race = run_forked(2, lambda i: admitted(new_limiter(), many))

async def read_all():
    lim = new_limiter()
    return sum([(await lim.should_rate_limit([d], read_only=True))["overall_code"] == "OVER_LIMIT" for d in many])

emit({"race": race, "first_round": first_round, "second_round": second_round, "both_rounds": both_rounds,
      "many_first": many_first, "many_race": many_race, "many_full": asyncio.run(read_all()),
      "status": fast_litellm.status()["rate_limiter"]})
"""


@pytest.mark.timeout(120)
def test_processes_share_every_limit(region_path):
    out = run_python(CROSS_PROCESS, child_env(region_path))
    assert len(out["race"]) == 3 and sum(out["race"]) == 10, out["race"]
    assert out["first_round"] == [2000] and out["second_round"] == [0]
    assert out["both_rounds"] == [500 * 10000 + 0]
    assert out["many_first"] == [10000] and sum(out["many_race"]) == 10000, out["many_race"]
    assert out["many_full"] == 10000, "every key is at its limit, as read by a new limiter"
    assert out["status"]["state"] == "on" and out["status"]["errors"] == 0


HOST_TIER = PRELUDE + """
from litellm.caching.redis_cache import RedisCache

# Two "hosts" (their own regions), two forked processes each, one real Redis: LiteLLM's v3
# limiter with Redis, its rpm window through the host tier.
def host(i):
    region_path = os.environ["FAST_LITELLM_SHM"] + f"-host{i // 2}"
    from fast_litellm import limiter_host_tier
    limiter_host_tier._region = shm.Region(region_path)
    redis = RedisCache(host="127.0.0.1", port=int(os.environ["FL_REDIS_PORT"]))
    return admitted(new_limiter(redis_cache=redis), [desc("api_key", "tier", rpm=12)] * 10)

def scripts_run():
    import redis
    stats = redis.Redis(port=int(os.environ["FL_REDIS_PORT"])).info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))


before = scripts_run()
race = run_forked(4, host)
rpm_scripts = scripts_run() - before
# TPM reservations (LiteLLM's CHECK_AND_INCREMENT_BY_N path) through the tier: 25 tokens at a
# time against a user at tpm 10000 and a team at tpm 8000, all or nothing. Each process gives
# its leases back at the end, as a worker does when idle; then one process reserves what is left.
user, team = desc("user", "tpm-tier", tpm=10000), desc("team", "tpm-tier", tpm=8000)


def reserving(i, n=100):
    region_path = os.environ["FAST_LITELLM_SHM"] + f"-host{i // 2}"
    from fast_litellm import limiter_host_tier
    limiter_host_tier._region = shm.Region(region_path)
    lim = new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=int(os.environ["FL_REDIS_PORT"])))

    async def run():
        ok = 0
        for _ in range(n):
            response = await lim.reserve_tpm_tokens([user, team], 25)
            ok += response["overall_code"] == "OK"
            if response["overall_code"] == "OK":
                assert {w[1] for w in response["reservation_windows"]} != {"0"}, response
        await limiter_host_tier._tiers[lim].close()
        return ok
    return asyncio.run(run())


before = scripts_run()
tpm_race = run_forked(4, reserving)
tpm_scripts = scripts_run() - before
time.sleep(1.1)  # the dry marker of a refused limit lasts poll_s (1 s)
tpm_rest = reserving(0, n=400)
emit({"race": race, "rpm_scripts": rpm_scripts, "tpm_race": tpm_race, "tpm_scripts": tpm_scripts,
      "tpm_rest": tpm_rest, "status": fast_litellm.status()["rate_limiter"]})
"""


POST_CALL = PRELUDE + """
import redis
from litellm.caching.redis_cache import RedisCache
from fast_litellm import limiter_host_tier

# LiteLLM's post-call token increments, as its builders make them, through the host tier: a
# team with a tpm limit (reserved from the host's lease), a user with only an rpm limit, and
# a second team with a tpm limit whose lease another host holds.
limiter_host_tier._region = shm.Region(os.environ["FAST_LITELLM_SHM"] + "-post")
port = int(os.environ["FL_REDIS_PORT"])
r = redis.Redis(port=port)
lim = new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=port))
team, user, other = desc("team", "post", tpm=1000), desc("user", "post", rpm=1000), desc("team", "other", tpm=1000)


def count(d):
    v = r.get(f"{{{d['key']}:{d['value']}}}:tokens")
    return None if v is None else float(v)


def key_and_amount(op):  # of a builder's increment: a dict up to 1.109, a CounterIncrement from 1.110
    if not TYPED:
        return op["key"], op["increment_value"]
    scope = op.counter.scope
    return f"{{{scope.descriptor_key}:{scope.descriptor_value}}}:{op.counter.kind}", op.amount


async def run():
    out = {}
    assert (await lim.should_rate_limit([team, user, other], skip_tpm_check=True))["overall_code"] == "OK"
    reserved = await lim.reserve_tpm_tokens([team], 100)
    out["reserved"] = reserved["overall_code"]
    out["team_after_reserve"] = count(team)  # the lease: at least the 100
    before = r.info("commandstats").get("cmdstat_incrbyfloat", {}).get("calls", 0)
    # The reconciliation of 40 used of 100 reserved, unguarded and window-guarded, and the
    # usage on scopes nothing reserved: LiteLLM's builders.
    ops = lim._build_reservation_aware_tpm_ops(targets=[("team", "post"), ("user", "post"), ("team", "other")],
                                               reserved_scopes={("team", "post")}, actual_tokens=40,
                                               reserved_tokens=100)
    out["ops"] = sorted(key_and_amount(op) for op in ops)
    await lim.async_increment_tokens_with_ttl_preservation(pipeline_operations=ops)
    guarded = lim._build_project_reservation_ops(
        targets=[("team", "post")], reserved_scopes={("team", "post")}, actual_tokens=0, reserved_tokens=30,
        reservation_window_identities=frozenset(reserved["reservation_windows"]))
    await lim.async_increment_reservation_aware_tokens(pipeline_operations=guarded)
    # (TOKEN_INCREMENT_SCRIPT's INCRBYFLOAT, one per counter it increments; the tier's flush too)
    out["increments_at_once"] = r.info("commandstats").get("cmdstat_incrbyfloat", {}).get("calls", 0) - before
    out["now"] = [count(team), count(user), count(other)]
    await asyncio.sleep(1.6)  # a flush interval (1 s) and then some
    out["after_flush"] = [count(team), count(user), count(other)]
    out["flushed_ttl"], out["window_size"] = r.ttl("{user:post}:tokens"), lim.window_size
    await limiter_host_tier._tiers[lim].close()
    out["after_return"] = [count(team), count(user), count(other)]
    return out


emit(asyncio.run(run()))
"""


@pytest.mark.timeout(120)
def test_with_redis_post_call_increments_are_settled_in_the_lease_or_deferred_or_sent_as_litellm_sends_them(
        region_path, redis_server):
    """A refund of a reservation (unguarded, and window-guarded) goes into the host's lease, so
    Redis's count stays what LiteLLM's INCRBY would leave once the lease is returned; a counter
    with no token limit gets its increments summed and sent within a flush interval; a counter
    with a token limit and no lease here is sent at once, as LiteLLM sends it. On every release."""
    out = run_python(POST_CALL, child_env(region_path, FL_REDIS_PORT=str(redis_server.port)))
    assert out["reserved"] == "OK" and out["team_after_reserve"] >= 100, out
    assert out["ops"] == [["{team:other}:tokens", 40], ["{team:post}:tokens", -60], ["{user:post}:tokens", 40]], out
    held = out["team_after_reserve"]
    # Only the limited counter without a lease here reached Redis at once.
    assert out["now"] == [held, None, 40.0] and out["increments_at_once"] == 1, out
    assert out["after_flush"][1:] == [40.0, 40.0], out
    # The flush gives a counter with no TTL the window's, as LiteLLM's script does.
    assert out["window_size"] - 5 < out["flushed_ttl"] <= out["window_size"], out
    # The lease returned (idle for 1 s, or at close): the team counts 100 reserved - 60 - 30
    # refunded = 10, as LiteLLM's INCRBYs leave it.
    assert out["after_return"] == [10.0, 40.0, 40.0], out


DEAD_HOST_SLOTS = PRELUDE + """
import redis
from litellm.caching.redis_cache import RedisCache
from fast_litellm import limiter_host_tier, limiter_host_tier_gauges

# A gauge of 3 parallel requests in LiteLLM's Redis sorted set: a stock pod's slot (LiteLLM's
# own acquire script), a slot of a host that dies holding it, and one of a live host.
limiter_host_tier_gauges.SLOT_TTL_S, limiter_host_tier_gauges.SLOT_REFRESH_S = 3, 1.0
port = int(os.environ["FL_REDIS_PORT"])
r = redis.Redis(port=port)
gauge_key = "{api_key:par}:max_parallel_requests"
par = desc("api_key", "par", parallel=3)
if hasattr(prl, "PARALLEL_ACQUIRE_SCRIPT"):
    r.register_script(prl.PARALLEL_ACQUIRE_SCRIPT)(keys=[gauge_key], args=[3, 3600, "stock-1"])
else:  # 1.110 acquires in its native client: its sorted set, as its script writes it
    r.zadd(gauge_key, {"stock-1": time.time()})


def limiter(host):
    limiter_host_tier._region = shm.Region(os.environ["FAST_LITELLM_SHM"] + f"-host{host}")
    return new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=port))


def dies_holding_a_slot(_):
    lim = limiter(1)
    code = asyncio.run(lim.should_rate_limit([par], parallel_slot_id="dead-1"))["overall_code"]
    return code == "OK"  # then run_forked's os._exit: no release, no atexit, as a SIGKILL leaves it


assert run_forked(1, dies_holding_a_slot) == [1]


async def run():
    lim = limiter(0)
    out = {"live": (await lim.should_rate_limit([par], parallel_slot_id="live-1"))["overall_code"]}
    out["fourth"] = (await lim.should_rate_limit([par], parallel_slot_id="x-1"))["overall_code"]
    await asyncio.sleep(limiter_host_tier_gauges.SLOT_TTL_S + 2.5)  # the live slot is refreshed meanwhile
    # The read-only check (LiteLLM's before the body, from 1.109) would refuse on the dead
    # host's slot, which no acquire would then ever drop: it drops it and reads again.
    out["read_only_after_ttl"] = (await lim.should_rate_limit([par], read_only=True))["overall_code"]
    out["after_ttl"] = (await lim.should_rate_limit([par], parallel_slot_id="x-2"))["overall_code"]
    out["members"] = sorted(m.decode() for m in r.zrange(gauge_key, 0, -1))
    out["fifth"] = (await lim.should_rate_limit([par], parallel_slot_id="x-3"))["overall_code"]
    out["host_id"] = limiter_host_tier._tiers[lim].host_id
    return out


emit(asyncio.run(run()))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("linger_ms", ["0", "500"])
def test_with_redis_a_dead_hosts_parallel_request_slots_come_back_within_the_slot_ttl(
        region_path, redis_server, linger_ms):
    """LiteLLM keeps a dead host's max_parallel_requests slots for an hour; through the host
    tier they come back within SLOT_TTL_S (30 s; 3 here), while a live host's slots (refreshed)
    and a stock pod's (LiteLLM's own hour) stay: each request's own slot (linger 0), or the
    members of the host's pool."""
    out = run_python(DEAD_HOST_SLOTS, child_env(region_path, FL_REDIS_PORT=str(redis_server.port),
                                                FAST_LITELLM_REDIS_GAUGE_LINGER_MS=linger_ms))
    assert (out["live"], out["fourth"]) == ("OK", "OVER_LIMIT"), out
    assert out["read_only_after_ttl"] == "OK", out
    assert out["after_ttl"] == "OK" and out["fifth"] == "OVER_LIMIT", out
    if linger_ms == "0":
        assert out["members"] == ["live-1", "stock-1", "x-2"], out
    else:  # the live host's two members (live-1's and x-2's), the stock pod's slot
        assert out["members"] == [f"fl-pool:{out['host_id']}:0", f"fl-pool:{out['host_id']}:1", "stock-1"], out


@pytest.mark.timeout(120)
def test_with_redis_rpm_windows_and_tpm_reservations_go_through_the_host_tier(region_path, redis_server):
    out = run_python(HOST_TIER, child_env(region_path, FL_REDIS_PORT=str(redis_server.port)))
    assert sum(out["race"]) == 12 and len([n for n in out["race"] if n]) >= 2, out["race"]
    assert 0 < out["rpm_scripts"] < 40, f"{out['rpm_scripts']} script calls for 40 checks: the lease, not one per check"
    assert int(redis_server.client().get("{api_key:tier}:requests")) == 12
    # TPM reservations: never more than the team's 8000 (320 of 25) across hosts, and exactly
    # that once the leases are back; Redis holds the reserved tokens, which LiteLLM's post-call
    # reconciliation then corrects.
    assert sum(out["tpm_race"]) <= 320 and len([n for n in out["tpm_race"] if n]) >= 2, out["tpm_race"]
    assert sum(out["tpm_race"]) + out["tpm_rest"] == 320, out
    # LiteLLM runs one script per descriptor per reservation: 800 for these 400. Through the
    # tier each refusal asks Redis once (tokens refunded after a call may have come back) and the
    # 320 admitted take their tokens from leases: the documented bound (docs/host-tier.md) is
    # H*W*(2*ceil(log2(L/2H)) + 2) refills, L in costs (8000 / 25), H = 2 hosts, W = 2 processes.
    refused = 400 - sum(out["tpm_race"])
    refills = 2 * 2 * (2 * math.ceil(math.log2(320 / (2 * 2))) + 2)
    assert 0 < out["tpm_scripts"] <= refused + refills, f"{out['tpm_scripts']} script calls for 400 reservations"
    assert int(redis_server.client().get("{team:tpm-tier}:tokens")) == 8000
    assert int(redis_server.client().get("{user:tpm-tier}:tokens")) == 8000
    for suffix in ("-host0", "-host1"):
        if os.path.exists(region_path + suffix):
            os.unlink(region_path + suffix)


RPM_THROUGH_THE_TIER = PRELUDE + """
import contextlib
from litellm.caching.redis_cache import RedisCache

try:  # 1.110: the proxy opens a native Redis batch around every request
    from litellm.caching.redis_batch import request_redis_batch_scope
except ImportError:
    request_redis_batch_scope = contextlib.nullcontext


def scripts_run():
    import redis
    stats = redis.Redis(port=int(os.environ["FL_REDIS_PORT"])).info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))


# Two "hosts" (their own regions), two forked processes each, one real Redis. Each request as
# the proxy makes it: the read-only check before the body (1.110's raise_if_over_limit_before_body),
# then the check that counts it.
def host(i):
    from fast_litellm import limiter_host_tier
    limiter_host_tier._region = shm.Region(os.environ["FAST_LITELLM_SHM"] + f"-host{i // 2}")
    lim = new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=int(os.environ["FL_REDIS_PORT"])))
    d = desc("api_key", "every", rpm=12)

    async def run():
        admitted = refused_holding = 0
        for _ in range(10):
            with request_redis_batch_scope():
                if (await lim.should_rate_limit([d], read_only=True))["overall_code"] != "OK":
                    refused_holding += limiter_host_tier._region.lease_left("{api_key:every}:requests")[1] > 0
                    continue
                admitted += (await lim.should_rate_limit([d]))["overall_code"] == "OK"
        await limiter_host_tier._tiers[lim].close()  # units left go back, as an idle worker's do
        return admitted * 100 + refused_holding  # (run_forked passes an int)
    return asyncio.run(run())


# A stock LiteLLM pod makes 10 checks of its own on the same key while the hosts race.
import subprocess
stock = subprocess.Popen([sys.executable, "-c", os.environ["FL_STOCK_POD"]], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "FAST_LITELLM_DISABLE": "1"})
assert stock.stdout.readline().strip() == "ready"
stock.stdin.write(json.dumps([[desc("api_key", "every", rpm=12), None]] * 10) + "\\n")
stock.stdin.flush()
before = scripts_run()
race = [{"admitted": n // 100, "refused_holding": n % 100} for n in run_forked(4, host)]
stock_codes = json.loads(stock.communicate(timeout=90)[0].strip().splitlines()[-1])
scripts = scripts_run() - before
time.sleep(1.1)  # a refused host's dry marker lasts poll_s (1 s)
rest = host(0) // 100
emit({"race": race, "stock": stock_codes.count("OK"), "scripts": scripts, "rest": rest,
      "status": fast_litellm.status()["rate_limiter"]})
"""


@pytest.mark.timeout(120)
def test_with_redis_rpm_windows_and_the_read_only_check_go_through_the_host_tier_on_every_release(
        region_path, redis_server):
    """On every release (1.110's RateLimitStore too): exactly the limit across hosts and a
    stock LiteLLM pod, with a lease call for a fraction of the hosts' checks, and the read-only
    check never refusing a unit a host holds (Redis's counter counts units leased, spent or not)."""
    out = run_python(RPM_THROUGH_THE_TIER, child_env(region_path, FL_REDIS_PORT=str(redis_server.port), **stock_pod_env()))
    admitted = sum(r["admitted"] for r in out["race"])
    # A mixed fleet: the hosts and LiteLLM's own stock pod share the one limit.
    assert admitted + out["stock"] <= 12 and admitted + out["stock"] + out["rest"] == 12, out
    assert int(redis_server.client().get("{api_key:every}:requests")) == 12
    assert [r["refused_holding"] for r in out["race"]] == [0] * 4, "a read-only check refused a unit the host held"
    hosts_scripts = out["scripts"] - 10  # the stock pod's: one per check, LiteLLM's own
    assert 0 < hosts_scripts < 40, f"{hosts_scripts} script calls for 40 checks: the lease, not one per check"
    assert out["status"]["errors"] == 0, out["status"]
    for suffix in ("-host0", "-host1"):
        if os.path.exists(region_path + suffix):
            os.unlink(region_path + suffix)


# A stock LiteLLM pod (run with FAST_LITELLM_DISABLE=1: LiteLLM's own code on the same Redis):
# says "ready" once imported, then reads one JSON line of checks, [descriptor, slot id or None],
# makes them in order and prints their codes (slots it acquires stay held, as in flight).
STOCK_POD = PRELUDE + """
from litellm.caching.redis_cache import RedisCache

lim = new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=int(os.environ["FL_REDIS_PORT"])))
print("ready", flush=True)
checks = json.loads(sys.stdin.readline())


async def check():
    return [(await lim.should_rate_limit([d], parallel_slot_id=slot_id))["overall_code"] for d, slot_id in checks]


print(json.dumps(asyncio.run(check())), flush=True)
"""


def stock_pod_env(**extra):
    return {"FL_STOCK_POD": STOCK_POD, **extra}

GAUGE_POOL = PRELUDE + """
import redis
from litellm.caching.redis_cache import RedisCache
from fast_litellm import limiter_host_tier

port = int(os.environ["FL_REDIS_PORT"])
r = redis.Redis(port=port)
gauge_key = "{api_key:pool}:max_parallel_requests"
par = desc("api_key", "pool", parallel=4)


def scripts_run():
    stats = r.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))


def limiter(host):
    limiter_host_tier._region = shm.Region(os.environ["FAST_LITELLM_SHM"] + f"-host{host}")
    return new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=port))


async def barrier(name, n=4):
    r.incr(name)
    while int(r.get(name)) < n:
        await asyncio.sleep(0.01)


# Two hosts (their own regions), two forked processes each, all trying to hold 4 slots of a
# gauge of 4 at once; then each gives its slots back and waits past the linger (0.2 s here).
def race(i):
    lim = limiter(i // 2)

    async def run():
        held = []
        for n in range(4):
            if (await lim.should_rate_limit([par], parallel_slot_id=f"race{i}-{n}"))["overall_code"] == "OK":
                held.append(f"race{i}-{n}")
        await barrier("tried")
        for slot_id in held:
            await lim._release_parallel_request_slots(acquisition(slot_id, [gauge("api_key", "pool")]))
        await barrier("released")
        await asyncio.sleep(1.5)
        return len(held)
    return asyncio.run(run())


race_admitted = run_forked(4, race)
out = {"race": race_admitted, "members_after_race": r.zcard(gauge_key)}


async def one_host():
    lim = limiter(0)
    # One request after another: the first adds a member, the others reuse it.
    before = scripts_run()
    codes = []
    for n in range(30):
        codes.append((await lim.should_rate_limit([par], parallel_slot_id=f"seq{n}"))["overall_code"])
        await lim._release_parallel_request_slots(acquisition(f"seq{n}", [gauge("api_key", "pool")]))
    out["sequential"] = {"codes": sorted(set(codes)), "scripts": scripts_run() - before}
    # A mixed fleet: a stock pod's slot counts for the host, and the host's for the stock pod.
    for n in range(3):
        assert (await lim.should_rate_limit([par], parallel_slot_id=f"mix{n}"))["overall_code"] == "OK"
    # The stock pod: LiteLLM alone (FAST_LITELLM_DISABLE=1) in its own process, acquiring two
    # slots of the gauge with its own code (a script up to 1.109, its native client from 1.110).
    # Awaited, not waited for: this host keeps refreshing its slots meanwhile, as a serving
    # worker does (a loop blocked past SLOT_TTL_S would be taken for a dead host's).
    stock = await asyncio.create_subprocess_exec(
        sys.executable, "-c", os.environ["FL_STOCK_POD"], env={**os.environ, "FAST_LITELLM_DISABLE": "1"},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    checks = json.dumps([[par, "stock-a"], [par, "stock-b"]]) + "\\n"
    stdout, _ = await asyncio.wait_for(stock.communicate(checks.encode()), 90)
    out["stock_fourth"], out["stock_fifth"] = json.loads(stdout.decode().strip().splitlines()[-1])
    out["host_fourth"] = (await lim.should_rate_limit([par], parallel_slot_id="mix3"))["overall_code"]
    r.zrem(gauge_key, "stock-a")  # the stock pod's request ends
    out["host_fourth_after_stock"] = (await lim.should_rate_limit([par], parallel_slot_id="mix4"))["overall_code"]
    for slot_id in ("mix0", "mix1", "mix2"):
        await lim._release_parallel_request_slots(acquisition(slot_id, [gauge("api_key", "pool")]))
    # From 1.108 a release from the logging callbacks may be deferred to LiteLLM's post-call
    # batch, which would leave a pooled slot taken: it goes back to the pool.
    if hasattr(lim, "_defer_parallel_slot_release"):
        out["deferred"] = await lim._defer_parallel_slot_release(acquisition("mix4", [gauge("api_key", "pool")]), None)
    else:
        await lim._release_parallel_request_slots(acquisition("mix4", [gauge("api_key", "pool")]))
        out["deferred"] = True
    out["in_use_after_release"] = limiter_host_tier._region.slots_in_use(f"pool-use:{gauge_key}")
    # Within the linger the host's 4 members stay, idle: Redis counts 4, and the read-only
    # check (LiteLLM's before the body, from 1.109) does not count them against the request.
    out["members_idle"] = r.zcard(gauge_key)
    out["read_only_idle"] = (await lim.should_rate_limit([par], read_only=True))["overall_code"]
    await asyncio.sleep(1.0)
    out["members_after_linger"] = r.zcard(gauge_key)
    await while_a_member_leaves(lim)
    out["status"] = fast_litellm.status()["rate_limiter"]
    region = limiter_host_tier._region
    out["stats"] = {k: region.counter_get(f"tier:stat:gauge_pool_{k}") for k in ("takes", "adds", "returns")}
    out["stats"]["redis_calls"] = region.counter_get("tier:stat:redis_calls")


# A gauge of 1: its member, idle after a request, is on its way out (the shrink's call held
# back here) while Redis still counts it. The read-only check is not refused for it, and an
# acquire waits for the shrink and adds a member (LiteLLM's acquire then would refuse).
async def while_a_member_leaves(lim):
    from fast_litellm import limiter_host_tier_pool
    one, one_key = desc("api_key", "one", parallel=1), "{api_key:one}:max_parallel_requests"
    pool = limiter_host_tier_pool._pool_of(lim)
    gate, shrink_script = asyncio.Event(), pool.shrink_script

    async def held_back(**call):
        await gate.wait()
        return await shrink_script(**call)
    pool.shrink_script = held_back
    assert (await lim.should_rate_limit([one], parallel_slot_id="one0"))["overall_code"] == "OK"
    await lim._release_parallel_request_slots(acquisition("one0", [gauge("api_key", "one")]))
    for _ in range(500):  # the release's shrink reserves the member at its first step
        if pool.leaving(one_key):
            break
        await asyncio.sleep(0.001)
    leaving = {"leaving": pool.leaving(one_key), "in_redis": r.zcard(one_key)}
    leaving["read_only"] = (await lim.should_rate_limit([one], read_only=True))["overall_code"]
    acquiring = asyncio.ensure_future(lim.should_rate_limit([one], parallel_slot_id="one1"))
    await asyncio.sleep(0.05)
    gate.set()
    leaving["acquire"] = (await acquiring)["overall_code"]
    leaving["in_redis_after"] = r.zcard(one_key)
    pool.shrink_script = shrink_script
    await lim._release_parallel_request_slots(acquisition("one1", [gauge("api_key", "one")]))
    out["leaving"] = leaving


asyncio.run(one_host())
emit(out)
"""


@pytest.mark.timeout(240)
def test_with_redis_parallel_request_slots_come_from_the_hosts_pool_exactly(region_path, redis_server):
    """max_parallel_requests through the host tier: never more in flight across hosts than the
    limit, a Redis call only when a host needs a slot more (LiteLLM alone: an acquire and a
    release per request), stock pods sharing the gauge, idle slots back after the linger."""
    out = run_python(GAUGE_POOL, child_env(region_path, FL_REDIS_PORT=str(redis_server.port),
                                           FAST_LITELLM_REDIS_GAUGE_LINGER_MS="200", **stock_pod_env()))
    assert sum(out["race"]) == 4, out["race"]
    assert out["members_after_race"] == 0, out
    assert out["sequential"]["codes"] == ["OK"] and out["sequential"]["scripts"] <= 3, out["sequential"]
    assert (out["stock_fourth"], out["stock_fifth"]) == ("OK", "OVER_LIMIT"), out
    assert out["host_fourth"] == "OVER_LIMIT" and out["host_fourth_after_stock"] == "OK", out
    assert out["deferred"] is True and out["in_use_after_release"] == 0, out
    assert out["members_idle"] == 4 and out["read_only_idle"] == "OK", out
    assert out["members_after_linger"] == 0, out
    assert out["leaving"] == {"leaving": 1, "in_redis": 1, "read_only": "OK", "acquire": "OK", "in_redis_after": 1}, out
    assert out["stats"]["takes"] >= 30 and out["stats"]["adds"] >= 1 and out["stats"]["returns"] >= 4, out["stats"]
    # The pool's calls are the host tier's Redis calls in its metrics: each add, and a shrink at least.
    assert out["stats"]["redis_calls"] >= out["stats"]["adds"] + 1, out["stats"]
    assert out["status"]["errors"] == 0, out["status"]
    for suffix in ("-host0", "-host1"):
        if os.path.exists(region_path + suffix):
            os.unlink(region_path + suffix)


GAUGES = PRELUDE + """
team = desc("team", "t1", parallel=2)
ready_r, ready_w = os.pipe()
parent = os.getpid()
holder = os.fork()
if holder == 0:
    lim = new_limiter()
    codes = [asyncio.run(lim.should_rate_limit([team], parallel_slot_id=f"held{i}"))["overall_code"] for i in range(2)]
    os.write(ready_w, b"1" if codes == ["OK", "OK"] else b"0")
    while os.getppid() == parent:  # holds until killed (or until the test's process is gone)
        time.sleep(0.05)
    os._exit(0)
assert os.read(ready_r, 1) == b"1", "the holder took both slots"


async def main():
    lim = new_limiter()
    out = {"blocked": await lim.should_rate_limit([team], parallel_slot_id="p1"),
           "read_only": await lim.should_rate_limit([team], read_only=True)}
    # A release of another process's slot id is not this process's to give back.
    await lim._release_parallel_request_slots(acquisition("held0", [gauge("team", "t1")]))
    out["after_foreign_release"] = await lim.should_rate_limit([team], parallel_slot_id="p2")
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    out["reaped"] = shm.region().reap()
    out["in_use_after_kill"] = shm.region().slots_in_use("{team:t1}:max_parallel_requests")
    out["after_kill"] = [await lim.should_rate_limit([team], parallel_slot_id=f"q{i}") for i in range(3)]
    await lim._release_parallel_request_slots(acquisition("q0", [gauge("team", "t1")]))
    out["in_use_after_release"] = shm.region().slots_in_use("{team:t1}:max_parallel_requests")
    # The breaker opens (ten errors: a clock before 1970, which the region refuses): a slot
    # the region gave before is still given back to it, one taken after is LiteLLM's.
    solo = desc("team", "solo", parallel=5)
    await lim.should_rate_limit([solo], parallel_slot_id="before")
    for _ in range(10):
        await lim.in_memory_cache_sliding_window(window_arg([counter("e", "1", "requests")]), -1, 60)
    out["breaker"] = fast_litellm.status()["rate_limiter"]["breaker"]
    await lim.should_rate_limit([solo], parallel_slot_id="after")
    out["solo_in_use"] = [shm.region().slots_in_use("{team:solo}:max_parallel_requests")]
    for slot_id in ("before", "after"):
        await lim._release_parallel_request_slots(acquisition(slot_id, [gauge("team", "solo")]))
        out["solo_in_use"].append(shm.region().slots_in_use("{team:solo}:max_parallel_requests"))
    out["solo_litellm_registry"] = await litellm_gauge(lim, "team", "solo")
    out["status"] = fast_litellm.status()["rate_limiter"]
    emit(out)


asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_max_parallel_requests_slots_are_host_wide_and_always_given_back(region_path):
    """Holders in other processes count; a killed process's slots come back; a slot taken in
    the region is given back to it even after the breaker turned the component off."""
    out = run_python(GAUGES, child_env(region_path))
    blocked = out["blocked"]
    assert blocked["overall_code"] == "OVER_LIMIT"
    assert blocked["statuses"] == [{"code": "OVER_LIMIT", "current_limit": 2, "limit_remaining": 0,
                                    "rate_limit_type": "max_parallel_requests", "descriptor_key": "team"}]
    assert out["read_only"]["overall_code"] == "OVER_LIMIT"
    assert out["after_foreign_release"]["overall_code"] == "OVER_LIMIT"
    assert out["reaped"] >= 1 and out["in_use_after_kill"] == 0
    assert [r["overall_code"] for r in out["after_kill"]] == ["OK", "OK", "OVER_LIMIT"]
    assert [r["statuses"][0]["limit_remaining"] for r in out["after_kill"]] == [1, 0, 0]
    assert out["in_use_after_release"] == 1
    assert out["breaker"] == "open"
    assert out["solo_in_use"] == [1, 0, 0], "the region slot went back; the later one was LiteLLM's"
    assert out["solo_litellm_registry"] == {}, "LiteLLM took and gave back the one after the breaker"
    assert out["status"]["errors"] == 10 and out["status"]["declined"] == 2


REDIS = PRELUDE + """
from redis.backoff import NoBackoff
from redis.retry import Retry
from litellm.caching.redis_cache import RedisCache

# Redis configured (nobody listens there: only the branch choice is checked, nothing here
# goes to Redis): every accelerated path hands the call to LiteLLM.
redis = RedisCache(host="127.0.0.1", port=int(os.environ["FL_DEAD_PORT"]), retry=Retry(NoBackoff(), 0))
lim = new_limiter(redis_cache=redis)
meta = {"descriptor_key": "user", "descriptor_value": "r", "current_limit": 10, "rate_limit_type": "tokens",
        "increment": 4, "ttl": 60, "window_size": 60}
meta.update({"counter": counter("user", "r", "tokens")} if TYPED else
            {"window_key": "{user:r}:window", "counter_key": "{user:r}:tokens"})
requests = counter("api_key", "r", "requests")


async def main():
    out = {"script": lim.rate_limits.has_redis if TYPED else lim.batch_rate_limiter_script is not None}
    out["window"] = await window_step(lim, [requests], 1000, 60)
    out["read"] = await read_counters(lim, [requests])
    out["acquire"] = await maybe(lim._acquire_parallel_slots_in_memory([gauge_meta("team", "r", 1)], "s1"))
    out["counts"] = await maybe(lim._read_local_gauge_counts([gauge("team", "r")]))
    # Redis is down: LiteLLM's release script fails and it releases in memory.
    await lim._release_parallel_request_slots(acquisition("s1", [gauge("team", "r")]))
    out["counts_after_release"] = await maybe(lim._read_local_gauge_counts([gauge("team", "r")]))
    out["reserve"] = await maybe(lim._atomic_check_and_increment_in_memory([meta]))
    out["reserve"].pop("reservation_windows")
    region = shm.region()
    out["region"] = [region.window_get("{api_key:r}:window", "{api_key:r}:requests"),
                     region.window_get("{user:r}:window", "{user:r}:tokens"),
                     region.slots_in_use("{team:r}:max_parallel_requests")]
    out["status"] = fast_litellm.status()["rate_limiter"]
    emit(out)


asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_with_redis_configured_and_the_host_tier_off_litellm_keeps_its_own_path(region_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    # The host tier off: with it on, the rpm pre-read and window step are its own
    # (test_with_redis_rpm_windows_and_tpm_reservations_go_through_the_host_tier).
    out = run_python(REDIS, child_env(region_path, FL_DEAD_PORT=str(dead_port), FAST_LITELLM_HOST_TIER="off"))
    assert out["script"]
    # (LiteLLM's cache decodes the window start to an int up to 1.109; 1.110's store keeps the str.)
    assert out["window"] == ["1000", 1] and out["read"] in ([1000, 1], ["1000", 1]), "LiteLLM's in-memory mirror answered"
    assert out["acquire"]["overall_code"] == "OK" and out["counts"] == [1] and out["counts_after_release"] == [0]
    assert out["reserve"]["statuses"][0]["limit_remaining"] == 6
    assert out["region"] == [[None, None], [None, None], 0], "nothing went to the region"
    assert out["status"]["state"] == "on" and out["status"]["errors"] == 0
    assert out["status"]["declined"] == 7 and out["status"]["calls"] == 0


FAIL_CLOSED = PRELUDE + """
from litellm.caching.redis_cache import RedisCache
from fast_litellm import limiter_host_tier

# LiteLLM's fail_closed_rate_limit_enforcement with a Redis that refuses connections: the tier's
# leases are empty, so a check it cannot verify is refused as LiteLLM refuses it (a 503), not
# admitted by the down policy; with fail-closed off the policy admits (local-share).
region_path = os.environ["FAST_LITELLM_SHM"] + "-closed"
limiter_host_tier._region = shm.Region(region_path)
rpm, tpm = desc("api_key", "fc", rpm=100), desc("team", "fc", tpm=1000)


def limiter(fail_closed):
    lim = new_limiter(redis_cache=RedisCache(host="127.0.0.1", port=int(os.environ["FL_DEAD_PORT"])))
    lim._fail_closed_resolver = lambda: fail_closed
    return lim


async def answers(lim):
    out = []
    for check in (lambda: lim.should_rate_limit([rpm, tpm], skip_tpm_check=True),
                  lambda: lim.reserve_tpm_tokens([tpm], 10)):
        try:
            out.append((await check())["overall_code"])
        except Exception as error:
            out.append(f"{type(error).__name__} {getattr(error, 'status_code', '')}")
    return out


out = {"tier_closed": asyncio.run(answers(limiter(True)))}
region = shm.Region(region_path)
out["refusals"] = region.counter_get("tier:stat:unverifiable_refusals")
out["debt"] = [region.counter_get(f"tier-debt:{{{d['key']}:fc}}:{kind}") for d, kind in ((rpm, "requests"), (tpm, "tokens"))]
out["tier_open"] = asyncio.run(answers(limiter(False)))
out["status"] = fast_litellm.status()["rate_limiter"]
fast_litellm.remove_acceleration()
out["litellm_closed"] = asyncio.run(answers(limiter(True)))
emit(out)
"""


@pytest.mark.timeout(60)
def test_with_redis_unreachable_litellms_fail_closed_setting_refuses_what_the_tier_cannot_verify(region_path):
    if not hasattr(__import__("litellm.proxy.hooks.parallel_request_limiter_v3", fromlist=["x"]),
                   "RateLimitUnverifiableError"):
        pytest.skip("this LiteLLM has no fail_closed_rate_limit_enforcement (from 1.105)")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    out = run_python(FAIL_CLOSED, child_env(region_path, FL_DEAD_PORT=str(dead_port)))
    assert out["litellm_closed"] == ["RateLimitUnverifiableError 503"] * 2, out
    assert out["tier_closed"] == out["litellm_closed"], out
    assert out["refusals"] == 2 and out["debt"] == [None, None], out  # refused: nothing admitted, nothing owed
    assert out["tier_open"] == ["OK", "OK"], out
    assert out["status"]["errors"] == 0, out["status"]
    if os.path.exists(region_path + "-closed"):
        os.unlink(region_path + "-closed")


FULL_TABLE = PRELUDE + """
lim = new_limiter()


async def main():
    region = shm.region()
    filled = 0
    try:
        while True:
            region.counter_add(f"filler-{filled}", 1)
            filled += 1
    except shm.RegionFullError:
        pass
    response = await lim.should_rate_limit([desc("api_key", "new", rpm=5)])
    reserve = await lim.reserve_tpm_tokens([desc("user", "new", tpm=100)], 10)
    emit({"filled": filled, "code": response["overall_code"], "reserve": reserve["overall_code"],
          "status": fast_litellm.status()["rate_limiter"]})


asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_a_full_table_follows_the_policy(region_path):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = {policy: pool.submit(run_python, FULL_TABLE, child_env(
            f"{region_path}-{policy}", FAST_LITELLM_SHM_CAPACITY="64", FAST_LITELLM_SHM_FULL_POLICY=policy))
            for policy in ("open", "closed")}
        try:
            fail_open, fail_closed = runs["open"].result(), runs["closed"].result()
        finally:
            for policy in runs:
                if os.path.exists(f"{region_path}-{policy}"):
                    os.unlink(f"{region_path}-{policy}")
    assert fail_open["filled"] > 0 and fail_closed["filled"] > 0
    # Open: LiteLLM's own per-worker counters decide. Closed: refused.
    assert (fail_open["code"], fail_open["reserve"]) == ("OK", "OK") and fail_open["status"]["declined"] == 2
    assert (fail_closed["code"], fail_closed["reserve"]) == ("OVER_LIMIT", "OVER_LIMIT")
    assert fail_closed["status"]["declined"] == 0
    assert fail_open["status"]["errors"] == 0 and fail_closed["status"]["errors"] == 0


WHOLE = PRELUDE + """
lim = new_limiter()


async def main():
    await lim.should_rate_limit([desc("user", "w", tpm=100)])  # opens the window, counts 1 token
    counts = []
    for amount in (2.5, 4.0, -2):
        await lim.async_increment_tokens_with_ttl_preservation(pipeline_operations=[increment("user", "w", "tokens", amount, 60)])
        counts.append(shm.region().window_get("{user:w}:window", "{user:w}:tokens")[1])
    emit({"counts": counts, "status": fast_litellm.status()["rate_limiter"]})


asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_an_increment_the_region_cannot_count_exactly_is_declined(region_path):
    """Counts are whole numbers: a fractional increment goes to LiteLLM's own counters."""
    out = run_python(WHOLE, child_env(region_path))
    assert out["counts"] == [1, 5, 3]
    assert out["status"]["declined"] >= 1 and out["status"]["errors"] == 0


FLAG_OFF = PRELUDE + """
per_process = run_forked(2, lambda i: admitted(new_limiter(), [desc("api_key", "k", rpm=10)] * 20))
emit({"per_process": per_process, "status": fast_litellm.status()["rate_limiter"]})
"""


@pytest.mark.timeout(60)
def test_with_the_flag_off_each_process_counts_alone(region_path):
    out = run_python(FLAG_OFF, child_env(region_path, FAST_LITELLM_RUST_RATE_LIMITING="false"))
    assert out["per_process"] == [10, 10], "two workers admit twice the limit, as LiteLLM does"
    assert out["status"]["state"] == "off" and out["status"]["patched"] == []


CHANGED_LITELLM = """
import logging, os
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
from litellm.proxy.hooks import parallel_request_limiter_v3 as prl

messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append((record.levelname, record.getMessage()))
logging.getLogger("fast_litellm").addHandler(handler)
# A LiteLLM other than the ones these patches were written against: one method gone, one
# with another signature (in every release's shape).
cls = prl._PROXY_MaxParallelRequestsHandler_v3
original_window = cls.in_memory_cache_sliding_window
del cls._read_local_gauge_counts
cls._acquire_parallel_slots_in_memory = lambda self, gauges: None
import fast_litellm
emit({"status": fast_litellm.status()["rate_limiter"], "messages": messages,
      "window_untouched": cls.in_memory_cache_sliding_window is original_window})
"""


@pytest.mark.timeout(60)
def test_a_litellm_that_differs_leaves_the_component_off_and_says_why(region_path):
    out = run_python(CHANGED_LITELLM, child_env(region_path))
    status = out["status"]
    assert status["state"] == "off" and status["patched"] == [] and out["window_untouched"]
    assert "_read_local_gauge_counts" in status["reason"] and "_acquire_parallel_slots_in_memory" in status["reason"]
    warnings = [m for level, m in out["messages"] if level == "WARNING" and "rate_limiter" in m]
    assert len(warnings) == 1, warnings
    assert "_PROXY_MaxParallelRequestsHandler_v3._read_local_gauge_counts missing" in warnings[0], warnings
    assert "_PROXY_MaxParallelRequestsHandler_v3._acquire_parallel_slots_in_memory('self', 'gauges') is not" in warnings[0]
    # Nothing else is named: the other functions match the closer shape.
    assert warnings[0].count(" is not ") == 1 and warnings[0].count(" missing") == 1, warnings

