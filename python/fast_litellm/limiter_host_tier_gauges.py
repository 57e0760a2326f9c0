"""rate_limiter with Redis, the max_parallel_requests gauges: a dead host's slots come back
within SLOT_TTL_S (limiter_host_tier has the rest of the host tier, docs/host-tier.md).

LiteLLM's gauge is a sorted set per scope (`{scope}:max_parallel_requests`) of in-flight slot
ids scored by their start, pruned after an hour (PARALLEL_REQUEST_SLOT_TTL_SECONDS): a host
that dies holds its slots that long. Beside each gauge the tier keeps a registry of the slots
its hosts acquired, scored by the holder's last refresh; an acquire first drops the slots not
refreshed within SLOT_TTL_S (a dead host's) from both, and so does a read-only check that
would refuse (LiteLLM's check before the body, from 1.109, refuses on the gauge's count and
would otherwise keep a dead host's slots from ever reaching an acquire). Stock pods' slots
keep LiteLLM's hour. Up to 1.109 the prologue runs inside LiteLLM's own acquire script; on
1.110, whose native client keeps its scripts out of Python, as a call just before it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import limiter_host_tier as tier
from ._acceleration import Decline, OriginalRaised

log = logging.getLogger("fast_litellm")

SLOT_TTL_S = 30
SLOT_REFRESH_S = 5.0
SLOT_REGISTRY_SUFFIX = ":fast_litellm_slots"
# KEYS: gauge keys; ARGV: LiteLLM's acquire layout, per key (limit, slot TTL, slot id). Drops
# the registered slots not refreshed within SLOT_TTL_S from the gauge and the registry, and
# registers the slot id (none when empty: a read-only check). Leaves fl_pruned, the slots
# dropped from the gauges, for a script that ends here.
_SLOT_PROLOGUE = f"""
local fl_now = tonumber(redis.call('TIME')[1])
local fl_pruned = 0
for i = 1, #KEYS do
    local fl_registry = KEYS[i] .. '{SLOT_REGISTRY_SUFFIX}'
    local fl_stale = redis.call('ZRANGEBYSCORE', fl_registry, '-inf', fl_now - SLOT_TTL_S)
    for _, id in ipairs(fl_stale) do
        fl_pruned = fl_pruned + redis.call('ZREM', KEYS[i], id)
        redis.call('ZREM', fl_registry, id)
    end
    local fl_id = ARGV[(i - 1) * 3 + 3]
    if fl_id ~= '' then
        redis.call('ZADD', fl_registry, fl_now, fl_id)
        redis.call('EXPIRE', fl_registry, tonumber(ARGV[(i - 1) * 3 + 2]))
    end
end
"""
# KEYS: gauge keys; ARGV: a slot id per key. Per slot: 1 if still held (its registry score now
# refreshed), 0 if released (its registry entry dropped).
_SLOT_REFRESH = f"""
local now = tonumber(redis.call('TIME')[1])
local out = {{}}
for i = 1, #KEYS do
    local registry = KEYS[i] .. '{SLOT_REGISTRY_SUFFIX}'
    if redis.call('ZSCORE', KEYS[i], ARGV[i]) then
        redis.call('ZADD', registry, 'XX', now, ARGV[i])
        out[i] = 1
    else
        redis.call('ZREM', registry, ARGV[i])
        out[i] = 0
    end
