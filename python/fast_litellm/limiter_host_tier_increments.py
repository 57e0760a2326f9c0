"""rate_limiter with Redis, the post-call token increments through the host tier
(limiter_host_tier has the rest, docs/host-tier.md): a reconciliation of a counter with a
token limit is settled in the host's lease, and increments of counters no token limit reads
are summed per worker and sent once per FAST_LITELLM_REDIS_FLUSH_MS in TOKEN_COUNT_SCRIPT
(what LiteLLM's TOKEN_INCREMENT_SCRIPT does). On every release: up to 1.109 the increments are
dicts, from 1.110 CounterIncrement / WindowGuardedIncrement objects (`DICTS`, `STORE`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import limiter_host_tier
from . import shm
from ._acceleration import Decline, OriginalRaised
from .host_tier import HostTier, _clock_s

log = logging.getLogger("fast_litellm")

#: Adds each ARGV increment to its KEYS counter and gives a counter that has no TTL the one
#: passed (0: none), as LiteLLM's TOKEN_INCREMENT_SCRIPT does, so stock pods and this one
#: count alike; LiteLLM's own text is not in Python from 1.110 (its native client holds it).
TOKEN_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCRBYFLOAT', key, ARGV[2 * i - 1])
    local ttl = tonumber(ARGV[2 * i])
    if ttl > 0 and redis.call('TTL', key) == -1 then
        redis.call('EXPIRE', key, ttl)
    end
end
return counts
"""


class _DeferredIncrements:
    """Post-call token increments of counters that no limit reads (a scope with no token
    limit: LiteLLM counts its tokens all the same), summed per counter in this process and sent
    to Redis once per flush_s in TOKEN_COUNT_SCRIPT, instead of one script call per request. A
    failed send keeps the sums for the next one."""

    def __init__(self, redis_cache: Any, tier: HostTier, flush_s: float) -> None:
        self.script = redis_cache.async_register_script(TOKEN_COUNT_SCRIPT)
        self.tier = tier
        self.flush_s = flush_s
        #: counter key -> [summed increment, its TTL in seconds]
        self.pending: Dict[str, List[float]] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._failing = False
        # A worker that exits (gunicorn's sys.exit) sends what it holds with LiteLLM's sync client.
        sync_increment = limiter_host_tier.sync_script(redis_cache, TOKEN_COUNT_SCRIPT)
        if sync_increment is not None:
            atexit.register(self._flush_at_exit, sync_increment)

    def add(self, key: str, increment: float, ttl: Optional[int]) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        held = self.pending.setdefault(key, [0.0, float(ttl or 0)])
        held[0] += increment
        self.tier.stat("deferred_increments", 1)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()
            cutoff = _clock_s() - limiter_host_tier.TOKEN_LIMITED_S
            for key in [k for k, seen in limiter_host_tier._token_limited.items() if seen < cutoff]:
                del limiter_host_tier._token_limited[key]

    def _chunks(self) -> List[Tuple[List[str], List[Any]]]:
        """Takes what is pending: (keys, ARGV) of script calls of at most 500 counters."""
        batch, self.pending = self.pending, {}
        items = [(k, v) for k, v in batch.items() if v[0]]
        out = []
        for start in range(0, len(items), 500):
            chunk = items[start:start + 500]
            args: List[Any] = []
            for _, (increment, ttl) in chunk:
                args += [int(increment) if increment.is_integer() else increment, int(ttl)]
            out.append(([k for k, _ in chunk], args))
        return out

    def _keep(self, keys: List[str], args: List[Any]) -> None:
        for n, key in enumerate(keys):
            held = self.pending.setdefault(key, [0.0, float(args[2 * n + 1])])
            held[0] += float(args[2 * n])

    def _flush_at_exit(self, sync_script: Any) -> None:
        for keys, args in self._chunks():
            try:
                sync_script(keys=keys, args=args)
            except Exception as error:  # noqa: BLE001 - exiting: say what is lost
                log.warning("fast_litellm: %d deferred token counts not sent to Redis at exit: %s", len(keys), error)

    async def flush(self) -> None:
        chunks = self._chunks()
        for n, (keys, args) in enumerate(chunks):
            try:
                # Off the request path: longer than a lease call may take.
                await self.tier.counted_call(self.script(keys=keys, args=args), waited=False, timeouts=4)
            except Exception as error:  # noqa: BLE001 - Redis down: kept for the next flush
                self.tier.stat("redis_failures", 1)
                if not self._failing:
                    log.warning("fast_litellm: sending deferred token counts to Redis failed (kept for the next "
                                "flush): %s", error)
                self._failing = True
                # (A call that timed out may have run: then it is counted twice, which admits less.)
                for rest in chunks[n:]:
                    self._keep(*rest)
                return
            self._failing = False


_deferred: "weakref.WeakKeyDictionary[Any, _DeferredIncrements]" = weakref.WeakKeyDictionary()


