"""rate_limiter with Redis, the max_parallel_requests gauges through the host tier: a pool of
slots the host holds in LiteLLM's sorted set, which its workers take and give back in the
region, without a Redis call (docs/host-tier.md, "max_parallel_requests: the host's pool").

For a gauge key K the host holds `held` members `fl-pool:<host id>:<n>` (n < held) in K, and
its in-flight requests of K hold the region slot `pool-use:K`, taken with max `held`. A request
that finds all of them busy adds a member with one call (LiteLLM's acquire, its limit checked in
Redis); a member idle for the linger is removed with one call, and at once beyond `Pool.keep`
(half the host's share of what the gauge had free). Only one worker of the host changes a pool
at a time (the region slot `pool-claim:K`; the others wait for it), and a change to fewer
members first takes the units it removes, so in-flight requests never outnumber the members:
0 over-admitted. Until its call returns, the members it removes hold `pool-leaving:K`.
A killed worker's units come back when the region reaps it; a dead host's members, refreshed no
more, are dropped by the prologue after SLOT_TTL_S (limiter_host_tier_gauges).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from . import _native, shm
from ._acceleration import Decline
from . import limiter_host_tier as tier, limiter_host_tier_gauges as gauges
from .limiter_host_tier_gauges import SLOT_REGISTRY_SUFFIX, _SLOT_PROLOGUE

log = logging.getLogger("fast_litellm")

# KEYS: one gauge key; ARGV: limit, slot TTL, member (the prologue's layout). LiteLLM's acquire
# for one key: {0, in flight} when the member was added, {1, in flight} when over the limit.
_GROW = _SLOT_PROLOGUE + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fl_now - tonumber(ARGV[2]))
local in_flight = redis.call('ZCARD', KEYS[1])
if in_flight + 1 > tonumber(ARGV[1]) then
    return {1, in_flight}
end
redis.call('ZADD', KEYS[1], fl_now, ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {0, redis.call('ZCARD', KEYS[1])}
"""
# KEYS: one gauge key; ARGV: members. Removes them from the gauge and the registry.
_SHRINK = f"""
for _, member in ipairs(ARGV) do
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[1] .. '{SLOT_REGISTRY_SUFFIX}', member)
end
return redis.call('ZCARD', KEYS[1])
"""
# KEYS: one gauge key; ARGV: slot TTL, then members. Scores them now in the gauge and the
# registry (adding any Redis lost: their requests are in flight or the host holds them).
# Returns how many were added back and the gauge's count.
_REFRESH = f"""
local now = tonumber(redis.call('TIME')[1])
local registry = KEYS[1] .. '{SLOT_REGISTRY_SUFFIX}'
local added = 0
for i = 2, #ARGV do
    added = added + redis.call('ZADD', KEYS[1], now, ARGV[i])
    redis.call('ZADD', registry, now, ARGV[i])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', registry, tonumber(ARGV[1]))
return {{added, redis.call('ZCARD', KEYS[1])}}
"""


def _now_ms() -> int:
    return _native.clock_ns() // 1_000_000