end
return out
"""
#: The acquire of LiteLLM's that this script's KEYS and ARGV are written for.
_ACQUIRE_SHAPE = "ARGV: per-key triples (limit, slot_ttl_seconds, slot_id)"
_through_gauge_patch: "contextvars.ContextVar[bool]" = contextvars.ContextVar("fast_litellm_gauge", default=False)


class _Slots:
    """A limiter's slots in Redis through the tier: those this process acquired, refreshed in
    their registry every SLOT_REFRESH_S while it holds them (a released slot is dropped at the
    next refresh), and the prologue as a call of its own."""

    def __init__(self, redis_cache: Any) -> None:
        self.redis_cache = redis_cache
        prologue = _SLOT_PROLOGUE.replace("SLOT_TTL_S", str(int(SLOT_TTL_S)))
        self.prologue = prologue
        self.prologue_script = redis_cache.async_register_script(prologue + "return fl_pruned\n")
        self.refresh_script = redis_cache.async_register_script(_SLOT_REFRESH)
        #: (gauge key, slot id) of the slots this process acquired and has not seen released
        self.held: Dict[Tuple[str, str], None] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._failing = False

    async def run_prologue(self, limiter: Any, keys: List[str], slot_id: str) -> int:
        """The slots it dropped. Never fails the check: on an error, past the tier's timeout or
        while the host's breaker is open, LiteLLM's own step decides alone (a dead host's slots
        then wait for LiteLLM's prune)."""
        from . import limiter as limiter_module

        host = tier._tier(limiter)
        if host._redis_down():
            return 0
        args = [x for _ in keys for x in (0, int(limiter_module._slot_ttl_s), slot_id)]
        try:
            pruned = await host.counted_call(self.prologue_script(keys=keys, args=args), waited=True)
        except Exception as error:  # noqa: BLE001 - LiteLLM's step still runs, with its own error handling
            host.stat("redis_failures", 1)
            if not self._failing:
                log.warning("fast_litellm: dropping a dead host's max_parallel_requests slots failed: %s", error)
            self._failing = True
            return 0
        self._failing = False
        return int(pruned)

    def hold(self, slots: Sequence[Tuple[str, str]]) -> None:
        for slot in slots:
            self.held[slot] = None
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while self.held:
            await asyncio.sleep(SLOT_REFRESH_S)
            await self.refresh()

    async def refresh(self) -> None:
        held = list(self.held)
        for start in range(0, len(held), 500):
            chunk = held[start:start + 500]
            try:
                flags = await self.refresh_script(keys=[k for k, _ in chunk], args=[i for _, i in chunk])
            except Exception as error:  # noqa: BLE001 - retried at the next refresh
                if not self._failing:
                    log.warning("fast_litellm: refreshing max_parallel_requests slots in Redis failed: %s", error)
                self._failing = True
                return
            self._failing = False
            for slot, still_held in zip(chunk, flags):
                if not int(still_held):
                    self.held.pop(slot, None)


_slots: "weakref.WeakKeyDictionary[Any, _Slots]" = weakref.WeakKeyDictionary()


def _slots_of(limiter: Any) -> _Slots:
    slots = _slots.get(limiter)
    if slots is None:
        slots = _slots[limiter] = _Slots(limiter.internal_usage_cache.dual_cache.redis_cache)
    return slots


class _TieredAcquire:
    """Stands in for a limiter's `parallel_acquire_script` (up to 1.109): LiteLLM's own acquire
    script after the prologue, for calls made through the patched
    `_check_parallel_request_gauges` (LiteLLM's script otherwise, e.g. after
    remove_acceleration())."""

    def __init__(self, slots: _Slots, litellm_text: str, litellm_script: Any) -> None:
        self.litellm_script = litellm_script
        self.script = slots.redis_cache.async_register_script(slots.prologue + litellm_text)
        self.slots = slots

    async def __call__(self, keys: List[str], args: List[Any]) -> Any:
        if not _through_gauge_patch.get():
            return await self.litellm_script(keys=keys, args=args)
        raw = await self.script(keys=keys, args=args)
        if int(raw[0]) == 0:
            self.slots.hold([(key, str(args[3 * i + 2])) for i, key in enumerate(keys)])
        return raw


def gauge_pre_read(gauge_keys: Sequence[Any]) -> List[int]:
    """The gauge check's pre-read of LiteLLM's in-memory mirror, in a check through the tier:
    nothing known, so the acquire script (atomic, in Redis) decides. The mirror keeps the count
    of the last acquire this worker made, a dead host's slots included, and would refuse
    locally until one of this worker's own slots is released."""
    if not _through_gauge_patch.get():
        raise Decline("not a gauge check through the host tier")
    return [0] * len(gauge_keys)


def _through_tier(limiter: Any) -> bool:
    """False without Redis: the region's gauges (limiter.py) run under LiteLLM's check."""
    return not (tier._without_redis(limiter) or tier._settings is None or tier._cluster(limiter))


async def _litellms(original: Any, limiter: Any, gauges: List[Any], slot_id: str, parent_otel_span: Any,
                    read_only: bool, through_tier: bool = False) -> Any:
    """LiteLLM's own gauge check; `through_tier`: with the tier's answers to its pre-read
    (`gauge_pre_read`) and, up to 1.109, its acquire (`_TieredAcquire`)."""
    token = _through_gauge_patch.set(through_tier)
    try:
        return await original(limiter, gauges=gauges, slot_id=slot_id, parent_otel_span=parent_otel_span,
                              read_only=read_only)
    except Exception as error:
        raise OriginalRaised(error) from error
    finally:
        _through_gauge_patch.reset(token)


async def _read_only(original: Any, limiter: Any, gauges: List[Any], slot_id: str, parent_otel_span: Any) -> Any:
    """LiteLLM's read-only gauge check; when it refuses, once more after dropping a dead host's
    slots (none dropped: its refusal stands). No Redis call more while it admits."""
    from . import limiter as limiter_module
    from . import limiter_host_tier_pool as pool

    through_tier = _through_tier(limiter)
    keys = [limiter_module._dialect.gauge_key(gauge) for gauge in gauges] if through_tier else []
    # Read before Redis is: a shrink whose removal Redis runs after this check's read may
    # have ended by the time the check returns, its members no longer idle nor leaving here.
    unused_before = pool.idle_units(limiter, keys) if through_tier else []
    response = await _litellms(original, limiter, gauges, slot_id, parent_otel_span, True)
    if response["overall_code"] == "OVER_LIMIT" and through_tier:
        response = _with_idle_pool_units(limiter, gauges, keys, response, unused_before)
        if response["overall_code"] == "OVER_LIMIT" and await _slots_of(limiter).run_prologue(limiter, keys, ""):
            response = await _litellms(original, limiter, gauges, slot_id, parent_otel_span, True)
    return response


def _with_idle_pool_units(limiter: Any, gauges: List[Any], keys: List[str], response: Dict[str, Any],
                          unused_before: List[int]) -> Dict[str, Any]:
    """A read-only refusal, where this host held idle or leaving members of each gauge it
    refused on, before the check or after it (Redis counted them; the request's acquire takes
    one, or adds one once they are gone): admitted."""
    from . import limiter_host_tier_pool as pool

    idle = [max(before, now) for before, now in zip(unused_before, pool.idle_units(limiter, keys))]
    statuses = response["statuses"]
    if len(statuses) != len(gauges) or not any(idle):
        return response
    if any(status["code"] == "OVER_LIMIT" and not units for status, units in zip(statuses, idle)):
        return response
    in_flight = pool.in_flight(limiter, keys)
    return {**response, "overall_code": "OK",
            "statuses": [limiter._gauge_status(gauge, n, "OK") if status["code"] == "OVER_LIMIT" else status
                         for gauge, n, status in zip(gauges, in_flight, statuses)]}


_warned_acquire_shape = False


def check_parallel_request_gauges(original: Any) -> Any:
    """Up to 1.109: the host's pool (limiter_host_tier_pool), or LiteLLM's own gauge check with
    the limiter's acquire script the tier's (`_TieredAcquire`)."""

    async def check(self: Any, gauges: List[Any], slot_id: str, parent_otel_span: Any = None,
                    read_only: bool = False) -> Any:
        global _warned_acquire_shape
        if read_only:
            return await _read_only(original, self, gauges, slot_id, parent_otel_span)
        acquire = getattr(self, "parallel_acquire_script", None)
        if acquire is None or not _through_tier(self):  # no acquire in Redis, or Redis Cluster
            return await _litellms(original, self, gauges, slot_id, parent_otel_span, False)
        if not isinstance(acquire, _TieredAcquire):
            text = getattr(inspect.getmodule(type(self)), "PARALLEL_ACQUIRE_SCRIPT", None)
            if not isinstance(text, str) or _ACQUIRE_SHAPE not in text:
                if not _warned_acquire_shape:
                    _warned_acquire_shape = True
                    log.warning("fast_litellm: LiteLLM's max_parallel_requests acquire script is not the one "
                                "the host tier knows: a dead host's slots stay LiteLLM's (an hour)")
                raise Decline("LiteLLM's acquire script is not the one the prologue is written for")
            self.parallel_acquire_script = _TieredAcquire(_slots_of(self), text, acquire)
        from . import limiter as limiter_module, limiter_host_tier_pool as pool

        return await pool.acquire(self, gauges, slot_id, [limiter_module._dialect.gauge_key(g) for g in gauges],
                                  lambda: _litellms(original, self, gauges, slot_id, parent_otel_span, False,
                                                    through_tier=True))

    return check


def check_store_parallel_request_gauges(original: Any) -> Any:
    """1.110: the host's pool, or LiteLLM's own gauge check after the prologue as a call of its
    own (one Redis call more per acquire than LiteLLM alone). Wrapping is safe here: 1.110 acquires with Batch.NONE,
    sent when awaited, never declared on the request's batch."""
    from . import limiter, limiter_host_tier_pool as pool

    async def check(self: Any, gauges: List[Any], slot_id: str, parent_otel_span: Any = None,
                    read_only: bool = False) -> Any:
        if read_only:
            return await _read_only(original, self, gauges, slot_id, parent_otel_span)
        if not _through_tier(self):
            return await _litellms(original, self, gauges, slot_id, parent_otel_span, False)
        keys = [limiter._dialect.gauge_key(gauge) for gauge in gauges]

        async def litellms() -> Any:
            slots = _slots_of(self)
            await slots.run_prologue(self, keys, slot_id)
            response = await _litellms(original, self, gauges, slot_id, parent_otel_span, False, through_tier=True)
            if response["overall_code"] == "OK":
                slots.hold([(key, slot_id) for key in keys])
            return response

        return await pool.acquire(self, gauges, slot_id, keys, litellms)

    return check
