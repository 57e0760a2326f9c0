"""rate_limiter: the proxy's default limiter keeps its counters in the shared region.

What LiteLLM does, per process
    `_PROXY_MaxParallelRequestsHandler_v3` (proxy/hooks/parallel_request_limiter_v3.py, "PRL")
    keeps, without Redis, every rate-limit counter in the `InMemoryCache` of
    `ProxyLogging.internal_usage_cache` (proxy/utils.py:1501): one per worker, at most 200
    entries. Each descriptor (api key, user, team, end user, per-key model, tag, ...) has a
    fixed window `{k:v}:window` (its start, opened by the first request after the last one
    ended, LITELLM_RATE_LIMIT_WINDOW_SIZE long) shared by its `{k:v}:requests` and
    `{k:v}:tokens` counters, and a `{k:v}:max_parallel_requests` slot registry. So N workers
    admit N times every limit, and past a few dozen active keys (three entries each) the
    cache evicts counters it still needs.

What this component does
    The same counters and slots live in the region, so every process of the host sees one
    count. The patches replace the in-memory steps of LiteLLM 1.106.2 and leave everything
    around them (descriptor building, `should_rate_limit`'s pre-read and checks,
    `is_cache_list_over_limit`, statuses, headers, the request stash) to LiteLLM:
    - windows: `in_memory_cache_sliding_window` (PRL:1199) -> `Region.window_add`, the limiter's
      own clock (`time_provider`) deciding windows; increment before the check, as LiteLLM:
      the first refused request counts, then the pre-read refuses without counting;
    - reads: `_batch_get_counter_values` (PRL:1413; the pre-read and the read_only path)
      -> `Region.window_get`;
    - TPM reservation: `_atomic_check_and_increment_in_memory` (PRL:2449) ->
      `Region.window_reserve`, all or nothing across processes;
    - post-call reconciliation and refunds, signed deltas into the live window
      (`Region.window_adjust`): `async_increment_tokens_with_ttl_preservation` (PRL:4448),
      `async_increment_reservation_aware_tokens` (PRL:4560; ops that carry their reservation's
      window start apply only in that window, as LiteLLM's), and, for the failure paths that
      write through the cache itself (`async_log_failure_event`, `async_post_call_failure_hook`),
      `DualCache.async_increment_cache_pipeline` (caching/dual_cache.py:644) of a cache a
      limiter reserved in, when every key is a limiter counter; any other call (the router's
      usage counters, ...) is declined, and counted so in `status()`;
    - max_parallel_requests: `_acquire_parallel_slots_in_memory` (PRL:1871; all or nothing),
      `_release_parallel_request_slots_in_memory` (PRL:2025; always: it gives back the region
      slots an accelerated acquire took, whatever the flag or breaker say since, and declines
      any other slot id) and `_read_local_gauge_counts` (PRL:1858) -> `Region.acquire`,
      `release`, `slots_in_use`. Slots of a killed worker come back (the region reaps them);
    - the other readers of these counters: `_PROXY_DynamicRateLimitHandlerV3.
      _get_saturation_value_from_cache` (dynamic_rate_limiter_v3.py:103) and
      `_PROXY_BatchRateLimiter._read_tpd_window_start` (batch_rate_limiter.py:792).

Redis
    When LiteLLM is configured with Redis (`limiter.batch_rate_limiter_script`, or its cache's
    `redis_cache`, set), every patched path declines: LiteLLM's Redis path, and its local
    fallback when Redis fails, run untouched, and nothing is counted twice.

Full table (RegionFullError)
    FAST_LITELLM_SHM_FULL_POLICY=open declines to LiteLLM's own per-worker counts;
    closed refuses (a window step reports the pair at the region's largest count, a
    reservation is OVER_LIMIT). A post-call adjustment that finds no room is declined.

Differences from LiteLLM accepted (the decisions and statuses are otherwise LiteLLM's own)
    - No 200-entry eviction: every key keeps its counter.
    - Counters never go below 0. LiteLLM's in-memory counter goes negative when a refund
      lands in a window after the one it reserved in, giving that window extra room.
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
import inspect
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import shm
from ._acceleration import Component, Decline

log = logging.getLogger("fast_litellm")

#: The region's largest count: what a window step reports for a pair it had no room to
#: count, under fail-closed, so LiteLLM's own check refuses it.
_FULL_COUNT = 2**48 - 1

_region: Optional[shm.Region] = None
#: How long LiteLLM counts a slot whose release never came (PARALLEL_REQUEST_SLOT_TTL_SECONDS).
_slot_ttl_s: float = 3600.0
#: LiteLLM's suffix of daily-token (batch) descriptor keys (BATCH_TPD_DESCRIPTOR_SUFFIX).
_tpd_suffix: str = "_tpd"
#: DualCaches a limiter reserved tokens in: the failure paths refund through them.
_reserving_caches: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: Region slots this process holds, by LiteLLM slot id: (acquire time, gauge keys), oldest first.
_held: "OrderedDict[str, Tuple[float, List[str]]]" = OrderedDict()

os.register_at_fork(after_in_child=_held.clear)  # a forked child holds none of its parent's slots


def _uses_redis(limiter: Any) -> bool:
    return (
        getattr(limiter, "batch_rate_limiter_script", None) is not None
        or limiter.internal_usage_cache.dual_cache.redis_cache is not None
    )


def _require_local(limiter: Any) -> shm.Region:
    if _region is None or _uses_redis(limiter):
        raise Decline("LiteLLM is configured with Redis")
    return _region


@functools.lru_cache(maxsize=4096)
def _window_key(counter_key: str) -> Optional[str]:
    """`{k:v}:window` for a limiter counter `{k:v}:requests|tokens`; None for any other key.
    (Cached: it is on every request's path, and hot keys come again and again.)"""
    prefix, _, kind = counter_key.rpartition(":")
    if kind in ("requests", "tokens") and prefix.startswith("{") and prefix.endswith("}"):
        return prefix + ":window"
    return None


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


def _full(region: shm.Region) -> None:
    if region.fail_open:
        raise Decline("region table full (fail-open): LiteLLM's per-worker counters decide")


# ---- windows ---------------------------------------------------------------------------


async def in_memory_cache_sliding_window(self: Any, keys: List[str], now_int: int, window_size: int) -> List[Any]:
    """Per pair [window_start, counter]: the start is a str when this call opened the window,
    else the int LiteLLM's cache reads back, as `_in_memory_cache_sliding_window` returns."""
    region = _require_local(self)
    values: List[Any] = []
    for window_key, counter_key in _pairs(keys):
        try:
            start, count, opened = region.window_add(window_key, counter_key, now_int, window_size)
        except shm.RegionFullError:
            _full(region)
            values += (str(now_int), _FULL_COUNT)
            continue
        values += (str(start) if opened else start, count)
    return values


async def _batch_get_counter_values(
    self: Any, keys: List[str], parent_otel_span: Any, local_only: bool
) -> List[Optional[int]]:
    region = _require_local(self)
    values: List[Optional[int]] = []
    for window_key, counter_key in _pairs(keys):
        values += region.window_get(window_key, counter_key)
    return values


async def _atomic_check_and_increment_in_memory(
    self: Any, per_counter_meta: Sequence[Dict[str, Any]], parent_otel_span: Any = None
) -> Dict[str, Any]:
    region = _require_local(self)
    now_int = int(self._get_current_time().timestamp())
    _reserving_caches.add(self.internal_usage_cache.dual_cache)
    items = [
        (m["window_key"], m["counter_key"], m["current_limit"], m["increment"], m["window_size"])
        for m in per_counter_meta
    ]
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
            (meta["counter_key"], str(start), "local") for meta, (start, _) in zip(per_counter_meta, counts)
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


def _adjust(region: shm.Region, operations: Sequence[Dict[str, Any]]) -> List[Optional[int]]:
    """Each op's signed increment into its counter's live window (LiteLLM: an unconditional
    cache increment). Declined, before any write, unless every key is a limiter counter."""
    targets = []
    for op in operations:
        window_key = _window_key(op["key"])
        if window_key is None:
            raise Decline("not limiter counters")
        targets.append((window_key, op["key"], int(op["increment_value"])))
    try:
        return [region.window_adjust(window_key, counter_key, delta) for window_key, counter_key, delta in targets]
    except shm.RegionFullError:
        raise Decline("region table full") from None


async def async_increment_tokens_with_ttl_preservation(
    self: Any, pipeline_operations: List[Dict[str, Any]], parent_otel_span: Any = None
) -> None:
    region = _require_local(self)
    if pipeline_operations:
        _adjust(region, pipeline_operations)


async def async_increment_reservation_aware_tokens(
    self: Any, pipeline_operations: Sequence[Dict[str, Any]], parent_otel_span: Any = None
) -> None:
    region = _require_local(self)
    unguarded: List[Dict[str, Any]] = []
    guarded: List[Dict[str, Any]] = []
    for op in pipeline_operations:
        has_window = op.get("window_key") is not None and op.get("expected_window_start") is not None
        (guarded if has_window else unguarded).append(op)
    if any(_window_key(op["key"]) is None for op in guarded):
        raise Decline("not limiter counters")
    _adjust(region, unguarded)
    try:
        for op in guarded:
            delta = int(op["increment_value"])
            if op.get("reservation_backend") == "local":
                # Only in the window the reservation counted in; a later window never saw it.
                region.window_adjust(op["window_key"], op["key"], delta, int(op["expected_window_start"]))
            elif delta > 0:
                # Reserved in Redis, which is gone: LiteLLM adds charges, drops refunds.
                region.window_adjust(op["window_key"], op["key"], delta)
    except shm.RegionFullError:
        raise Decline("region table full") from None


async def dual_cache_increment_pipeline(
    self: Any,
    increment_list: List[Dict[str, Any]],
    local_only: bool = False,
    parent_otel_span: Any = None,
    **kwargs: Any,
) -> List[Optional[int]]:
    """The failure paths' refunds of a reservation made in the region (they write through
    the limiter's DualCache). Every other cache, or key, keeps LiteLLM's path."""
    if _region is None or self.redis_cache is not None or self not in _reserving_caches:
        raise Decline("not a cache a limiter reserved in")
    return _adjust(_region, increment_list)


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


async def _read_local_gauge_counts(self: Any, gauge_keys: List[str], parent_otel_span: Any = None) -> List[int]:
    region = _require_local(self)
    _release_leaked_slots(region, self._get_current_time().timestamp())
    return [region.slots_in_use(key) for key in gauge_keys]


async def _acquire_parallel_slots_in_memory(
    self: Any, gauges: List[Dict[str, Any]], slot_id: str, parent_otel_span: Any = None
) -> Dict[str, Any]:
    region = _require_local(self)
    now = self._get_current_time().timestamp()
    _release_leaked_slots(region, now)
    taken: List[str] = []
    try:
        for gauge in gauges:
            key = gauge["counter_key"]
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
        "statuses": [self._gauge_status(gauge, region.slots_in_use(gauge["counter_key"]), "OK") for gauge in gauges],
    }