class Pool:
    """One limiter's pools in this process: the gauge keys it has pooled and the units its
    requests hold, by LiteLLM slot id."""

    def __init__(self, limiter: Any, region: shm.Region, linger_s: float) -> None:
        from . import limiter as limiter_module

        self.limiter = limiter
        self.region = region
        self.host = tier._tier(limiter)
        self.linger_s = linger_s
        self.slot_ttl_s = int(limiter_module._slot_ttl_s)
        redis_cache = limiter.internal_usage_cache.dual_cache.redis_cache
        self.grow_script = redis_cache.async_register_script(_GROW.replace("SLOT_TTL_S", str(int(gauges.SLOT_TTL_S))))
        #: How long the region remembers a pool nobody refreshed: half SLOT_TTL_S, so the region
        #: forgets members before Redis can drop them (a request then adds members anew).
        self.held_ttl_s = gauges.SLOT_TTL_S / 2
        #: How often a worker refreshes its pools' members in Redis (their registry entry, and
        #: their score, which LiteLLM's acquire prunes after an hour).
        self.refresh_s = gauges.SLOT_REFRESH_S
        self.shrink_script = redis_cache.async_register_script(_SHRINK)
        self.refresh_script = redis_cache.async_register_script(_REFRESH)
        self.sync_shrink = tier.sync_script(redis_cache, _SHRINK)
        self.pid = os.getpid()
        #: gauge keys pooled by this process (refreshed and swept while the host holds members)
        self.keys: Dict[str, None] = {}
        #: LiteLLM slot id -> (taken at, gauge keys) of the requests holding units, oldest first
        self.requests: "OrderedDict[str, Tuple[float, List[str]]]" = OrderedDict()
        #: gauge key -> its limit, as this process's requests last named it
        self.limits: Dict[str, int] = {}
        self._shrinking: "set[asyncio.Task[int]]" = set()
        self._task: Optional["asyncio.Task[None]"] = None
        self._failing = False
        atexit.register(self.give_back_idle_at_exit)

    # ---- the region's side ---------------------------------------------------------------

    def held(self, key: str) -> int:
        value = self.region.value_get(f"pool-held:{key}")
        return 0 if value is None else int(value[1])

    def _set_held(self, key: str, held: int) -> None:
        self.region.value_set(f"pool-held:{key}", 0, held, self.held_ttl_s)

    def member(self, n: int) -> str:
        return f"fl-pool:{self.host.host_id}:{n}"

    def take(self, key: str) -> bool:
        """One unit of the host's members of `key`, if one is idle. The count is read again
        after the take: a worker that read `held` before another shrank it gives its unit back."""
        held = self.held(key)
        use = f"pool-use:{key}"
        if held <= 0 or not self.region.acquire(use, held):
            return False
        if self.region.slots_in_use(use) <= self.held(key):
            return True
        self.region.release(use)
        return False

    def put_back(self, keys: Sequence[str]) -> None:
        now = _now_ms()
        for key in keys:
            self.region.release(f"pool-use:{key}")
            self.region.value_set(f"pool-last:{key}", 0, now, 3600.0)

    def keep(self, key: str) -> int:
        """How many idle members this host may keep through the linger: half its share of what
        the gauge had free at its last look (the other hosts' count then, its own requests in
        flight now), as a lease grant is half the host's share of what Redis has left. A gauge
        of a few slots over several hosts keeps none: each member goes back after its request,
        as LiteLLM's release, and an idle member never refuses another host's request."""
        limit = self.limits.get(key)
        if limit is None:
            return 0
        others = self.region.value_get(f"pool-others:{key}")
        free = limit - (0 if others is None else int(others[1])) - self.region.slots_in_use(f"pool-use:{key}")
        return max(0, free) // (2 * self.host.host_count())

    def give_back_beyond_keep(self, keys: Sequence[str]) -> None:
        """After a release: the idle members beyond `keep` go back now (one call, as LiteLLM's
        release), off the request's path."""
        for key in keys:
            keep = self.keep(key)
            if self.idle(key) > keep:
                task = asyncio.get_running_loop().create_task(self.shrink(key, keep))
                self._shrinking.add(task)
                task.add_done_callback(self._shrinking.discard)

    def idle(self, key: str) -> int:
        """Members of `key` this host holds and no request uses (what Redis counts beyond the
        host's in-flight requests)."""
        return max(0, self.held(key) - self.region.slots_in_use(f"pool-use:{key}"))

    def leaving(self, key: str) -> int:
        """Members of `key` on their way out of Redis (a shrink's call in flight): counted there
        a moment more, used by no request."""
        return self.region.slots_in_use(f"pool-leaving:{key}")

    def _reserve_idle(self, key: str, keep: int = 0) -> List[str]:
        """Takes the idle units of `key` beyond `keep` (the caller holds its claim), lowers
        `held` past them and marks them leaving: the members to remove from Redis, and then to
        pass to `_left` (none when none is idle or a take raced ours)."""
        held, use, taken = self.held(key), f"pool-use:{key}", 0
        want = self.idle(key) - keep
        while taken < want and self.region.acquire(use, held):
            taken += 1
        try:
            if not taken or self.region.slots_in_use(use) > held:
                return []
            # Leaving before `held` is lowered, so that idle + leaving never misses them; a
            # shrinker killed before `_left` has its units reaped with it.
            for _ in range(taken):
                self.region.acquire(f"pool-leaving:{key}", held)
            # While the units taken here count, no request can take them: below the new held
            # once they are given back.
            self._set_held(key, held - taken)
            return [self.member(n) for n in range(held - taken, held)]
        finally:
            for _ in range(taken):
                self.region.release(use)

    def _left(self, key: str, members: Sequence[str]) -> None:
        for _ in members:
            self.region.release(f"pool-leaving:{key}")

    # ---- Redis's side ----------------------------------------------------------------------

    async def _claim(self, key: str) -> bool:
        """The claim to change the pool of `key`, waited for while another worker of the host
        holds it (for its one Redis call), at most timeout_s."""
        claim, loop = f"pool-claim:{key}", asyncio.get_running_loop()
        deadline = loop.time() + self.host.timeout_s
        while not self.region.acquire(claim, 1):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.001)
        return True

    async def grow(self, gauge: Dict[str, Any], key: str) -> Optional[Tuple[bool, int]]:
        """One member more of `key` in Redis, under LiteLLM's limit: (a member is idle now,
        Redis's count). None when not now: the breaker is open, the call failed or another
        worker's change outlasted timeout_s (the caller then leaves the request to LiteLLM's
        own acquire)."""
        claim = f"pool-claim:{key}"
        if self.host._redis_down() or not await self._claim(key):
            return None
        try:
            held = self.held(key)
            if self.idle(key):  # the worker that had the claim added one, or a request ended
                return True, held
            try:
                reply = await self.host.counted_call(self.grow_script(
                    keys=[key], args=[int(gauge["limit"]), self.slot_ttl_s, self.member(held)]), waited=True)
            except Exception as error:  # noqa: BLE001 - LiteLLM's own acquire decides, with its error handling
                self._failed("adding a slot to the host's max_parallel_requests pool", error)
                return None
            self._failing = False
            added, count = int(reply[0]) == 0, int(reply[1])
            self.region.value_set(f"pool-others:{key}", 0, max(0, count - held - int(added)), 3600.0)
            if added:
                self._set_held(key, held + 1)
                self.host.stat("gauge_pool_adds", 1)
                self._watch(key)
            return added, count
        finally:
            self.region.release(claim)

    async def shrink(self, key: str, keep: int = 0) -> int:
        """Removes the idle members of `key` beyond `keep` from Redis: how many."""
        claim = f"pool-claim:{key}"
        if not self.region.acquire(claim, 1):
            return 0
        try:
            members = self._reserve_idle(key, keep)
            if not members:
                return 0
            try:
                await self.host.counted_call(self.shrink_script(keys=[key], args=members), waited=False)
            except Exception as error:  # noqa: BLE001 - the members, refreshed no more, go after SLOT_TTL_S
                self._failed("giving back idle max_parallel_requests slots", error)
                return 0
            finally:
                self._left(key, members)
            self.host.stat("gauge_pool_returns", len(members))
            return len(members)
        finally:
            self.region.release(claim)

    async def refresh(self, key: str) -> None:
        claim = f"pool-claim:{key}"
        if not self.region.acquire(claim, 1):
            return  # the worker changing it now refreshes the member it adds; the rest at our next turn
        try:
            held = self.held(key)
            if held <= 0:
                return
            try:
                added, count = await self.host.counted_call(self.refresh_script(
                    keys=[key], args=[self.slot_ttl_s] + [self.member(n) for n in range(held)]), waited=False)
            except Exception as error:  # noqa: BLE001 - retried at the next refresh
                self._failed("refreshing the host's max_parallel_requests slots", error)
                return
            self._set_held(key, held)
            self.region.value_set(f"pool-others:{key}", 0, max(0, int(count) - held), 3600.0)
            if int(added):
                log.warning("fast_litellm: %d of the host's max_parallel_requests slots of %s were gone from "
                            "Redis (restarted or flushed?): added back", int(added), key)
        finally:
            self.region.release(claim)

    def _failed(self, what: str, error: BaseException) -> None:
        self.host.stat("redis_failures", 1)
        if not self._failing:
            log.warning("fast_litellm: %s failed: %s", what, error)
        self._failing = True

    # ---- the sweeper: idle members back after the linger, refreshes --------------------------

    def _watch(self, key: str) -> None:
        self.keys[key] = None
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        last_refresh = asyncio.get_running_loop().time()
        while self.keys:
            await asyncio.sleep(max(0.01, self.linger_s / 2))
            self._release_leaked(self.limiter._get_current_time().timestamp())
            refresh = asyncio.get_running_loop().time() - last_refresh >= self.refresh_s
            if refresh:
                last_refresh = asyncio.get_running_loop().time()
            for key in list(self.keys):
                last = self.region.value_get(f"pool-last:{key}")
                lingered = last is None or _now_ms() - int(last[1]) >= self.linger_s * 1000
                keep = 0 if lingered else self.keep(key)
                if self.idle(key) > keep:
                    await self.shrink(key, keep)
                if self.held(key) <= 0 and not any(key in keys for _, keys in self.requests.values()):
                    del self.keys[key]  # the host holds none: nothing to refresh or sweep
                elif refresh:
                    await self.refresh(key)

    def _release_leaked(self, now: float) -> None:
        """Units of requests whose release never came, after LiteLLM's slot TTL (as LiteLLM
        stops counting such a slot)."""
        cutoff = now - self.slot_ttl_s
        while self.requests:
            slot_id, (taken_at, keys) = next(iter(self.requests.items()))
            if taken_at >= cutoff:
                return
            del self.requests[slot_id]
            self.put_back(keys)

    def give_back_idle_at_exit(self) -> None:
        """A worker that exits removes the idle members (a unit the host's other workers need
        again is added back by their next request); with LiteLLM's synchronous client."""
        if self.sync_shrink is None or os.getpid() != self.pid:
            return
        for key in list(self.keys):
            claim = f"pool-claim:{key}"
            if not self.region.acquire(claim, 1):
                continue
            try:
                members = self._reserve_idle(key)
                try:
                    if members:
                        self.sync_shrink([key], members)
                finally:
                    self._left(key, members)
            except Exception as error:  # noqa: BLE001 - the members, refreshed no more, go after SLOT_TTL_S
                log.warning("fast_litellm: giving back idle max_parallel_requests slots at exit failed: %s", error)
            finally:
                self.region.release(claim)


