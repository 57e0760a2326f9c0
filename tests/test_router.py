"""router: LiteLLM's Router state (usage counters, cooldowns, per-deployment slots) shared by
every process of the host, with the real LiteLLM and no network: deployments point at a closed
local port and answer with LiteLLM's `mock_response`, or their callbacks are called directly.

Each scenario is a fresh interpreter that imports LiteLLM and fast_litellm once and forks its
workers, as `gunicorn --preload` does."""

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from subproc import run_python

PRELUDE = '''
import asyncio, json, os, signal, time, traceback
import litellm
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
litellm.suppress_debug_info = True
MESSAGES = [{"role": "user", "content": "hi"}]

def deployment(group, model, **params):
    return {"model_name": group, "litellm_params": {
        "model": model, "api_key": "sk-x", "api_base": "http://127.0.0.1:9/v1", **params}}

def cooldown_reader(name):
    """LiteLLM's cooldown list readers: public from 1.106 (`get_cooldown_deployments`), `_`-named
    before (the `_` names stay as aliases after)."""
    from litellm.router_utils import cooldown_handlers
    return getattr(cooldown_handlers, name, None) or getattr(cooldown_handlers, "_" + name)

def clear_of_minute_change(seconds):
    """LiteLLM's usage counters are per UTC minute: start where the next `seconds` stay in one."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)

async def ask(router, group):
    """One completion through the router: "ok", or the error's type."""
    try:
        await router.acompletion(model=group, messages=MESSAGES, num_retries=0)
        return "ok"
    except Exception as e:
        return type(e).__name__

async def settled():
    """Lets LiteLLM's success and failure callbacks of the calls so far run."""
    await GLOBAL_LOGGING_WORKER.flush()
    await asyncio.sleep(0.2)

def together(n, work):
    """work(i) in n forked workers that start at the same moment; their JSON results."""
    go_r, go_w = os.pipe()
    workers = []
    for i in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)
                os.write(w, json.dumps(work(i)).encode())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w)
        workers.append((pid, r))
    os.close(go_w)
    results = []
    for pid, r in workers:
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "worker failed"
        results.append(json.loads(data))
    return results
'''


def scenario(code, region_path, **env):
    return run_python(PRELUDE + textwrap.dedent(code), {"FAST_LITELLM_SHM": region_path, **env}, timeout=200)


def both_ways(code, region_path):
    """The scenario with the router component on, and with FAST_LITELLM_RUST_ROUTER=false,
    run at the same time, each on its own region."""
    off_path = region_path + "-off"
    try:
        with ThreadPoolExecutor(2) as pool:
            on = pool.submit(scenario, code, region_path)
            off = pool.submit(scenario, code, off_path, FAST_LITELLM_RUST_ROUTER="false")
            return on.result(), off.result()
    finally:
        if os.path.lexists(off_path):
            os.unlink(off_path)


USAGE = """
import fast_litellm
clear_of_minute_change(6)
ENFORCED = deployment("m", "openai/gpt-4o", rpm=10, mock_response="hi")       # enforce_model_rate_limits
BALANCED = deployment("u", "openai/gpt-4o-mini", rpm=10, mock_response="hi")  # usage-based-routing-v2

def worker(i):
    if i < 2:
        router = litellm.Router(model_list=[ENFORCED], optional_pre_call_checks=["enforce_model_rate_limits"])
        group = "m"
    else:
        router = litellm.Router(model_list=[BALANCED], routing_strategy="usage-based-routing-v2")
        group = "u"
    async def run():
        answers = [await ask(router, group) for _ in range(12)]
        await settled()
        return answers
    return asyncio.run(run())

answers = together(4, worker)
# Another process of the host reads the global_router: counters the workers' calls wrote.
reader = litellm.Router(model_list=[ENFORCED, BALANCED])
usage = {group: asyncio.run(reader.get_model_group_usage(group)) for group in ("m", "u")}
emit({"enforced": answers[:2], "balanced": answers[2:], "usage": usage, "router": fast_litellm.status()["router"]})
"""