def _deferrals(limiter: Any, tier: HostTier) -> Optional[_DeferredIncrements]:
    settings = limiter_host_tier._settings
    if settings is None or not settings.flush_s:
        return None
    deferred = _deferred.get(limiter)
    if deferred is None:
        redis_cache = limiter.internal_usage_cache.dual_cache.redis_cache
        deferred = _deferred[limiter] = _DeferredIncrements(redis_cache, tier, settings.flush_s)
    return deferred


class Shape(NamedTuple):
    """How a release's post-call increments read: `increment(op)` is (counter key, amount,
    ttl); `guarded(op)` is (its increment, the Redis window start it is guarded by, or None
    when it is not guarded by a Redis window)."""
    increment: Callable[[Any], Tuple[str, Any, Optional[int]]]
    guarded: Callable[[Any], Tuple[Any, Optional[int]]]


def _window_start(raw: Any) -> Optional[int]:
    try:
        start = float(raw)
    except (TypeError, ValueError):
        return None
    return int(start) if start.is_integer() and start > 0 else None


def _dict_guarded(op: Any) -> Tuple[Any, Optional[int]]:
    if op.get("window_key") is None or op.get("reservation_backend") == "local":
        return op, None
    return op, _window_start(op.get("expected_window_start"))


def _store_increment(op: Any) -> Tuple[str, Any, Optional[int]]:
    from .limiter import _counter_keys

    return _counter_keys(op.counter)[1], op.amount, op.ttl


def _store_guarded(op: Any) -> Tuple[Any, Optional[int]]:
    if not hasattr(op, "expected_window_start") or op.reservation_backend == "local":  # a CounterIncrement
        return op, None
    return op.increment, _window_start(op.expected_window_start)


#: Up to 1.109: RedisPipelineIncrementOperation dicts (window-guarded ones name their window key).
DICTS = Shape(lambda op: (op["key"], op["increment_value"], op.get("ttl")), _dict_guarded)
#: From 1.110: CounterIncrement, and WindowGuardedIncrement around one.
STORE = Shape(_store_increment, _store_guarded)


def _left_for_redis(tier: HostTier, deferred: Optional[_DeferredIncrements], key: str, increment: Any,
                    ttl: Optional[int], window: Optional[int]) -> bool:
    """Settles an increment in the host's lease (a counter with a token limit) or defers it
    (one without, unguarded); whether LiteLLM must still send it to Redis."""
    if not isinstance(increment, (int, float)) or not float(increment).is_integer():
        return True
    if key in limiter_host_tier._token_limited or window is not None:
        try:
            return tier.settle(key, int(increment), window) != 0
        except shm.RegionFullError:
            return True
    if deferred is not None and key.endswith(":tokens"):
        deferred.add(key, float(increment), ttl)
        return False
    return True


def increment_tokens_with_ttl_preservation(original: Any, shape: Shape) -> Any:
    """LiteLLM's post-call token increments (`async_increment_tokens_with_ttl_preservation`,
    unguarded INCRBYs of actual - reserved, or of the usage where nothing was reserved): those
    of a counter with a token limit that this host leases are settled in the lease
    (`HostTier.settle`), those of a counter without one are deferred, and LiteLLM sends the rest
    as it does. (The original is held in the closure, as above.)"""

    async def increment(self: Any, pipeline_operations: List[Any], parent_otel_span: Any = None) -> None:
        if limiter_host_tier._without_redis(self):  # the region limiter's own path (limiter.py), under `original`
            await original(self, pipeline_operations=pipeline_operations, parent_otel_span=parent_otel_span)
            return
        if limiter_host_tier._cluster(self):
            raise Decline("Redis Cluster")
        tier = limiter_host_tier._tier(self)
        deferred = _deferrals(self, tier)
        rest = [op for op in pipeline_operations if _left_for_redis(tier, deferred, *shape.increment(op), None)]
        if rest:
            try:
                await original(self, pipeline_operations=rest, parent_otel_span=parent_otel_span)
            except Exception as error:
                raise OriginalRaised(error) from error

    return increment


def increment_reservation_aware_tokens(original: Any, shape: Shape) -> Any:
    """LiteLLM's window-guarded post-call reconciliations (`async_increment_reservation_aware_tokens`):
    those of a Redis window this host holds the lease of are settled in the lease; the rest,
    and every one of LiteLLM's in-memory reservations, are LiteLLM's."""

    async def increment(self: Any, pipeline_operations: Sequence[Any], parent_otel_span: Any = None) -> None:
        if limiter_host_tier._without_redis(self):
            await original(self, pipeline_operations=pipeline_operations, parent_otel_span=parent_otel_span)
            return
        if limiter_host_tier._cluster(self):
            raise Decline("Redis Cluster")
        tier = limiter_host_tier._tier(self)
        rest = []
        for op in pipeline_operations:
            increment, window = shape.guarded(op)
            if window is None or _left_for_redis(tier, None, *shape.increment(increment), window):
                rest.append(op)
        if rest:
            try:
                await original(self, pipeline_operations=tuple(rest), parent_otel_span=parent_otel_span)
            except Exception as error:
                raise OriginalRaised(error) from error

    return increment