_pools: "weakref.WeakKeyDictionary[Any, Pool]" = weakref.WeakKeyDictionary()


def _pool_of(limiter: Any) -> Optional[Pool]:
    settings, region = tier._settings, tier._region
    if settings is None or settings.gauge_linger_s <= 0 or region is None or region.fail_open:
        return None  # fail-open admits untracked slots when the table is full: no pool on that
    pool = _pools.get(limiter)
    if pool is None or pool.pid != os.getpid() or pool.region is not region:
        pool = _pools[limiter] = Pool(limiter, region, settings.gauge_linger_s)
    return pool


Acquire = Callable[[], Awaitable[Dict[str, Any]]]


async def acquire(limiter: Any, gauges: List[Dict[str, Any]], slot_id: str, keys: List[str],
                  litellms: Acquire) -> Dict[str, Any]:
    """The gauge check of a request through the host tier: units of the host's pools, and a
    member more where none is idle; `litellms` (LiteLLM's own acquire, with the request's slot
    id) where a pool cannot answer now."""
    pool = _pool_of(limiter)
    if pool is None:
        return await litellms()
    taken: List[str] = []
    try:
        for gauge, key in zip(gauges, keys):
            pool.limits[key] = int(gauge["limit"])
            if pool.take(key):
                taken.append(key)
                continue
            grown = await pool.grow(gauge, key)
            if grown is None:
                break
            idle, count = grown
            if not idle:  # (the units taken go back in `finally`)
                return {"overall_code": "OVER_LIMIT", "statuses": [limiter._gauge_status(gauge, count, "OVER_LIMIT")]}
            if not pool.take(key):  # another worker took the member first
                break
            taken.append(key)
        else:
            pool.requests[slot_id] = (limiter._get_current_time().timestamp(), taken)
            statuses = [limiter._gauge_status(gauge, _in_flight(pool, key), "OK") for gauge, key in zip(gauges, keys)]
            taken = []
            pool.host.stat("gauge_pool_takes", 1)
            for key in keys:
                pool._watch(key)
            return {"overall_code": "OK", "statuses": statuses}
    finally:
        if taken:
            pool.put_back(taken)
    return await litellms()