@pytest.mark.timeout(240)
def test_usage_counters_are_host_wide_and_per_process_with_the_flag_off(region_path):
    on, off = both_ways(USAGE, region_path)

    def admitted(workers):
        return [answers.count("ok") for answers in workers]

    # With the flag off each process has its own counters: rpm 10 admits 10 in each of the
    # two, and usage-based-routing-v2 admits in each what one process alone admits.
    assert admitted(off["enforced"]) == [10, 10]
    alone = admitted(off["balanced"])[0]
    assert admitted(off["balanced"]) == [alone, alone] and 0 < alone <= 10
    assert off["usage"] == {"m": [None, None], "u": [None, None]}, "a third process sees nothing"
    assert off["router"]["state"] == "off"
    # On, the two processes together admit what one admits alone; refusals are LiteLLM's 429s.
    assert sum(admitted(on["enforced"])) == 10
    # (ubr-v2's selection stops picking a deployment once rpm + 1 reaches its limit, its
    # pre-call check at the limit itself: two processes that pick at the same count can
    # together reach the limit, never pass it.)
    balanced = sum(admitted(on["balanced"]))
    assert alone <= balanced <= 10
    for answers in on["enforced"] + on["balanced"]:
        assert set(answers) <= {"ok", "RateLimitError"}
    # The global_router: counters of every call, seen from a third process: one request per
    # admitted call, and LiteLLM's mock usage of 30 tokens each.
    assert on["usage"]["m"] == [30 * 10, 10]
    assert on["usage"]["u"] == [30 * balanced, balanced]
    assert on["router"]["state"] == "on" and on["router"]["errors"] == 0


COOLDOWN = """
# A Router built before fast_litellm is imported: its bound failure callback is re-bound.
FAILING = deployment("m", "openai/gpt-4o", rpm=100, mock_response="litellm.RateLimitError")
HEALTHY = deployment("m", "openai/gpt-4o-mini", rpm=100, mock_response="hi")
router = litellm.Router(model_list=[FAILING, HEALTHY], cooldown_time=1.5, num_retries=0)
import fast_litellm
async_get_cooldown_deployments_with_debug_info = cooldown_reader("async_get_cooldown_deployments_with_debug_info")
clear_of_minute_change(6)
failing_id, healthy_id = router.get_model_ids()

def fail_once(_):
    async def run():
        answers = []
        while "RateLimitError" not in answers:
            answers.append(await ask(router, "m"))
        await settled()
        cooldowns = await async_get_cooldown_deployments_with_debug_info(router, None)
        return {"answers": answers, "cooldowns": cooldowns, "at": time.time()}
    return asyncio.run(run())

def other_process(_):
    async def picks(n):
        return [(await router.async_get_available_deployment(model="m", request_kwargs={}, messages=MESSAGES))["model_info"]["id"]
                for _ in range(n)]
    async def run():
        seen = {"cooldowns": await async_get_cooldown_deployments_with_debug_info(router, None),
                "min_cooldown": router.cooldown_cache.get_min_cooldown([failing_id, healthy_id], None),
                "picks": await picks(20), "usage": await router.get_model_group_usage("m")}
        time.sleep(max(0.0, failed["cooldowns"][0][1]["timestamp"] + 1.5 - time.time()) + 0.1)
        seen["cooldowns_after"] = await async_get_cooldown_deployments_with_debug_info(router, None)
        seen["picks_after"] = await picks(40)
        return seen
    return asyncio.run(run())

[failed] = together(1, fail_once)
[seen] = together(1, other_process)
emit({"failed": failed, "seen": seen, "ids": [failing_id, healthy_id], "router": fast_litellm.status()["router"]})
"""