async def _release_parallel_request_slots_in_memory(
    self: Any, counter_keys: List[str], slot_id: str, parent_otel_span: Any
) -> None:
    held = _held.pop(slot_id, None)
    if held is None or _region is None:
        raise Decline("not a slot taken in the region")
    for key in held[1]:
        _region.release(key)


# ---- other readers -----------------------------------------------------------------------


async def _get_saturation_value_from_cache(self: Any, counter_key: str) -> Optional[int]:
    region = _require_local(self.v3_limiter)
    window_key = _window_key(counter_key)
    if window_key is None:
        raise Decline("not a limiter counter")
    return region.window_get(window_key, counter_key)[1]


async def _read_tpd_window_start(self: Any, status: Dict[str, Any], parent_otel_span: Any) -> Optional[int]:
    region = _require_local(self.parallel_request_limiter)
    descriptor_key = status.get("descriptor_key") or ""
    if not descriptor_key.endswith(_tpd_suffix):
        return None
    scope = f"{{{descriptor_key}:{status.get('descriptor_value') or ''}}}"
    return region.window_get(scope + ":window", scope + ":tokens")[0]


# ---- install -------------------------------------------------------------------------------


def install(c: Component) -> None:
    global _region, _slot_ttl_s, _tpd_suffix
    region = shm.region()
    if region is None:
        raise Decline("no shared region (FAST_LITELLM_SHM=off)")
    from litellm.caching.dual_cache import DualCache
    from litellm.constants import BATCH_TPD_DESCRIPTOR_SUFFIX
    from litellm.proxy.hooks import parallel_request_limiter_v3 as prl
    from litellm.proxy.hooks.batch_rate_limiter import _PROXY_BatchRateLimiter
    from litellm.proxy.hooks.dynamic_rate_limiter_v3 import _PROXY_DynamicRateLimitHandlerV3

    _region = region
    _slot_ttl_s = float(prl.PARALLEL_REQUEST_SLOT_TTL_SECONDS)
    _tpd_suffix = BATCH_TPD_DESCRIPTOR_SUFFIX
    limiter = prl._PROXY_MaxParallelRequestsHandler_v3
    patches: List[Tuple[Any, str, Tuple[str, ...], Any, bool]] = [
        (limiter, "in_memory_cache_sliding_window", ("self", "keys", "now_int", "window_size"),
         in_memory_cache_sliding_window, False),
        (limiter, "_batch_get_counter_values", ("self", "keys", "parent_otel_span", "local_only"),
         _batch_get_counter_values, False),
        (limiter, "_atomic_check_and_increment_in_memory", ("self", "per_counter_meta", "parent_otel_span"),
         _atomic_check_and_increment_in_memory, False),
        (limiter, "async_increment_tokens_with_ttl_preservation", ("self", "pipeline_operations", "parent_otel_span"),
         async_increment_tokens_with_ttl_preservation, False),
        (limiter, "async_increment_reservation_aware_tokens", ("self", "pipeline_operations", "parent_otel_span"),
         async_increment_reservation_aware_tokens, False),
        (DualCache, "async_increment_cache_pipeline",
         ("self", "increment_list", "local_only", "parent_otel_span", "kwargs"), dual_cache_increment_pipeline, False),
        (limiter, "_read_local_gauge_counts", ("self", "gauge_keys", "parent_otel_span"),
         _read_local_gauge_counts, False),
        (limiter, "_acquire_parallel_slots_in_memory", ("self", "gauges", "slot_id", "parent_otel_span"),
         _acquire_parallel_slots_in_memory, False),
        (limiter, "_release_parallel_request_slots_in_memory", ("self", "counter_keys", "slot_id", "parent_otel_span"),
         _release_parallel_request_slots_in_memory, True),
        (_PROXY_DynamicRateLimitHandlerV3, "_get_saturation_value_from_cache", ("self", "counter_key"),
         _get_saturation_value_from_cache, False),
        (_PROXY_BatchRateLimiter, "_read_tpd_window_start", ("self", "status", "parent_otel_span"),
         _read_tpd_window_start, False),
    ]
    # Patch only what still looks like what these replacements were written against: a
    # missing or changed method leaves the whole component off (a half-patched limiter
    # would count in two places).
    failed = []
    for owner, name, params, accelerated, always in patches:
        original = getattr(owner, name, None)
        if original is not None and tuple(inspect.signature(original).parameters) != params:
            log.warning("fast_litellm: %s: cannot patch %s.%s: its signature changed", c.name, owner.__name__, name)
            failed.append(name)
        elif not c.patch(owner, name, accelerated, always=always):
            failed.append(name)
    if failed:
        raise Decline(f"LiteLLM differs from 1.106.2 in {', '.join(failed)}")