def _in_flight(pool: Pool, key: str) -> int:
    """The gauge's count as this host knows it: its own in-flight requests and the other
    hosts' members when it last added one."""
    others = pool.region.value_get(f"pool-others:{key}")
    return pool.region.slots_in_use(f"pool-use:{key}") + (0 if others is None else int(others[1]))


def in_flight(limiter: Any, keys: Sequence[str]) -> List[int]:
    pool = _pool_of(limiter)
    return [0] * len(keys) if pool is None else [_in_flight(pool, key) for key in keys]


def release(slot_id: str) -> bool:
    """Gives a request's units back to its pools: False if it holds none (not pooled)."""
    for pool in list(_pools.values()):
        if pool.pid != os.getpid():
            continue
        held = pool.requests.pop(slot_id, None)
        if held is not None:
            pool.put_back(held[1])
            pool.give_back_beyond_keep(held[1])
            return True
    return False


def idle_units(limiter: Any, keys: Sequence[str]) -> List[int]:
    """Per gauge key, the members this host holds that no request uses, or that are on their
    way out: a read-only check does not count them against the request (its acquire takes one,
    or adds one once they are gone)."""
    pool = _pool_of(limiter)
    return [0] * len(keys) if pool is None else [pool.idle(key) + pool.leaving(key) for key in keys]


async def defer_parallel_slot_release(self: Any, acquisition: Dict[str, Any], parent_otel_span: Any = None) -> bool:
    """1.108 on: a pooled request's release from the logging callbacks goes to its pools (no
    Redis call); any other slot is declined to LiteLLM's own."""
    if release(str(acquisition.get("slot_id") or "")):
        return True
    raise Decline("not a slot of the host's pool")