@pytest.mark.timeout(240)
def test_a_cooldown_set_in_one_process_is_honoured_in_another_and_expires(region_path):
    result = scenario(COOLDOWN, region_path)
    failing_id, healthy_id = result["ids"]
    failed, seen = result["failed"], result["seen"]
    # LiteLLM cooled the failing deployment down in the worker that saw the 429, with the exact
    # CooldownCacheValue it keeps.
    [(cooled, own)] = failed["cooldowns"]
    assert cooled == failing_id
    assert own["status_code"] == "429" and own["cooldown_time"] == 1.5
    assert own["exception_received"].startswith("litellm.RateLimitError: this is a mock rate limit")
    # Another process sees the same cooldown (its exception text is not shared) and skips it.
    [(cooled, shared)] = seen["cooldowns"]
    assert cooled == failing_id
    assert shared["status_code"] == "429" and shared["cooldown_time"] == 1.5
    assert abs(shared["timestamp"] - own["timestamp"]) < 0.001
    assert shared["exception_received"] == "(set by another process; exception text not shared)"
    assert seen["min_cooldown"] == 1.5
    assert set(seen["picks"]) == {healthy_id}
    # Every call the first worker made counted in the global_router: rpm counter, the failure
    # through the failure callback of a Router built before fast_litellm was imported.
    assert seen["usage"][1] == len(failed["answers"])
    # Once the cooldown is over, every process routes to the deployment again.
    assert seen["cooldowns_after"] == []
    assert set(seen["picks_after"]) == {failing_id, healthy_id}
    assert result["router"]["errors"] == 0


SLOTS = """
import fast_litellm
from fast_litellm import shm
router = litellm.Router(model_list=[deployment("m", "openai/gpt-4o", max_parallel_requests=2, mock_response="hi")])
[dep] = router.get_model_list()
# The deployment's slot limit: `_get_client` up to 1.109, `registry().client` from 1.110.
get_client = getattr(router, "_get_client", None)
limit = (get_client(deployment=dep, kwargs={}, client_type="max_parallel_requests") if get_client is not None
         else router.registry().client(dep, client_type="max_parallel_requests"))
key = f"deployment:{limit.model_id}:max_parallel_requests"
region = shm.region()

held_r, held_w = os.pipe()
holder = os.fork()
if holder == 0:  # takes both slots, then hangs until killed
    limit.acquire()
    limit.acquire()
    os.write(held_w, b"H")
    time.sleep(60)
    os._exit(0)
assert os.read(held_r, 1) == b"H"

seen = {"in_use": region.slots_in_use(key)}
try:
    limit.acquire()
    seen["third"] = "admitted"
except litellm.RateLimitError as e:
    seen["third"] = [str(e), e.rate_limit_type, e.category]
seen["completion"] = asyncio.run(ask(router, "m"))
os.kill(holder, signal.SIGKILL)
os.waitpid(holder, 0)
region.reap()
seen["after_reap"] = region.slots_in_use(key)
limit.acquire()
seen["after"] = [region.slots_in_use(key), limit.in_flight]
limit.release()
seen["released"] = [region.slots_in_use(key), limit.in_flight]
seen["completion_after"] = asyncio.run(ask(router, "m"))
seen["id"] = limit.model_id
seen["router"] = fast_litellm.status()["router"]
emit(seen)
"""


@pytest.mark.timeout(240)
def test_max_parallel_requests_slots_hold_across_processes_and_come_back_when_the_holder_dies(region_path):
    seen = scenario(SLOTS, region_path)
    assert seen["in_use"] == 2
    message, rate_limit_type, category = seen["third"]
    assert f"id={seen['id']} already has max_parallel_requests=2 requests in flight" in message
    assert (rate_limit_type, category) == ("concurrent_requests", "litellm_rate_limit")
    assert seen["completion"] == "RateLimitError", "a real call through the router is refused too"
    assert seen["after_reap"] == 0
    assert seen["after"] == [1, 1]
    assert seen["released"] == [0, 0]
    assert seen["completion_after"] == "ok"
    assert seen["router"]["errors"] == 0


