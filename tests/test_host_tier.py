"""The host tier (fast_litellm.host_tier): several "hosts", each a group of real worker
processes sharing its own region, in front of one real redis-server, on LiteLLM v3's keys."""

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from subproc import host_tier_metrics

HERE = os.path.dirname(__file__)


def pair(descriptor, limit, cost=1, window_s=60):
    """One LiteLLM v3 (window, counter) pair for an rpm limit of `descriptor`."""
    return [f"{{{descriptor}}}:window", f"{{{descriptor}}}:requests", limit, cost, window_s, window_s]


class Hosts:
    """Worker processes, grouped into hosts by region."""

    def __init__(self, redis_server, tmp_path):
        self.redis = redis_server
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex[:8]
        self.procs = []

    def region(self, host):
        return f"/dev/shm/fl-host-{self.tag}-{host}"

    def start(self, host, requests, hosts, **extra):
        plan = {"region": self.region(host), "redis_port": self.redis.port, "hosts": hosts,
                "requests": requests, **extra}
        path = self.tmp / f"plan-{len(self.procs)}.json"
        path.write_text(json.dumps(plan))
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "host_worker.py"), str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "FAST_LITELLM_DISABLE": "1"})
        self.procs.append(p)
        return p

    def wait_ready(self, p):
        # Byte by byte from the pipe: a buffered readline() may read the worker's JSON line
        # ahead with "ready", and communicate() (which reads the pipe itself) would then miss it.
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(p.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
        assert line.strip() == b"ready", p.stderr.read()

    def reports(self, procs=None):
        out = []
        for p in procs or self.procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr
            out.append({**json.loads(stdout.strip().splitlines()[-1]), "log": stderr})
        return out

    def results(self, procs=None):
        return [r["admitted"] for r in self.reports(procs)]

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in os.listdir("/dev/shm"):
            if f.startswith(f"fl-host-{self.tag}-"):
                os.unlink(os.path.join("/dev/shm", f))


@pytest.fixture
def hosts(redis_server, tmp_path):
    h = Hosts(redis_server, tmp_path)
    yield h
    h.cleanup()


def admitted_by_window(results):
    """(counter key, Redis window start) -> units admitted, over every worker."""
    seen = collections.Counter()
    for worker in results:
        for request in worker:
            for counter_key, window, cost in request["limits"]:
                seen[(counter_key, window)] += cost
    return seen


def spent_inside_their_windows(results, window_s):
    """A unit taken from a lease (no Redis call) is taken before its Redis window ends: the
    request was asked for before start + window_s (Redis TIME and time.time() share a host)."""
    late = [r for worker in results for r in worker
            if r["local"] and any(r["asked"] >= w + window_s for _, w, _ in r["limits"])]
    assert not late, late[:3]


def test_a_key_gets_exactly_its_limit_across_three_hosts_and_never_more(hosts):
    limit = [pair("api_key:hot", 30)]
    for host in range(3):
        for _ in range(2):
            hosts.start(host, [[limit, random.random() * 0.5] for _ in range(20)], hosts=3)
    results = hosts.results()
    per_window = admitted_by_window(results)
    assert list(per_window.values()) == [30], per_window
    served = [len(worker) for worker in results]
    assert sum(1 for w in served if w) >= 4, f"the limit was shared, not taken by one host: {served}"
    assert int(hosts.redis.client().get("{api_key:hot}:requests")) == 30


def test_a_hot_key_keeps_its_limit_with_a_small_fraction_of_the_redis_calls(hosts):
    """3 hosts x 2 workers, 4,002 requests over 3 s against rpm 3,000. LiteLLM's own path
    makes one script call per request; the documented bound (docs/host-tier.md) is
    H*W*(2*ceil(log2(L/2H)) + 2) refills plus H*W dry polls per second refused."""
    limit = [pair("api_key:hotter", 3000)]
    before = hosts.redis.scripts_run()
    for host in range(3):
        for _ in range(2):
            hosts.start(host, [[limit, 3.0 * i / 667] for i in range(667)], hosts=3, concurrency=8)
    results = hosts.results()
    calls = hosts.redis.scripts_run() - before
    assert list(admitted_by_window(results).values()) == [3000]
    seen = host_tier_metrics(hosts.region(0))
    assert 0 < seen["redis_calls"] <= calls and seen["granted_units"] >= 1, seen
    bound = 3 * 2 * (2 * 9 + 2) + 3 * 2 * 60
    assert calls <= bound, (calls, bound)
    assert calls < 4002 / 10, f"{calls} Redis calls for 4,002 requests"


def test_two_thousand_keys_at_rpm_1_refuse_every_second_request(hosts):
    keys = [f"api_key:cold-{i}" for i in range(2000)]
    plans = collections.defaultdict(list)
    for i, key in enumerate(keys):
        first, second = random.sample(range(6), 2)  # two different workers, often two hosts
        plans[first].append([[pair(key, 1)], 0.0])
        plans[second].append([[pair(key, 1)], 0.0])
    before = hosts.redis.scripts_run()
    for worker in range(6):
        hosts.start(worker // 2, plans[worker], hosts=3, concurrency=16)
    per_window = admitted_by_window(hosts.results())
    assert len(per_window) == 2000 and set(per_window.values()) == {1}
    # A cold key costs at most one call per (key, process, window) (docs/host-tier.md): here
    # at most one per request, LiteLLM's own count, by the hosts' own count of their calls.
    made = sum(host_tier_metrics(hosts.region(h))["redis_calls"] for h in range(3))
    assert made <= 4000, made
    # Redis's count adds redis-py's retries: each call that finds the script not loaded yet
    # (a process's first ones, up to its 16 at once) loads it and is sent again.
    calls = hosts.redis.scripts_run() - before
    assert made <= calls <= 4000 + 6 * 16, (made, calls)


def test_a_mixed_fleet_shares_one_limit_with_stock_litellm(hosts):
    """Two accelerated hosts and a stock LiteLLM pod (LiteLLM's own v3 script on the same keys,
    run by redis-py as LiteLLM runs it) under one rpm 40 limit: 40 in all, never 41."""
    from litellm.proxy.hooks.parallel_request_limiter_v3 import CHECK_AND_INCREMENT_BY_N_SCRIPT

    limit = [pair("api_key:mixed", 40)]
    for host in range(2):
        for _ in range(2):
            hosts.start(host, [[limit, random.random() * 0.5] for _ in range(20)], hosts=3)
    stock = hosts.redis.client().register_script(CHECK_AND_INCREMENT_BY_N_SCRIPT)
    stock_admitted = 0
    for _ in range(20):
        reply = stock(keys=["{api_key:mixed}:window", "{api_key:mixed}:requests"], args=[40, 1, 60, 60])
        stock_admitted += reply[0] == 0
        time.sleep(0.02)
    accelerated = sum(admitted_by_window(hosts.results()).values())
    assert stock_admitted > 0 and accelerated > 0, (stock_admitted, accelerated)
    assert stock_admitted + accelerated == 40, (stock_admitted, accelerated)
    assert int(hosts.redis.client().get("{api_key:mixed}:requests")) == 40


def test_a_cost_larger_than_one_grant_is_made_of_the_grant_and_what_the_host_held(redis_server, tmp_path):
    """TPM reservations take tens or thousands of units at once. When what the host holds and
    what Redis has left are each short of a cost but together cover it, the request is admitted,
    as LiteLLM alone would admit it (counter + cost <= limit)."""
    from subproc import run_python

    key = f"tokens-{uuid.uuid4().hex[:8]}"
    out = run_python(f"""
        import asyncio, redis.asyncio
        from fast_litellm import shm
        from fast_litellm.host_tier import HostTier, Limit

        async def main():
            client = redis.asyncio.Redis(port={redis_server.port})
            tier = HostTier(shm.Region("{tmp_path}/region", capacity=1 << 12), client, hosts=1)
            one, three = (Limit("{{{key}}}:window", "{{{key}}}:tokens", 10, cost) for cost in (1, 3))
            admitted = [(await tier.admit([one])).allowed for _ in range(2)]  # grants of 1, then 2
            await client.incrby("{{{key}}}:tokens", 5)  # a stock pod's reservation: 2 left in Redis
            admitted += [(await tier.admit([three])).allowed, (await tier.admit([one])).allowed]
            emit({{"admitted": admitted, "counter": int(await client.get("{{{key}}}:tokens")),
                   "held": tier.region.lease_left("{{{key}}}:tokens")[1]}})

        asyncio.run(main())
    """, env={"FAST_LITELLM_DISABLE": "1"})
    assert out == {"admitted": [True, True, True, False], "counter": 10, "held": 0}, out


def test_a_key_that_keeps_asking_has_its_lease_refilled_ahead_and_its_requests_make_no_call(redis_server, tmp_path):
    """A hot key, a request every 2 ms. Without refills ahead a request makes the lease call
    each time the lease runs out (one per doubling lease); with them the next lease is asked
    for when a take leaves less than a quarter, and after the first leases no request makes a
    call of its own (one that finds the lease empty while the refill is in flight waits for
    it). Redis's counter is exactly what was granted (admitted + still held), as without, and
    nothing is admitted by the down policy."""
    from subproc import run_python

    code = """
        import asyncio, redis.asyncio
        from fast_litellm import shm
        from fast_litellm.host_tier import HostTier, Limit, stat_key

        async def main():
            client = redis.asyncio.Redis(port={port})
            region = shm.Region("{region}", capacity=1 << 12)
            tier = HostTier(region, client, hosts=1, refill_ahead={ahead})
            lim = Limit("{{{{{key}}}}}:window", "{{{{{key}}}}}:requests", 100000, 1)
            calls = []
            for _ in range(300):
                calls.append((await tier.admit([lim])).redis_calls)
                await asyncio.sleep(0.002)
            await asyncio.gather(*tier._ahead)
            emit({{"late": sum(calls[20:]), "counter": int(await client.get(lim.counter_key)),
                   "held": region.lease_left(lim.counter_key)[1],
                   "stats": {{n: region.counter_get(stat_key(n)) or 0 for n in
                             ("ahead_refills", "policy_admitted_units", "redis_failures")}}}})

        asyncio.run(main())
    """
    out = {ahead: run_python(code.format(port=redis_server.port, region=tmp_path / f"region-{ahead}",
                                         key=f"hot-{uuid.uuid4().hex[:8]}", ahead=ahead),
                             env={"FAST_LITELLM_DISABLE": "1"})
           for ahead in (False, True)}
    for r in out.values():
        assert r["counter"] == 300 + r["held"], r  # exactly what Redis granted: spent or held
        assert r["stats"]["policy_admitted_units"] == 0 == r["stats"]["redis_failures"], r
    off, on = out[False], out[True]
    assert off["stats"]["ahead_refills"] == 0 and off["late"] >= 3, off  # leases of 32, 64, 128, 256
    assert on["stats"]["ahead_refills"] >= 3 and on["late"] == 0, on


@pytest.mark.parametrize("redis_state", ["far", "hung"])
def test_workers_that_find_the_lease_empty_together_share_one_lease_call(redis_server, tmp_path, redis_state):
    """Four workers of one host find a warm key's lease empty at once. One makes the lease
    call; the others take from its grant as it arrives (each would otherwise make its own
    call: four). `far`: Redis 200 ms away; Redis's counter is exactly what was granted.
    `hung`: Redis stops answering just before; the call times out, and the workers that waited
    for it are answered by the down policy with it (no second timeout each)."""
    import threading

    from subproc import run_python
    from tcp_proxy import TcpProxy

    far = TcpProxy(redis_server.port, reply_delay_s=0.2 if redis_state == "far" else 0.0)
    key = f"shared-{uuid.uuid4().hex[:8]}"
    go_at = time.time() + 8.0  # after the child's imports and warm-up, under load too
    if redis_state == "hung":
        threading.Timer(go_at - 0.3 - time.time(), far.cut, ("hang",)).start()
    try:
        out = run_python(f"""
            import asyncio, time, redis.asyncio
            from fast_litellm import shm
            from fast_litellm.host_tier import HostTier, Limit, stat_key
            from forked import run_forked

            lim = Limit("{{{key}}}:window", "{{{key}}}:requests", 100000, 1)

            def tier(port):
                region = shm.Region("{tmp_path}/region", capacity=1 << 12)
                return HostTier(region, redis.asyncio.Redis(port=port), hosts=1, refill_ahead=False,
                                timeout_s={3.0 if redis_state == "far" else 0.5}, down_policy="open")

            async def warm():  # leases of 1, 2, 4, 8, 16: a key that keeps asking; then the lease is spent
                t = tier({redis_server.port})
                while (t.region.value_get(f"tier-size:{{lim.counter_key}}") or (0, 0))[1] < 16:
                    assert (await t.admit([lim])).allowed
                t.region.lease_take(lim.counter_key, t.region.lease_left(lim.counter_key)[1])
                return t.region

            region = asyncio.run(warm())
            assert time.time() < {go_at} - 1.0, "warmed up too late"
            before = {{n: region.counter_get(stat_key(n)) or 0 for n in ("granted_units", "redis_calls")}}

            def worker(_):
                async def once():
                    t = tier({far.port})
                    await t.redis.ping()  # connected before the common start
                    await asyncio.sleep(max(0.0, {go_at} - time.time()))
                    admission = await t.admit([lim])
                    return 100 * admission.redis_calls + 10 * (admission.windows[0] == 0) + admission.allowed
                return asyncio.run(once())

            results = run_forked(4, worker)
            emit({{"results": results, "waited": region.counter_get(stat_key("shared_calls_waited")) or 0,
                   "granted": region.counter_get(stat_key("granted_units")) - before["granted_units"],
                   "calls": region.counter_get(stat_key("redis_calls")) - before["redis_calls"],
                   "held": region.lease_left(lim.counter_key)[1], "warm_granted": before["granted_units"]}})
        """, env={"FAST_LITELLM_DISABLE": "1", "FL_TESTS_DIR": HERE,
                  "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")})
    finally:
        far.close()
    assert all(r % 10 == 1 for r in out["results"]), out  # every worker admitted
    assert out["calls"] == 1 and out["waited"] == 3, out  # the Redis calls the host made
    if redis_state == "far":
        assert sum(r // 100 for r in out["results"]) == 1 and out["granted"] == 4 + out["held"], out
        assert int(redis_server.client().get(f"{{{key}}}:requests")) == out["warm_granted"] + out["granted"], out
    else:  # all four by the policy, none from Redis
        assert [r // 10 % 10 for r in out["results"]] == [1] * 4 and out["granted"] == 0, out


def test_a_refill_ahead_while_redis_hangs_admits_nothing_by_the_policy(redis_server, tmp_path):
    """Redis hangs while a hot key's refill ahead is due: the refill fails (a failure for the
    breaker) and admits nothing; each unit the down policy admits is a request's, counted once
    as the host's debt to Redis."""
    from subproc import run_python

    key = f"hang-{uuid.uuid4().hex[:8]}"
    out = run_python(f"""
        import asyncio, os, signal, redis.asyncio
        from fast_litellm import shm
        from fast_litellm.host_tier import HostTier, Limit, stat_key

        async def main():
            client = redis.asyncio.Redis(port={redis_server.port})
            region = shm.Region("{tmp_path}/region", capacity=1 << 12)
            tier = HostTier(region, client, hosts=1, timeout_s=0.1, down_policy="open")
            lim = Limit("{{{key}}}:window", "{{{key}}}:requests", 100000, 1)
            for _ in range(40):
                await tier.admit([lim])
                await asyncio.sleep(0.002)
            os.kill({redis_server.process.pid}, signal.SIGSTOP)
            try:
                windows = [(await tier.admit([lim])).windows[0] for _ in range(150)]  # more than a host can hold by then
                await asyncio.gather(*tier._ahead)
            finally:
                os.kill({redis_server.process.pid}, signal.SIGCONT)
            emit({{"by_policy": windows.count(0), "debt": region.counter_get(f"tier-debt:{{lim.counter_key}}") or 0,
                   "stats": {{n: region.counter_get(stat_key(n)) or 0 for n in
                             ("ahead_refills", "policy_admitted_units", "redis_failures")}}}})

        asyncio.run(main())
    """, env={"FAST_LITELLM_DISABLE": "1"})
    assert out["stats"]["ahead_refills"] >= 1 and out["stats"]["redis_failures"] >= 1, out
    assert out["by_policy"] > 0, out
    assert out["stats"]["policy_admitted_units"] == out["by_policy"] == out["debt"], out


def test_a_worker_whose_loop_runs_late_waits_for_redis_instead_of_admitting_by_the_policy(redis_server, tmp_path):
    """A loaded worker's event loop runs late (here one task holds it 150 ms a turn, as dozens
    of requests in flight do): Redis answers in a millisecond, but the worker reads the reply
    after the 250-ms timeout. The wait is extended while the loop lags, so each request is
    admitted from Redis's grant (before, they timed out and the down policy admitted beside
    Redis's grants: 31 and 34 at rpm 30 in CI runs). With Redis hung, such a worker still gets
    the policy's answer within 6 timeouts."""
    from subproc import run_python

    key = uuid.uuid4().hex[:8]
    out = run_python(f"""
        import asyncio, os, signal, time, redis.asyncio
        from fast_litellm import shm
        from fast_litellm.host_tier import HostTier, Limit, stat_key

        async def main():
            client = redis.asyncio.Redis(port={redis_server.port})
            region = shm.Region("{tmp_path}/region", capacity=1 << 12)
            tier = HostTier(region, client, hosts=1, timeout_s=0.25)
            limit = lambda n: Limit("{{k{key}-%d}}:window" % n, "{{k{key}-%d}}:requests" % n, 10, 1)
            await tier.admit([limit(0)])  # its connection and script are ready
            busy = True

            async def hog():
                while busy:
                    time.sleep(0.15)
                    await asyncio.sleep(0)

            hogging = asyncio.ensure_future(hog())
            admitted = [(await tier.admit([limit(n)])).allowed for n in range(1, 6)]
            stats = lambda: {{name: region.counter_get(stat_key(name)) or 0
                             for name in ("redis_failures", "lagged_waits", "policy_admitted_units")}}
            lagging = stats()
            counted = [int(await client.get(limit(n).counter_key) or 0) for n in range(1, 6)]
            os.kill({redis_server.process.pid}, signal.SIGSTOP)
            try:
                begun = time.monotonic()
                admitted.append((await tier.admit([limit(6)])).allowed)
                hung_s = time.monotonic() - begun
            finally:
                os.kill({redis_server.process.pid}, signal.SIGCONT)
            busy = False
            await hogging
            emit({{"admitted": admitted, "lagging": lagging, "counted": counted, "hung_s": hung_s,
                   "hung": stats()}})

        asyncio.run(main())
    """, env={"FAST_LITELLM_DISABLE": "1"})
    assert out["admitted"] == [True] * 6, out
    assert out["lagging"]["redis_failures"] == 0 and out["lagging"]["policy_admitted_units"] == 0, out
    assert out["lagging"]["lagged_waits"] >= 1 and out["counted"] == [1] * 5, out
    # Hung: extended up to 6 x 250 ms (the loop lags), then the policy admits; one failure.
    assert 0.25 <= out["hung_s"] <= 1.5 + 0.5, out
    assert out["hung"]["redis_failures"] == 1 and out["hung"]["policy_admitted_units"] == 1, out


def test_a_host_killed_after_a_large_grant_causes_no_over_admission_and_its_units_return_at_window_end(hosts):
    limit = [pair("api_key:killed", 20, window_s=3)]
    # The victim asks often enough for its leases to grow (1, 2, then 4 units: the fourth request
    # takes one of 4), then holds them and is killed.
    victim = hosts.start(0, [[limit, 0.0] for _ in range(4)], hosts=2, concurrency=1, hold_s=60)
    hosts.wait_ready(victim)
    line = victim.stdout.readline()
    victim_admitted = admitted_by_window([json.loads(line)["admitted"]])
    granted = int(hosts.redis.client().get("{api_key:killed}:requests"))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    window = next(iter(victim_admitted))[1]
    # It dies holding units Redis granted it and it never spent.
    held = granted - victim_admitted[("{api_key:killed}:requests", window)]
    assert held >= 2, (granted, victim_admitted)
    others = [hosts.start(1, [[limit, 0.05 * i] for i in range(30)], hosts=2) for _ in range(2)]
    first = admitted_by_window(hosts.results(others))
    # Those units stay counted and unspent: the window admits at most 20 - held in all.
    assert victim_admitted[("{api_key:killed}:requests", window)] + first[("{api_key:killed}:requests", window)] <= 20 - held
    time.sleep(3.5)  # the window ends in Redis: the dead host's units end with it
    later = [hosts.start(1, [[limit, 0.0] for _ in range(25)], hosts=2)]
    again = admitted_by_window(hosts.results(later))
    assert list(again.values()) == [20], again


@pytest.mark.parametrize("seed", range(1, 7))
def test_random_schedules_spend_only_what_redis_granted_in_its_window(hosts, seed):
    """Random hosts, keys, costs, limits and arrival times over several 2 s windows (so many
    requests fall near a window's edge), each request all-or-nothing over a key and a team
    limit, as LiteLLM's descriptors are. Checked against what Redis itself granted (its
    replies, watched)."""
    rng = random.Random(seed)
    n_hosts = rng.randint(2, 3)
    keys = [(f"api_key:r{seed}-{i}", rng.randint(3, 20)) for i in range(rng.randint(1, 3))]
    team = (f"team:r{seed}", rng.randint(10, 40))
    limits = {f"{{{name}}}:requests": lim for name, lim in [*keys, team]}
    max_cost = 4
    for host in range(n_hosts):
        for _ in range(2):
            requests = []
            for _ in range(rng.randint(20, 60)):
                key, limit = rng.choice(keys)
                cost = rng.randint(1, max_cost)
                requests.append([[pair(key, limit, cost, 2), pair(team[0], team[1], cost, 2)], rng.random() * 5])
            # A long Redis timeout: this is about interleavings, not outages (a call past the
            # timeout would be answered by the down policy, window 0, and is tested elsewhere).
            hosts.start(host, requests, hosts=n_hosts, give_back=rng.random() < 0.5, observe=True, timeout_s=5.0)
    reports = hosts.reports()
    results = [r["admitted"] for r in reports]
    refused = [r for report in reports for r in report["refused"]]
    spent = admitted_by_window(results)
    assert spent and all(window for _, window in spent), spent
    spent_inside_their_windows(results, 2)
    gross, net = collections.Counter(), collections.Counter()
    windows = collections.defaultdict(set)
    for report in reports:
        for key, window, units, _ in report["grants"]:
            gross[(key, window)] += units
            net[(key, window)] += units
            if units:  # (a refusal in an ended window names a start Redis did not open)
                windows[key].add(window)
        for key, window, units, _ in report["returns"]:
            net[(key, window)] -= units
    # LiteLLM's windows: Redis opens one of window_s only after the one before has ended.
    for key, starts in windows.items():
        ordered = sorted(starts)
        assert all(b - a >= 2 for a, b in zip(ordered, ordered[1:])), (key, ordered)

    def window_of(key, t):
        return next((w for w in windows[key] if w <= t < w + 2), None)

    # A refusal's window, where its whole call (asked .. decided) fell inside one: under load a
    # call sent near a window's end may be decided after it, and its window cannot be told.
    def refused_in(key, request):
        window = window_of(key, request["asked"])
        return window if window is not None and window_of(key, request["decided"]) == window else None

    # Over-admission 0: every unit spent in a window was granted by Redis in it, and Redis's
    # net grants (less what was given back) never pass the limit.
    for (key, window), units in spent.items():
        assert units <= net[(key, window)] <= limits[key], (key, window, units, net[(key, window)])
    assert all(units <= limits[key] for (key, _), units in net.items()), net
    # Every request took both of its limits in the same call: the team's count is the keys' sum.
    team_key = f"{{{team[0]}}}:requests"
    assert sum(u for (k, _), u in spent.items() if k == team_key) == \
        sum(u for (k, _), u in spent.items() if k != team_key)
    # A refusal is Redis's answer (its window had granted all but less than a cost), except in
    # the first second of a window, where a host's dry marker from the window before may last.
    for request in refused:
        key = request["denied"]
        window = refused_in(key, request)
        if window is not None and request["asked"] >= window + 1:
            assert gross[(key, window)] > limits[key] - max_cost, (request, gross[(key, window)])


def test_units_a_host_stops_using_go_back_to_redis_and_reach_a_host_still_asking(hosts):
    """Host 0 takes a burst (its leases grow), then stops asking; within idle_s its unspent
    units are returned (window-guarded DECRBY), and host 1, which keeps asking, gets them:
    the key ends at exactly its limit, not at the limit less what host 0 stranded."""
    limit = [pair("api_key:idle", 40)]
    early = hosts.start(0, [[limit, 0.0] for _ in range(12)], hosts=2, concurrency=1, hold_s=3)
    hosts.wait_ready(early)
    time.sleep(1.0)
    late = hosts.start(1, [[limit, 0.1 * i] for i in range(60)], hosts=2, concurrency=1)
    per_window = admitted_by_window(hosts.results([early, late]))
    assert list(per_window.values()) == [40], per_window
    assert int(hosts.redis.client().get("{api_key:idle}:requests")) == 40


def restart(redis_server):
    """A new redis-server on the same port, after the test killed the old one."""
    redis_server.process = subprocess.Popen(
        ["redis-server", "--port", str(redis_server.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_local_share_divides_by_the_hosts_heard_from_when_more_than_configured(hosts, redis_server):
    """Three hosts configured as one (FAST_LITELLM_REDIS_HOSTS unset): their lease calls are a
    heartbeat, so each learns that three share Redis, and with Redis gone each admits an rpm-30
    key's 30 / 3, not 30 (the configured count alone would give 90 over the three)."""
    warm = [pair("api_key:warm", 1000)]
    for _ in range(2):  # the first host to call hears only itself: a second round hears all three
        hosts.reports([hosts.start(h, [[warm, 0.0]], hosts=1) for h in range(3)])
        time.sleep(1.1)  # a host beats at most once a second
    assert int(redis_server.client().zcard("fast_litellm:host_tier:hosts")) == 3
    redis_server.process.kill()
    redis_server.process.wait()
    try:
        limit = [pair("api_key:share", 30)]
        during = [hosts.start(h, [[limit, 0.01 * i] for i in range(20)], hosts=1) for h in range(3)]
        admitted = [len(r["admitted"]) for r in hosts.reports(during)]
    finally:
        restart(redis_server)
    assert admitted == [10, 10, 10], admitted


@pytest.mark.parametrize("outage", ["hang", "refused"])
@pytest.mark.parametrize("policy", ["local-share", "closed", "open"])
def test_redis_down_keeps_each_policys_bound_stalls_no_request_and_loses_no_usage(hosts, redis_server, policy,
                                                                               outage):
    """Redis SIGSTOPped (calls hang) or SIGKILLed (connections refused) while 2 hosts ask for
    20 requests each of an rpm-20 key they hold no lease of. local-share admits at most
    20 / 2 per host, closed none, open all; no request waits much past the 250 ms timeout.
    Once Redis is back, the next lease call charges what was admitted meanwhile."""
    limit = [pair("api_key:down", 20)]
    if outage == "hang":
        os.kill(redis_server.process.pid, signal.SIGSTOP)
    else:
        redis_server.process.kill()
        redis_server.process.wait()
    try:
        during = [hosts.start(h, [[limit, 0.01 * i] for i in range(20)], hosts=2, policy=policy) for h in range(2)]
        reports = hosts.reports(during)
    finally:
        if outage == "hang":
            os.kill(redis_server.process.pid, signal.SIGCONT)
        else:
            restart(redis_server)
    admitted = [len(r["admitted"]) for r in reports]
    expected = {"local-share": [10, 10], "closed": [0, 0], "open": [20, 20]}[policy]
    assert admitted == expected, (policy, admitted)
    assert max(r["max_wait_s"] for r in reports) < 1.5, reports
    deadline = time.time() + 30
    while True:
        try:
            if redis_server.client().ping():
                break
        except Exception:
            assert time.time() < deadline
            time.sleep(0.1)
    time.sleep(2.1)  # the breaker half-opens after retry_s (whole seconds)
    after = [hosts.start(h, [[limit, 0.0]], hosts=2, policy=policy) for h in range(2)]
    after_reports = hosts.reports(after)
    later = sum(len(r["admitted"]) for r in after_reports)
    # Each host logs its transitions once: Redis lost (with its policy), Redis back.
    for report in reports:
        assert report["log"].count("host tier: Redis unreachable") == 1 and f": {policy} until" in report["log"], report
    for report in after_reports:
        assert report["log"].count("host tier: Redis answers again") == 1, report
    counted = int(hosts.redis.client().get("{api_key:down}:requests") or 0)
    outage_units = sum(admitted)
    seen = host_tier_metrics(hosts.region(0))
    assert seen["policy_admitted_units"] == admitted[0] and seen["redis_failures"] >= 1, seen
    assert seen["transitions"] >= 2 and seen["redis_calls"] >= seen["redis_failures"] + 1, seen
    # Every unit admitted during the outage is in Redis's count now, with the later ones (a
    # host charges its own usage at its next call, before it is granted anything).
    assert counted == outage_units + later, (counted, outage_units, later)
    if policy != "local-share":  # (local-share: the first host to charge may get a unit first)
        assert later == {"closed": 2, "open": 0}[policy], (later, counted)


def test_what_the_policy_admitted_reaches_redis_with_no_later_request_and_refunds_cancel_it(redis_server, tmp_path):
    """Units a host admitted while Redis hung are charged once it answers, by the host's idle
    loop, with no later request on the key (a key used once, or a host stopping, never makes
    the lease call that used to charge them); and a reconciliation's refund of such a
    reservation cancels part of the debt instead of reaching Redis first, where it would count
    less than was admitted until the debt is charged."""
    from subproc import run_python

    key = uuid.uuid4().hex[:8]
    out = run_python(f"""
        import asyncio, os, signal, time, redis.asyncio
        from fast_litellm import shm
        from fast_litellm.host_tier import HostTier, Limit

        async def main():
            client = redis.asyncio.Redis(port={redis_server.port})
            region = shm.Region("{tmp_path}/region", capacity=1 << 12)
            tier = HostTier(region, client, hosts=2, idle_s=1.0, retry_s=1.0)
            rpm = Limit("{{r{key}}}:window", "{{r{key}}}:requests", 20, 1)
            tokens = Limit("{{t{key}}}:window", "{{t{key}}}:tokens", 1000, 100)
            debts = lambda: [region.counter_get("tier-debt:" + k) or 0 for k in (rpm.counter_key, tokens.counter_key)]
            os.kill({redis_server.process.pid}, signal.SIGSTOP)
            try:
                admitted = [(await tier.admit([rpm])).allowed for _ in range(4)]
                admitted.append((await tier.admit([tokens])).allowed)
                left_for_redis = tier.settle(tokens.counter_key, -80)  # 20 of the 100 reserved used
                during = debts()
            finally:
                os.kill({redis_server.process.pid}, signal.SIGCONT)
            deadline = time.time() + 20
            while time.time() < deadline and any(debts()):
                await asyncio.sleep(0.2)
            counted = [await client.get(k) for k in (rpm.counter_key, tokens.counter_key)]
            emit({{"admitted": admitted, "left_for_redis": left_for_redis, "during": during, "after": debts(),
                   "counted": [None if c is None else int(c) for c in counted]}})

        asyncio.run(main())
    """, env={"FAST_LITELLM_DISABLE": "1"})
    assert out["admitted"] == [True] * 5 and out["left_for_redis"] == 0, out
    assert out["during"] == [4, 20] and out["after"] == [0, 0], out
    assert out["counted"] == [4, 20], out


@pytest.mark.parametrize("cut", ["hang", "refuse"])
@pytest.mark.parametrize("policy", ["local-share", "closed", "open"])
def test_one_host_cut_off_from_redis_keeps_its_policys_bound_while_the_other_stays_exact(hosts, redis_server,
                                                                                        policy, cut):
    """Host 0 reaches Redis through a TCP proxy that the test cuts (packets dropped, or the
    route gone); host 1 reaches Redis directly. Both ask for 20 requests of an rpm-20 key at
    once. Host 1 is served from Redis's leases as before; host 0 gets its policy (local-share
    20 / 2, closed none, open all), which is what a cut-off host adds to Redis's 20. When the
    route is back, host 0's next lease call charges everything it admitted meanwhile."""
    from tcp_proxy import TcpProxy

    limit = [pair("api_key:cut", 20)]
    proxy = TcpProxy(redis_server.port)
    try:
        proxy.cut(cut)
        cut_off = hosts.start(0, [[limit, 0.01 * i] for i in range(20)], hosts=2, policy=policy,
                              redis_port=proxy.port)
        direct = hosts.start(1, [[limit, 0.01 * i] for i in range(20)], hosts=2, policy=policy)
        cut_report, direct_report = hosts.reports([cut_off, direct])
        assert len(direct_report["admitted"]) == 20, direct_report
        admitted = len(cut_report["admitted"])
        assert admitted == {"local-share": 10, "closed": 0, "open": 20}[policy], (policy, admitted)
        assert cut_report["max_wait_s"] < 1.5 and direct_report["max_wait_s"] < 1.5
        assert int(redis_server.client().get("{api_key:cut}:requests")) == 20
        proxy.restore()
        time.sleep(2.1)  # the breaker half-opens after retry_s (whole seconds)
        after = hosts.results([hosts.start(0, [[limit, 0.0]], hosts=2, policy=policy, redis_port=proxy.port)])
    finally:
        proxy.close()
    assert after == [[]], "the window was full before the cut-off host's usage was charged"
    assert int(redis_server.client().get("{api_key:cut}:requests")) == 20 + admitted
    seen = host_tier_metrics(hosts.region(0))
    assert seen["policy_admitted_units"] == admitted and seen["transitions"] >= 2, seen
