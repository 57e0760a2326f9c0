"""rate_limiter with Redis, the max_parallel_requests gauges: a dead host's slots come back
within SLOT_TTL_S (limiter_host_tier has the rest of the host tier, docs/host-tier.md).

LiteLLM's gauge is a sorted set per scope (`{scope}:max_parallel_requests`) of in-flight slot
ids scored by their start, pruned after an hour (PARALLEL_REQUEST_SLOT_TTL_SECONDS): a host
that dies holds its slots that long. Beside each gauge the tier keeps a registry of the slots
its hosts acquired, scored by the holder's last refresh; an acquire first drops the slots not
refreshed within SLOT_TTL_S (a dead host's) from both. Stock pods' slots keep LiteLLM's hour.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import limiter_host_tier as tier
from ._acceleration import Decline, OriginalRaised

log = logging.getLogger("fast_litellm")

SLOT_TTL_S = 30
SLOT_REFRESH_S = 5.0
SLOT_REGISTRY_SUFFIX = ":fast_litellm_slots"
_SLOT_PROLOGUE = f"""
local fl_now = tonumber(redis.call('TIME')[1])
for i = 1, #KEYS do
    local registry = KEYS[i] .. '{SLOT_REGISTRY_SUFFIX}'
    local stale = redis.call('ZRANGEBYSCORE', registry, '-inf', fl_now - SLOT_TTL_S)
    for _, id in ipairs(stale) do
        redis.call('ZREM', KEYS[i], id)
        redis.call('ZREM', registry, id)
    end
    redis.call('ZADD', registry, fl_now, ARGV[(i - 1) * 3 + 3])
    redis.call('EXPIRE', registry, tonumber(ARGV[(i - 1) * 3 + 2]))
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


class _TieredAcquire:
    """Stands in for a limiter's `parallel_acquire_script`: LiteLLM's own acquire script after
    the prologue above, for calls made through the patched `_check_parallel_request_gauges`
    (LiteLLM's script otherwise, e.g. after remove_acceleration()); the slots it grants are
    refreshed every SLOT_REFRESH_S while this process holds them."""

    def __init__(self, redis_cache: Any, litellm_text: str, litellm_script: Any) -> None:
        self.litellm_script = litellm_script
        prologue = _SLOT_PROLOGUE.replace("SLOT_TTL_S", str(int(SLOT_TTL_S)))
        self.script = redis_cache.async_register_script(prologue + litellm_text)
        self.refresh_script = redis_cache.async_register_script(_SLOT_REFRESH)
        #: (gauge key, slot id) of the slots this process acquired and has not seen released
        self.held: Dict[Tuple[str, str], None] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._failing = False

    async def __call__(self, keys: List[str], args: List[Any]) -> Any:
        if not _through_gauge_patch.get():
            return await self.litellm_script(keys=keys, args=args)
        raw = await self.script(keys=keys, args=args)
        if int(raw[0]) == 0:
            for i, key in enumerate(keys):
                self.held[(key, str(args[3 * i + 2]))] = None
            loop = asyncio.get_running_loop()
            if self._task is None or self._task.done() or self._task.get_loop() is not loop:
                self._task = loop.create_task(self._refresh_forever())
        return raw

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


def gauge_pre_read(gauge_keys: Sequence[Any]) -> List[int]:
    """The gauge check's pre-read of LiteLLM's in-memory mirror, in a check through the tier:
    nothing known, so the acquire script (atomic, in Redis) decides. The mirror keeps the count
    of the last acquire this worker made, a dead host's slots included, and would refuse
    locally until one of this worker's own slots is released."""
    if not _through_gauge_patch.get():
        raise Decline("not a gauge check through the host tier")
    return [0] * len(gauge_keys)


_warned_acquire_shape = False


def check_parallel_request_gauges(original: Any) -> Any:
    """LiteLLM's own gauge check, with the limiter's acquire script the tier's (`_TieredAcquire`)."""

    async def check(self: Any, gauges: List[Any], slot_id: str, parent_otel_span: Any = None,
                    read_only: bool = False) -> Any:
        global _warned_acquire_shape
        acquire = getattr(self, "parallel_acquire_script", None)
        # No acquire in Redis (the region's gauges, limiter.py, run under `original`), or none here.
        through_tier = not (read_only or acquire is None or tier._without_redis(self) or tier._settings is None)
        if through_tier and tier._cluster(self):
            raise Decline("Redis Cluster")
        if through_tier and not isinstance(acquire, _TieredAcquire):
            text = getattr(inspect.getmodule(type(self)), "PARALLEL_ACQUIRE_SCRIPT", None)
            if not isinstance(text, str) or _ACQUIRE_SHAPE not in text:
                if not _warned_acquire_shape:
                    _warned_acquire_shape = True
                    log.warning("fast_litellm: LiteLLM's max_parallel_requests acquire script is not the one "
                                "the host tier knows: a dead host's slots stay LiteLLM's (an hour)")
                raise Decline("LiteLLM's acquire script is not the one the prologue is written for")
            self.parallel_acquire_script = _TieredAcquire(self.internal_usage_cache.dual_cache.redis_cache,
                                                          text, acquire)
        token = _through_gauge_patch.set(through_tier)
        try:
            return await original(self, gauges=gauges, slot_id=slot_id, parent_otel_span=parent_otel_span,
                                  read_only=read_only)
        except Exception as error:
            raise OriginalRaised(error) from error
        finally:
            _through_gauge_patch.reset(token)

    return check