PARITY = """
import random
import fast_litellm
from litellm.router_utils.client_initalization_utils import MaxParallelRequestsLimit
from litellm.router_utils.pre_call_checks.model_rate_limit_check import ModelRateLimitingCheck
from litellm.router_utils.router_callbacks import track_deployment_metrics as metrics

def outcome(call, *args, **kwargs):
    try:
        result = call(*args, **kwargs)
    except Exception as e:
        response = getattr(e, "response", None)
        return [type(e).__name__, str(e), response.text if response is not None else None]
    return result["model_info"]["id"] if isinstance(result, dict) and "model_info" in result else result

async def aoutcome(call, *args, **kwargs):
    try:
        result = await call(*args, **kwargs)
    except Exception as e:
        response = getattr(e, "response", None)
        return [type(e).__name__, str(e), response.text if response is not None else None]
    return result["model_info"]["id"] if isinstance(result, dict) and "model_info" in result else result

def logged(model_id, model, tokens, group):
    return {"standard_logging_object": {"model_group": group, "model_id": model_id, "total_tokens": tokens,
                                        "hidden_params": {"litellm_model_name": model}},
            "litellm_params": {"metadata": {"model_group": group, "deployment": model}, "model_info": {"id": model_id}}}

def without_minute(key):
    # A global_router key ends in the UTC minute it counts in; the two runs may be in two.
    if key is None:
        return None
    stem, minute = key.rsplit(":", 1)
    assert len(minute) == 5 and minute[2] == "-" and (minute[:2] + minute[3:]).isdigit(), key
    return stem

def cooldowns(values):
    # The timestamps are the clock's: each run has its own.
    return [[model_id, {k: v for k, v in value.items() if k != "timestamp"}] for model_id, value in values]

async def main():
    out = {}
    now = time.time()
    # usage-based-routing-v2: tpm counts, selection, rpm checks
    router = litellm.Router(model_list=[deployment("u", "openai/gpt-4o", rpm=3, tpm=1000),
                                        deployment("u", "openai/gpt-4o-mini", rpm=4)],
                            routing_strategy="usage-based-routing-v2")
    ubr = router.lowesttpm_logger_v2
    a, b = router.get_model_list("u")
    ubr.log_success_event(logged(a["model_info"]["id"], "openai/gpt-4o", 120, "u"), None, now, now)
    await ubr.async_log_success_event(logged(b["model_info"]["id"], "openai/gpt-4o-mini", 50, "u"), None, now, now)
    out["pick_sync"] = outcome(ubr.get_available_deployments, "u", [a, b], messages=MESSAGES)
    out["pick_async"] = await aoutcome(ubr.async_get_available_deployments, "u", [a, b], messages=MESSAGES)
    out["pick_router"] = await aoutcome(router.async_get_available_deployment, model="u", request_kwargs={}, messages=MESSAGES)
    out["ubr_sync"] = [outcome(ubr.pre_call_check, a) for _ in range(5)]
    out["ubr_async"] = [await aoutcome(ubr.async_pre_call_check, b, None) for _ in range(6)]
    out["none_sync"] = outcome(ubr.get_available_deployments, "u", [a, b], messages=MESSAGES)
    out["none_async"] = await aoutcome(ubr.async_get_available_deployments, "u", [a, b], messages=MESSAGES)
    out["none_router"] = await aoutcome(router.async_get_available_deployment, model="u", request_kwargs={}, messages=MESSAGES)

    # global_router: counters, per UTC minute: written and read back in one
    clear_of_minute_change(10)
    a_id = a["model_info"]["id"]
    out["success"] = without_minute(
        await router.deployment_callback_on_success(logged(a_id, "openai/gpt-4o", 70, "u"), None, now, now))
    out["sync_success"] = router.sync_deployment_callback_on_success(logged(a_id, "openai/gpt-4o", 70, "u"), None, now, now)
    await router.async_deployment_callback_on_failure(logged(a_id, "openai/gpt-4o", 0, "u"), None, now, now)
    out["usage"] = await router.get_model_group_usage("u")
    out["remaining"] = await router.get_remaining_model_group_usage("u")

    # enforce_model_rate_limits
    limited = litellm.Router(model_list=[deployment("m", "openai/gpt-3.5-turbo", rpm=3, tpm=100)],
                             optional_pre_call_checks=["enforce_model_rate_limits"])
    [check] = [c for c in limited.optional_callbacks if isinstance(c, ModelRateLimitingCheck)]
    [m] = limited.get_model_list("m")
    out["mrl_rpm"] = [await aoutcome(check.async_pre_call_check, m) for _ in range(4)] + [outcome(check.pre_call_check, m)]
    check.log_success_event(logged(m["model_info"]["id"], "openai/gpt-3.5-turbo", 150, "m"), None, now, now)
    await check.async_log_success_event(logged(m["model_info"]["id"], "openai/gpt-3.5-turbo", 5, "m"), None, now, now)
    out["mrl_tpm"] = [outcome(check.pre_call_check, m), await aoutcome(check.async_pre_call_check, m)]
    # Daily limits (LiteLLM 1.109 on; before, rpd/tpd are not read and every call is admitted).
    daily = litellm.Router(model_list=[deployment("d", "openai/gpt-4o-mini", rpm=10, rpd=2, tpd=100)],
                           optional_pre_call_checks=["enforce_model_rate_limits"])
    [daily_check] = [c for c in daily.optional_callbacks if isinstance(c, ModelRateLimitingCheck)]
    [d] = daily.get_model_list("d")
    out["mrl_daily"] = [await aoutcome(daily_check.async_pre_call_check, d), outcome(daily_check.pre_call_check, d),
                        await aoutcome(daily_check.async_pre_call_check, d), outcome(daily_check.pre_call_check, d)]
    daily_check.log_success_event(logged(d["model_info"]["id"], "openai/gpt-4o-mini", 150, "d"), None, now, now)
    out["mrl_daily_tpd"] = [outcome(daily_check.pre_call_check, d), await aoutcome(daily_check.async_pre_call_check, d)]

    # cooldowns, and the counters that decide them
    pair = litellm.Router(model_list=[deployment("c", "openai/gpt-4o", rpm=50), deployment("c", "openai/gpt-4o-mini", rpm=50)],
                          allowed_fails=1, cooldown_time=30)
    x, y = pair.get_model_ids()
    store = pair.cooldown_cache
    started = time.time()
    store.add_deployment_to_cooldown(x, Exception("upstream said no " * 5), 429, 0.6)
    out["active"] = cooldowns(store.get_active_cooldowns([x, y], None))
    out["active_async"] = cooldowns(await store.async_get_active_cooldowns([x, y], None))
    out["timestamp_is_now"] = abs(store.get_active_cooldowns([x], None)[0][1]["timestamp"] - started) < 0.05
    out["min"] = [store.get_min_cooldown([x, y], None), store.get_min_cooldown([y], None)]
    out["listed"] = [cooldown_reader("get_cooldown_deployments")(pair, None),
                     await cooldown_reader("async_get_cooldown_deployments")(pair, None)]
    out["picks"] = sorted({(await pair.async_get_available_deployment(model="c", request_kwargs={}, messages=MESSAGES))["model_info"]["id"]
                           for _ in range(10)})
    time.sleep(0.3)
    store.add_deployment_to_cooldown(x, Exception("again"), 500, 0.6)  # while the first runs
    out["again"] = cooldowns(store.get_active_cooldowns([x, y], None))
    time.sleep(max(0.0, started + 0.65 - time.time()))
    out["after_first_end"] = cooldowns(store.get_active_cooldowns([x, y], None))
    # A cooldown set again, shorter, while one runs; then set once that one is over (LiteLLM's
    # in-memory key, up to 1.109, or its native store, from 1.110, decides how long it lasts).
    re_started = time.time()
    store.add_deployment_to_cooldown("re", Exception("first"), 429, 1.0)
    store.add_deployment_to_cooldown("re", Exception("short"), 429, 0.2)
    out["re_running"] = [cooldowns(store.get_active_cooldowns(["re", x], None)), store.get_min_cooldown(["re"], None)]
    time.sleep(max(0.0, re_started + 0.3 - time.time()))
    out["re_short_over"] = cooldowns(store.get_active_cooldowns(["re"], None))
    store.add_deployment_to_cooldown("re", Exception("after"), 503, 2.0)
    out["re_after"] = cooldowns(await store.async_get_active_cooldowns(["re"], None))
    time.sleep(max(0.0, re_started + 1.3 - time.time()))
    out["re_past_first"] = [cooldowns(store.get_active_cooldowns(["re"], None)), store.get_min_cooldown(["re"], None)]
    failure = {"exception": litellm.InternalServerError("boom", llm_provider="openai", model="gpt-4o-mini"),
               "litellm_params": {"metadata": {"model_group": "c"}, "model_info": {"id": y}}}
    out["cool_y"] = [pair.deployment_callback_on_failure(failure, None, now, now) for _ in range(3)]
    for _ in range(2):
        metrics.increment_deployment_successes_for_current_minute(pair, x)
    out["minute"] = [metrics.get_deployment_successes_for_current_minute(pair, x),
                     metrics.get_deployment_failures_for_current_minute(pair, y)]
    out["listed_y"] = cooldown_reader("get_cooldown_deployments")(pair, None)

    # max_parallel_requests
    limit = MaxParallelRequestsLimit(max_parallel_requests=2, model_id="parity", model_group="p")
    out["slots"] = [outcome(limit.acquire), outcome(limit.acquire), outcome(limit.acquire), limit.in_flight]
    limit.release()
    out["slots"] += [limit.in_flight, outcome(limit.acquire), limit.in_flight]
    limit.release()
    limit.release()
    out["slots"].append(limit.in_flight)
    return out

clear_of_minute_change(6)
random.seed(3)
emit({"out": asyncio.run(main()), "router": fast_litellm.status()["router"]})
"""


