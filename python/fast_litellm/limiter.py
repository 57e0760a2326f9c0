"""rate_limiter: the proxy's default limiter keeps its counters in the shared region.

What LiteLLM does, per process
    `_PROXY_MaxParallelRequestsHandler_v3` (proxy/hooks/parallel_request_limiter_v3.py, "PRL")
    keeps, without Redis, every rate-limit counter in process memory: up to 1.109 in the
    `InMemoryCache` of `ProxyLogging.internal_usage_cache` (proxy/utils.py), one per worker, at
    most 200 entries; from 1.110 in the memory tier of the limiter's own `RateLimitStore`
    (litellm/redis/stores/rate_limits, `self.rate_limits`). Each descriptor (api key, user, team,
    end user, per-key model, tag, ...) has a fixed window `{k:v}:window` (its start, opened by the
    first request after the last one ended, LITELLM_RATE_LIMIT_WINDOW_SIZE long) shared by its
    `{k:v}:requests` and `{k:v}:tokens` counters, and a `{k:v}:max_parallel_requests` slot
    registry. So N workers admit N times every limit (and, up to 1.109, past a few dozen active
    keys the cache evicts counters it still needs).

What this component does
    The same counters and slots live in the region, so every process of the host sees one
    count. The patches replace LiteLLM's in-memory steps and leave everything around them
    (descriptor building, `should_rate_limit`'s pre-read and checks, `is_cache_list_over_limit`,
    statuses, headers, the request stash) to LiteLLM:
    - windows: `in_memory_cache_sliding_window` -> `Region.window_add`, the limiter's own clock
      (`time_provider`) deciding windows; increment before the check, as LiteLLM: the first
      refused request counts, then the pre-read refuses without counting;
    - reads (the pre-read and the read_only path): `_batch_get_counter_values` (up to 1.109),
      `_local_counter_states` (1.110) -> `Region.window_get`;
    - TPM reservation: `_atomic_check_and_increment_in_memory` -> `Region.window_reserve`, all
      or nothing across processes;
    - post-call reconciliation and refunds, signed deltas into the live window
      (`Region.window_adjust`): `async_increment_tokens_with_ttl_preservation`,
      `async_increment_reservation_aware_tokens` (ops that carry their reservation's window
      start apply only in that window, as LiteLLM's), and the failure paths' own increments
      (`async_log_failure_event`, `async_post_call_failure_hook`): up to 1.109
      `DualCache.async_increment_cache_pipeline` of a cache a limiter reserved in, when every
      key is a limiter counter (any other call, the router's usage counters, ..., is declined,
      and counted so in `status()`); from 1.110 `RateLimitStore.increment_many` and
      `increment_many_post_call` of a store without Redis (every key of it is a limiter counter);
    - max_parallel_requests: `_acquire_parallel_slots_in_memory` (all or nothing),
      `_release_parallel_request_slots` (always: it gives back the region slots an accelerated
      acquire took, whatever the flag or breaker say since, and declines any other slot id to
      LiteLLM's own release) and `_read_local_gauge_counts` -> `Region.acquire`, `release`,
      `slots_in_use`. Slots of a killed worker come back (the region reaps them);
    - the other readers of these counters: `_PROXY_DynamicRateLimitHandlerV3.
      _get_saturation_value_from_cache` and `_PROXY_BatchRateLimiter._read_tpd_window_start`.

LiteLLM releases (one set of patches; `_shapes()` below is the one place that knows the shapes)
    - 1.104.9, 1.105.7, 1.106.12, 1.108.7/1.108.14, 1.109.3 ("keys"): counters are the cache's
      str keys; the in-memory steps are async; steps take and return flat
      [window, counter, ...] lists; a window start is read back as the int the cache decodes
      (the str it was written as when this call opened it); gauges, ops and reservation
      windows name str keys. (1.104 releases slots inline in `_release_parallel_request_slots`,
      1.105+ in `_release_parallel_request_slots_in_memory`: patching the former serves both.)
    - 1.110.2 ("store"): counters are `RateLimitCounter` / `RateLimitScope` objects of a
      per-limiter `RateLimitStore`; the read, reservation, gauge-read and acquire steps are
      sync; steps take counters and return (start, count) pairs; a window start always reads
      back as the str it was written as; ops are `CounterIncrement` / `WindowGuardedIncrement`;
      reservation windows name the `RateLimitCounter`; the failure paths increment through the
      store. The region key of a counter is LiteLLM's own `{key:value}:kind`.
    A LiteLLM whose functions match neither shape leaves the component off with a WARNING
    naming each difference (from the closer shape).

Redis
    When LiteLLM is configured with Redis (up to 1.109: `limiter.batch_rate_limiter_script`, or
    its cache's `redis_cache`, set; 1.110: `limiter.rate_limits.has_redis`), every patched path
    declines: LiteLLM's Redis path, and its local fallback when Redis fails, run untouched, and
    nothing is counted twice.

Full table (RegionFullError)
    FAST_LITELLM_SHM_FULL_POLICY=open declines to LiteLLM's own per-worker counts;
    closed refuses (a window step reports the pair at the region's largest count, a
    reservation is OVER_LIMIT). A post-call adjustment that finds no room is declined.

Differences from LiteLLM accepted (the decisions and statuses are otherwise LiteLLM's own)
    - Counters are host-wide, per key: every limiter instance of every process of the host
      counts the same key in one place (LiteLLM: per worker, and from 1.110 per limiter
      instance; the dynamic limiter's own v3 limiter only counts its own keys).
    - No 200-entry eviction (up to 1.109): every key keeps its counter.
    - Counters never go below 0. LiteLLM's in-memory counter goes negative when a refund
      lands in a window after the one it reserved in, giving that window extra room.
    - Counts are whole numbers: an increment that is not one is declined (LiteLLM's own ops
      are whole; 1.110 LiteLLM turns a counter a window-guarded settlement touched into a
      float, 20.0 where the region reads 20, the same in every decision and status).
    - A post-call charge for a descriptor with no live window is dropped. LiteLLM writes it
      to a counter without a window (living 600 s, the cache default, or the op's ttl): when
      it exceeds the limit, the next pre-read refuses and no window opens until it expires.
    - A window's region entry ends on a whole second of the region's clock (`int(opened) +
      window`), LiteLLM's cache entry at `opened + window`: in that last fraction of a second
      a pre-read finds no window where LiteLLM still finds the old one (which the limiter's
      clock, the same clock in the proxy, already says has ended).
    - A max_parallel_requests slot that is never released (no callback came) is given back
      after PARALLEL_REQUEST_SLOT_TTL_SECONDS, as LiteLLM stops counting it, but only when
      its own process next reads or takes a slot.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _config, limiter_host_tier_pool, shm
from ._acceleration import Component, Decline
from ._compat import Shape, problems

log = logging.getLogger("fast_litellm")

#: The region's largest count: what a window step reports for a pair it had no room to
#: count, under fail-closed, so LiteLLM's own check refuses it.
_FULL_COUNT = 2**48 - 1

_region: Optional[shm.Region] = None
#: How long LiteLLM counts a slot whose release never came (PARALLEL_REQUEST_SLOT_TTL_SECONDS).
_slot_ttl_s: float = 3600.0
#: LiteLLM's suffix of daily-token (batch) descriptor keys (BATCH_TPD_DESCRIPTOR_SUFFIX).
_tpd_suffix: str = "_tpd"
#: DualCaches a limiter reserved tokens in: the failure paths refund through them (up to 1.109).
_reserving_caches: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: Region slots this process holds, by LiteLLM slot id: (acquire time, gauge keys), oldest first.
_held: "OrderedDict[str, Tuple[float, List[str]]]" = OrderedDict()

os.register_at_fork(after_in_child=_held.clear)  # a forked child holds none of its parent's slots


# ---- keys: LiteLLM's names of counters, in the region's terms --------------------------------


@functools.lru_cache(maxsize=4096)
def _window_key(counter_key: str) -> Optional[str]:
    """`{k:v}:window` for a limiter counter `{k:v}:requests|tokens`; None for any other key.
    (Cached: it is on every request's path, and hot keys come again and again.)"""
    prefix, _, kind = counter_key.rpartition(":")
    if kind in ("requests", "tokens") and prefix.startswith("{") and prefix.endswith("}"):
        return prefix + ":window"
    return None


@functools.lru_cache(maxsize=4096)
def _counter_keys(counter: Any) -> Tuple[str, str]:
    """(window key, counter key) of a 1.110 `RateLimitCounter`, as LiteLLM names them."""
    scope = f"{{{counter.scope.descriptor_key}:{counter.scope.descriptor_value}}}"
    return scope + ":window", f"{scope}:{counter.kind}"


@functools.lru_cache(maxsize=4096)
def _gauge_key(scope: Any) -> str:
    """The slot-registry key of a 1.110 `RateLimitScope`."""
    return f"{{{scope.descriptor_key}:{scope.descriptor_value}}}:max_parallel_requests"


def _pairs(keys: Sequence[str]) -> List[Tuple[str, str]]:
    """LiteLLM's flat [window_key, counter_key, ...] as pairs; declined unless every pair is one."""
    if len(keys) % 2:
        raise Decline("not limiter window/counter pairs")
    it = iter(keys)
    pairs = list(zip(it, it))
    for window_key, counter_key in pairs:
        if _window_key(counter_key) != window_key:
            raise Decline("not limiter window/counter pairs")
    return pairs


def _whole(amount: Any) -> int:
    value = int(amount)
    if value != amount:
        raise Decline("not a whole number of tokens")
    return value


#: An increment in the region's terms: (counter key, window key or None when the key is no
#: limiter counter, delta, (expected window start, reservation backend) or None when unguarded).
_Op = Tuple[str, Optional[str], int, Optional[Tuple[Any, Any]]]


class _Keys:
    """LiteLLM 1.104 to 1.109: str keys of the limiter's DualCache, flat lists, dict ops."""

    name = "keys"

    @staticmethod
    def uses_redis(limiter: Any) -> bool:
        return (
            getattr(limiter, "batch_rate_limiter_script", None) is not None
            or limiter.internal_usage_cache.dual_cache.redis_cache is not None
        )

    pairs = staticmethod(_pairs)

    @staticmethod
    def counter(counter_key: str) -> Tuple[str, str]:
        window_key = _window_key(counter_key)
        if window_key is None:
            raise Decline("not a limiter counter")
        return window_key, counter_key

    @staticmethod
    def start(start: Optional[int], opened: bool) -> Any:
        """A window start as LiteLLM's cache gives it: the str it wrote when this call opened
        the window, else the int the cache decodes."""
        return str(start) if opened else start

    @staticmethod
    def pack(states: Iterable[Tuple[Any, Any]]) -> List[Any]:
        return [value for state in states for value in state]

    @staticmethod
    def meta_keys(meta: Dict[str, Any]) -> Tuple[str, str]:
        return meta["window_key"], meta["counter_key"]

    @staticmethod
    def meta_identity(meta: Dict[str, Any]) -> Any:
        return meta["counter_key"]

    @staticmethod
    def gauge_key(gauge: Dict[str, Any]) -> str:
        key: str = gauge["counter_key"]
        return key

    @staticmethod
    def gauge_keys(keys: Sequence[str]) -> Sequence[str]:
        return keys

    @staticmethod
    def op(op: Dict[str, Any]) -> _Op:
        key = op["key"]
        window_key, start = op.get("window_key"), op.get("expected_window_start")
        if window_key is not None and start is not None:
            if _window_key(key) is None:
                raise Decline("not limiter counters")
            return key, window_key, _whole(op["increment_value"]), (start, op.get("reservation_backend"))
        return key, _window_key(key), _whole(op["increment_value"]), None


class _Store:
    """LiteLLM 1.110: `RateLimitCounter` / `RateLimitScope` keys of the limiter's
    `RateLimitStore`, (start, count) pairs, `CounterIncrement` / `WindowGuardedIncrement` ops."""

    name = "store"

    def __init__(self, guarded_type: Any) -> None:
        self.guarded_type = guarded_type

    @staticmethod
    def uses_redis(limiter: Any) -> bool:
        return bool(limiter.rate_limits.has_redis)

    @staticmethod
    def pairs(counters: Sequence[Any]) -> List[Tuple[str, str]]:
        return [_counter_keys(counter) for counter in counters]

    counter = staticmethod(_counter_keys)

    @staticmethod
    def start(start: Optional[int], opened: bool) -> Any:
        """The store gives back the str it was written as."""
        return None if start is None else str(start)

    @staticmethod
    def pack(states: Iterable[Tuple[Any, Any]]) -> List[Any]:
        return list(states)

    @staticmethod
    def meta_keys(meta: Dict[str, Any]) -> Tuple[str, str]:
        return _counter_keys(meta["counter"])

    @staticmethod
    def meta_identity(meta: Dict[str, Any]) -> Any:
        return meta["counter"]

    @staticmethod
    def gauge_key(gauge: Dict[str, Any]) -> str:
        return _gauge_key(gauge["scope"])

    @staticmethod
    def gauge_keys(scopes: Sequence[Any]) -> List[str]:
        return [_gauge_key(scope) for scope in scopes]

    def op(self, op: Any) -> _Op:
        guard = None
        if isinstance(op, self.guarded_type):
            guard, op = (op.expected_window_start, op.reservation_backend), op.increment
        window_key, counter_key = _counter_keys(op.counter)
        return counter_key, window_key, _whole(op.amount), guard


_dialect: Any = _Keys


def _require_local(limiter: Any) -> shm.Region:
    if _region is None or _dialect.uses_redis(limiter):
        raise Decline("LiteLLM is configured with Redis")
    return _region


def _full(region: shm.Region) -> None:
    if region.fail_open:
        raise Decline("region table full (fail-open): LiteLLM's per-worker counters decide")


# ---- windows ---------------------------------------------------------------------------


def _window_step(limiter: Any, pairs: List[Tuple[str, str]], now_int: int, window_size: int) -> List[Any]:
    """Per pair (window start, counter), as LiteLLM's `_in_memory_cache_sliding_window` returns."""
    region = _require_local(limiter)
    states: List[Tuple[Any, Any]] = []
    for window_key, counter_key in pairs:
        try:
            start, count, opened = region.window_add(window_key, counter_key, now_int, window_size)
        except shm.RegionFullError:
            _full(region)
            states.append((str(now_int), _FULL_COUNT))
            continue
        states.append((_dialect.start(start, opened), count))
    packed: List[Any] = _dialect.pack(states)
    return packed


async def in_memory_cache_sliding_window(self: Any, keys: List[str], now_int: int, window_size: int) -> List[Any]:
    return _window_step(self, _dialect.pairs(keys), now_int, window_size)


async def in_memory_cache_sliding_window_of_counters(
    self: Any, counters: Sequence[Any], now_int: int, window_size: int
) -> List[Any]:
    return _window_step(self, _dialect.pairs(counters), now_int, window_size)


def _read(limiter: Any, pairs: List[Tuple[str, str]]) -> List[Any]:
    region = _require_local(limiter)
    states = []
    for window_key, counter_key in pairs:
        start, count = region.window_get(window_key, counter_key)
        states.append((_dialect.start(start, False), count))
    packed: List[Any] = _dialect.pack(states)
    return packed


async def _batch_get_counter_values(
    self: Any, keys: List[str], parent_otel_span: Any, local_only: bool
) -> List[Optional[int]]:
    if local_only and _region is not None and _dialect.uses_redis(self):
        from .limiter_host_tier import pre_read

        return pre_read(self, keys)
    return _read(self, _dialect.pairs(keys))


def _local_counter_states(self: Any, counters: Sequence[Any]) -> List[Any]:
    if _region is not None and _dialect.uses_redis(self):
        from .limiter_host_tier import store_pre_read

        return store_pre_read(self, counters)
    return _read(self, _dialect.pairs(counters))


def _atomic_check_and_increment_in_memory(
    self: Any, per_counter_meta: Sequence[Dict[str, Any]], parent_otel_span: Any = None
) -> Dict[str, Any]:
    region = _require_local(self)
    now_int = int(self._get_current_time().timestamp())
    _reserving_caches.add(self.internal_usage_cache.dual_cache)
    items = [(*_dialect.meta_keys(m), m["current_limit"], m["increment"], m["window_size"]) for m in per_counter_meta]
    try:
        _, denied_index, counts = region.window_reserve(items, now_int)
    except shm.RegionFullError:
        _full(region)
        denied_index, counts = 0, [(now_int, per_counter_meta[0]["current_limit"])]
    if denied_index is not None:
        meta = per_counter_meta[denied_index]
        return {
            "overall_code": "OVER_LIMIT",
            "statuses": [_atomic_status(meta, "OVER_LIMIT", counts[denied_index][1])],
        }
    return {
        "overall_code": "OK",
        "statuses": [_atomic_status(meta, "OK", count) for meta, (_, count) in zip(per_counter_meta, counts)],
        "reservation_windows": frozenset(
            (_dialect.meta_identity(meta), str(start), "local") for meta, (start, _) in zip(per_counter_meta, counts)
        ),
    }


def _atomic_status(meta: Dict[str, Any], code: str, count: int) -> Dict[str, Any]:
    return {
        "code": code,
        "current_limit": meta["current_limit"],
        "limit_remaining": max(0, meta["current_limit"] - count),
        "rate_limit_type": meta["rate_limit_type"],
        "descriptor_key": meta["descriptor_key"],
        "descriptor_value": meta["descriptor_value"],
    }


# ---- post-call reconciliation ----------------------------------------------------------


def _adjust(region: shm.Region, ops: Sequence[_Op]) -> List[Optional[int]]:
    """Each op's signed increment into its counter's live window (LiteLLM: an unconditional
    cache increment). Declined, before any write, unless every key is a limiter counter."""
    if any(window_key is None for _, window_key, _, _ in ops):
        raise Decline("not limiter counters")
    try:
        return [region.window_adjust(window_key, counter_key, delta)
                for counter_key, window_key, delta, _ in ops if window_key is not None]
    except shm.RegionFullError:
        raise Decline("region table full") from None


async def async_increment_tokens_with_ttl_preservation(
    self: Any, pipeline_operations: Sequence[Any], parent_otel_span: Any = None
) -> None:
    region = _require_local(self)
    if pipeline_operations:
        _adjust(region, [_dialect.op(op) for op in pipeline_operations])


async def async_increment_reservation_aware_tokens(
    self: Any, pipeline_operations: Sequence[Any], parent_otel_span: Any = None
) -> None:
    region = _require_local(self)
    ops = [_dialect.op(op) for op in pipeline_operations]
    _adjust(region, [op for op in ops if op[3] is None])
    try:
        for counter_key, window_key, delta, guard in ops:
            if guard is None:
                continue
            expected_start, backend = guard
            if backend == "local":
                # Only in the window the reservation counted in; a later window never saw it.
                region.window_adjust(window_key, counter_key, delta, int(expected_start))
            elif delta > 0:
                # Reserved in Redis, which is gone: LiteLLM adds charges, drops refunds.
                region.window_adjust(window_key, counter_key, delta)
    except shm.RegionFullError:
        raise Decline("region table full") from None


async def dual_cache_increment_pipeline(
    self: Any,
    increment_list: List[Dict[str, Any]],
    local_only: bool = False,
    parent_otel_span: Any = None,
    **kwargs: Any,
) -> List[Optional[int]]:
    """Up to 1.109, the failure paths' refunds of a reservation made in the region (they write
    through the limiter's DualCache). Every other cache, or key, keeps LiteLLM's path."""
    if _region is None or self.redis_cache is not None or self not in _reserving_caches:
        raise Decline("not a cache a limiter reserved in")
    return _adjust(_region, [_Keys.op(op) for op in increment_list])


async def store_increment_many(self: Any, increments: Sequence[Any]) -> None:
    """1.110, the failure paths' settlements (`RateLimitStore.increment_many[_post_call]`): a
    store without Redis holds only limiter counters, in memory."""
    if _region is None or self.has_redis:
        raise Decline("LiteLLM is configured with Redis")
    _adjust(_region, [_dialect.op(op) for op in increments])


# ---- max_parallel_requests -------------------------------------------------------------


def _release_leaked_slots(region: shm.Region, now: float) -> None:
    """Gives back the slots acquired more than PARALLEL_REQUEST_SLOT_TTL_SECONDS ago, which
    LiteLLM no longer counts (their release never came)."""
    cutoff = now - _slot_ttl_s
    while _held:
        slot_id, (acquired_at, keys) = next(iter(_held.items()))
        if acquired_at >= cutoff:
            return
        del _held[slot_id]
        for key in keys:
            region.release(key)


def _gauge_counts(limiter: Any, keys: Sequence[str]) -> List[int]:
    region = _require_local(limiter)
    _release_leaked_slots(region, limiter._get_current_time().timestamp())
    return [region.slots_in_use(key) for key in keys]


def _local_gauge_counts(limiter: Any, gauges: Sequence[Any]) -> List[int]:
    """The region's counts; with Redis, the host tier's answer to LiteLLM's mirror pre-read."""
    if _region is not None and _dialect.uses_redis(limiter):
        from .limiter_host_tier_gauges import gauge_pre_read

        return gauge_pre_read(gauges)
    return _gauge_counts(limiter, _dialect.gauge_keys(gauges))


async def _read_local_gauge_counts(self: Any, gauge_keys: List[str], parent_otel_span: Any = None) -> List[int]:
    return _local_gauge_counts(self, gauge_keys)


def _read_local_gauge_counts_of_scopes(self: Any, gauges: Sequence[Any]) -> List[int]:
    return _local_gauge_counts(self, gauges)


def _acquire_parallel_slots_in_memory(
    self: Any, gauges: List[Dict[str, Any]], slot_id: str, parent_otel_span: Any = None
) -> Dict[str, Any]:
    region = _require_local(self)
    now = self._get_current_time().timestamp()
    _release_leaked_slots(region, now)
    keys = [_dialect.gauge_key(gauge) for gauge in gauges]
    taken: List[str] = []
    try:
        for gauge, key in zip(gauges, keys):
            if not region.acquire(key, max(0, gauge["limit"])):
                in_flight = region.slots_in_use(key)
                return {"overall_code": "OVER_LIMIT", "statuses": [self._gauge_status(gauge, in_flight, "OVER_LIMIT")]}
            taken.append(key)
        _held.setdefault(slot_id, (now, []))[1].extend(taken)
        taken = []  # the slot id's now, until its release
    finally:
        for key in taken:  # all or nothing: a refusal (or an error) gives back what it took
            region.release(key)
    return {
        "overall_code": "OK",
        "statuses": [self._gauge_status(gauge, region.slots_in_use(key), "OK") for gauge, key in zip(gauges, keys)],
    }


async def _release_parallel_request_slots(self: Any, acquisition: Dict[str, Any], parent_otel_span: Any = None) -> None:
    if limiter_host_tier_pool.release(acquisition.get("slot_id") or ""):
        return  # units of the host's pool (with Redis): back to it, no Redis call
    held = _held.pop(acquisition.get("slot_id") or "", None)
    if held is None or _region is None:
        raise Decline("not a slot taken in the region")
    for key in held[1]:
        _region.release(key)


# ---- other readers -----------------------------------------------------------------------


def _saturation(dynamic: Any, counter: Any) -> Optional[int]:
    region = _require_local(dynamic.v3_limiter)
    window_key, counter_key = _dialect.counter(counter)
    return region.window_get(window_key, counter_key)[1]


async def _get_saturation_value_from_cache(self: Any, counter_key: str) -> Optional[int]:
    return _saturation(self, counter_key)


async def _get_saturation_value_from_cache_of_counter(self: Any, counter: Any) -> Optional[int]:
    return _saturation(self, counter)


async def _read_tpd_window_start(self: Any, status: Dict[str, Any], parent_otel_span: Any) -> Optional[int]:
    region = _require_local(self.parallel_request_limiter)
    descriptor_key = status.get("descriptor_key") or ""
    if not descriptor_key.endswith(_tpd_suffix):
        return None
    scope = f"{{{descriptor_key}:{status.get('descriptor_value') or ''}}}"
    return region.window_get(scope + ":window", scope + ":tokens")[0]


# ---- the shapes, and install -----------------------------------------------------------------

#: One patch: the shape LiteLLM's function must have (its parameter names per dialect, and
#: whether it is async), what replaces it, and whether it runs whatever the flag says.
_Patch = Tuple[Shape, Callable[..., Any], bool]


def _shapes(prl: Any, dual_cache: Any, store: Any, dynamic: Any, batch: Any) -> Dict[str, List[_Patch]]:
    """Every function the patches replace, for each dialect of LiteLLM this code knows: the one
    place that knows how the releases differ."""
    L = prl._PROXY_MaxParallelRequestsHandler_v3

    def entry(owner: Any, name: str, dialect: str, params: Tuple[str, ...], is_async: bool,
              replacement: Callable[..., Any], always: bool = False) -> _Patch:
        return Shape(owner, name, {dialect: ("self",) + params}, is_async), replacement, always

    def common(d: str) -> List[_Patch]:  # the same in every dialect
        return [
            entry(L, "async_increment_tokens_with_ttl_preservation", d, ("pipeline_operations", "parent_otel_span"),
                  True, async_increment_tokens_with_ttl_preservation),
            entry(L, "async_increment_reservation_aware_tokens", d, ("pipeline_operations", "parent_otel_span"),
                  True, async_increment_reservation_aware_tokens),
            entry(L, "_release_parallel_request_slots", d, ("acquisition", "parent_otel_span"),
                  True, _release_parallel_request_slots, always=True),
            entry(batch, "_read_tpd_window_start", d, ("status", "parent_otel_span"), True, _read_tpd_window_start),
        ]

    keys = "keys"
    table = {
        keys: [
            entry(L, "in_memory_cache_sliding_window", keys, ("keys", "now_int", "window_size"),
                  True, in_memory_cache_sliding_window),
            entry(L, "_batch_get_counter_values", keys, ("keys", "parent_otel_span", "local_only"),
                  True, _batch_get_counter_values),
            entry(L, "_atomic_check_and_increment_in_memory", keys, ("per_counter_meta", "parent_otel_span"),
                  True, _atomic_check_and_increment_in_memory),
            entry(dual_cache, "async_increment_cache_pipeline", keys,
                  ("increment_list", "local_only", "parent_otel_span", "kwargs"), True, dual_cache_increment_pipeline),
            entry(L, "_read_local_gauge_counts", keys, ("gauge_keys", "parent_otel_span"),
                  True, _read_local_gauge_counts),
            entry(L, "_acquire_parallel_slots_in_memory", keys, ("gauges", "slot_id", "parent_otel_span"),
                  True, _acquire_parallel_slots_in_memory),
            entry(dynamic, "_get_saturation_value_from_cache", keys, ("counter_key",),
                  True, _get_saturation_value_from_cache),
            *common(keys),
        ],
    }
    if store is not None:
        s = "store"
        table[s] = [
            entry(L, "in_memory_cache_sliding_window", s, ("counters", "now_int", "window_size"),
                  True, in_memory_cache_sliding_window_of_counters),
            entry(L, "_local_counter_states", s, ("counters",), False, _local_counter_states),
            entry(L, "_atomic_check_and_increment_in_memory", s, ("per_counter_meta",),
                  False, _atomic_check_and_increment_in_memory),
            entry(store, "increment_many", s, ("increments",), True, store_increment_many),
            entry(store, "increment_many_post_call", s, ("increments",), True, store_increment_many),
            entry(L, "_read_local_gauge_counts", s, ("gauges",), False, _read_local_gauge_counts_of_scopes),
            entry(L, "_acquire_parallel_slots_in_memory", s, ("gauges", "slot_id"),
                  False, _acquire_parallel_slots_in_memory),
            entry(dynamic, "_get_saturation_value_from_cache", s, ("counter",),
                  True, _get_saturation_value_from_cache_of_counter),
            *common(s),
        ]
    return table


def _same_kind(original: Any, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """The replacements that only touch the region are written sync; where LiteLLM's step is
    async (up to 1.109), they are awaited as it is."""
    function = getattr(original, "__func__", original)
    if not inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(replacement):
        return replacement

    @functools.wraps(replacement)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return replacement(*args, **kwargs)

    return run


def install(c: Component) -> None:
    global _region, _slot_ttl_s, _tpd_suffix, _dialect
    region = shm.region()
    if region is None:
        raise Decline("no shared region (FAST_LITELLM_SHM=off)")
    from litellm.caching.dual_cache import DualCache
    from litellm.proxy.hooks import parallel_request_limiter_v3 as prl
    from litellm.proxy.hooks.batch_rate_limiter import _PROXY_BatchRateLimiter
    from litellm.proxy.hooks.dynamic_rate_limiter_v3 import _PROXY_DynamicRateLimitHandlerV3

    try:  # by name: the module exists from 1.110 on
        RateLimitStore: Any = importlib.import_module("litellm.redis.stores.rate_limits").RateLimitStore
    except ImportError:  # up to 1.109
        RateLimitStore = None
    import litellm.constants as constants

    table = _shapes(prl, DualCache, RateLimitStore, _PROXY_DynamicRateLimitHandlerV3, _PROXY_BatchRateLimiter)
    names = [(prl, "PARALLEL_REQUEST_SLOT_TTL_SECONDS"), (constants, "BATCH_TPD_DESCRIPTOR_SUFFIX")]
    extra = {"store": [(prl, "WindowGuardedIncrement")]}
    found = {d: problems([shape for shape, _, _ in patches], names + extra.get(d, [])) for d, patches in table.items()}
    dialect = next((d for d, listed in found.items() if not listed), None)
    if dialect is None:
        # Patch nothing (a half-patched limiter would count in two places); name what changed
        # against the closer of the shapes these patches were written for.
        closest = min(found, key=lambda d: len(found[d]))
        log.warning("fast_litellm: %s: this LiteLLM does not match: %s", c.name, "; ".join(found[closest]))
        raise Decline(f"LiteLLM differs from the limiter's {closest!r} shape in: {'; '.join(found[closest])}")

    _region = region
    _slot_ttl_s = float(prl.PARALLEL_REQUEST_SLOT_TTL_SECONDS)
    _tpd_suffix = constants.BATCH_TPD_DESCRIPTOR_SUFFIX
    _dialect = _Keys if dialect == "keys" else _Store(getattr(prl, "WindowGuardedIncrement"))
    failed = []
    for shape, replacement, always in table[dialect]:
        original = inspect.getattr_static(shape.owner, shape.attribute)
        if not c.patch(shape.owner, shape.attribute, _same_kind(original, replacement), always=always):
            failed.append(shape.attribute)
    if failed:
        raise Decline(f"could not patch {', '.join(failed)}")
    _install_host_tier(c, prl, region, dialect)


def _install_host_tier(c: Component, prl: Any, region: shm.Region, dialect: str) -> None:
    """With Redis configured, the v3 limiter's rpm windows go through the host tier
    (limiter_host_tier); unless it is turned off or this LiteLLM's Redis step is not the one
    it was written for, which is logged (LiteLLM's own Redis path then runs)."""
    from . import limiter_host_tier as tier

    settings = _config.host_tier_settings()
    if not settings.on:
        log.info("fast_litellm: %s: host tier off (FAST_LITELLM_HOST_TIER=off)", c.name)
        return
    try:
        patches = tier.patches(prl) if dialect == "keys" else tier.store_patches(prl)
    except AttributeError as missing:  # a name the replacements are built from
        listed = [str(missing)]
    else:
        listed = problems([Shape(owner, name, {dialect: params}) for owner, name, params, _ in patches])
    if listed:
        log.warning("fast_litellm: %s: host tier off, this LiteLLM's Redis step differs: %s", c.name,
                    "; ".join(listed))
        return
    tier.configure(region, settings)
    for owner, name, _, replacement in patches:
        original = inspect.getattr_static(owner, name)
        if not c.patch(owner, name, _same_kind(original, replacement), always=name in tier.ALWAYS):
            log.warning("fast_litellm: %s: host tier off: could not patch %s", c.name, name)