@pytest.mark.timeout(240)
def test_decisions_and_values_are_litellms_own_in_one_process(region_path):
    on, off = both_ways(PARITY, region_path)
    assert off["router"]["state"] == "off"
    assert on["router"]["state"] == "on" and on["router"]["errors"] == 0 and on["router"]["fallbacks"] == 0
    assert on["router"]["calls"] > 50
    for name, value in off["out"].items():
        assert on["out"][name] == value, name
    out = on["out"]
    # The sequence exercised what it is meant to: refusals, selection, expiry.
    assert [r[0] for r in out["ubr_sync"][3:]] == ["RateLimitError"] * 2
    assert out["none_sync"][0] == "ValueError" and out["none_async"][0] == "RateLimitError"
    assert [r if isinstance(r, str) else r[0] for r in out["mrl_rpm"]] == [out["mrl_rpm"][0]] * 3 + ["RateLimitError"] * 2
    assert "TPM limit=100, current usage=155" in out["mrl_tpm"][1][1]
    assert out["usage"] == [70, 2]
    assert out["active"] and out["after_first_end"] == []
    assert out["cool_y"] == [False, True, True] and out["minute"] == [2, 3]


REDIS = """
import fast_litellm
from fast_litellm import shm
router = litellm.Router(model_list=[deployment("u", "openai/gpt-4o", rpm=2)], routing_strategy="usage-based-routing-v2",
                        redis_host="127.0.0.1", redis_port=REDIS_PORT)
[dep] = router.get_model_list("u")
clear_of_minute_change(5)
answers = []
for _ in range(3):
    try:
        router.lowesttpm_logger_v2.pre_call_check(dep)
        answers.append("ok")
    except litellm.RateLimitError:
        answers.append("RateLimitError")
rpm_key = f"{dep['model_info']['id']}:openai/gpt-4o:rpm:{time.strftime('%H-%M', time.gmtime())}"
emit({"answers": answers, "in_redis": router.cache.redis_cache.get_cache(rpm_key),
      "in_region": shm.region().counter_get(rpm_key), "router": fast_litellm.status()["router"]})
"""


@pytest.fixture
def redis_port():
    """A throwaway redis-server on 127.0.0.1, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        # make test installs it; only a bare pytest run outside CI may go without.
        if os.environ.get("CI"):
            pytest.fail("redis-server not installed: scripts/ensure-redis.sh")
        pytest.skip("redis-server not installed (scripts/ensure-redis.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.timeout(240)
def test_with_redis_litellms_own_path_runs(region_path, redis_port):
    result = scenario(f"REDIS_PORT = {redis_port}\n" + REDIS, region_path)
    # LiteLLM counted the two admitted calls in Redis and refused the third from its own count;
    # the region holds nothing.
    assert result["answers"] == ["ok", "ok", "RateLimitError"]
    assert result["in_redis"] == 2 and result["in_region"] is None
    assert result["router"]["declined"] == 3 and result["router"]["calls"] == 0
