"""rate_limiter with Redis: the host tier (fast_litellm.host_tier) for the v3 limiter's rpm
windows and TPM reservations, when LiteLLM is configured with Redis (docs/host-tier.md).

What LiteLLM does
    `should_rate_limit` sends every (window, counter) pair of a request to Redis in
    `_execute_redis_batch_rate_limiter_script` (BATCH_RATE_LIMITER_SCRIPT: INCR each counter,
    opening windows), one script call per hash tag per request, then checks the counts
    against the limits that `_collect_windowed_keys_and_gauges` gathered.

What this does
    The same step, for `:requests` counters, takes each pair's unit from this host's lease
    in the region and asks Redis only when the lease is empty (one lease call for all the
    pairs that lack units). Each pair counts on its own, as LiteLLM's INCR does. A pair that
    gets its unit reports an estimate of the window's count (at most the limit); one that
    does not reports limit + 1, so LiteLLM's own check refuses it.
    The pre-read of LiteLLM's in-memory mirror of Redis (`_batch_get_counter_values`,
    local_only) answers "nothing known" for such requests, so each goes on to the lease: a
    refused key is refused there without a Redis call (the dry marker), and admitted again as
    soon as another host's units come back, where LiteLLM's mirror would refuse it for up to
    a window.
    TPM reservations (`reserve_tpm_tokens` and every other check-and-increment by N, which
    LiteLLM runs as CHECK_AND_INCREMENT_BY_N_SCRIPT once per descriptor in
    `_atomic_lua_per_descriptor`) take their tokens from the host's leases, all or nothing.
    Everything else stays LiteLLM's: the statuses and headers (built by LiteLLM's own
    `_build_atomic_response` from the reply its script would have given), the post-call
    reconciliation (its INCRBY of actual - reserved, one script per request),
    and the max_parallel_requests gauges (one Redis call each).
    A request with a `:tokens` pair in the batch step (TPM reservations turned off with
    LITELLM_TPM_TOKEN_RESERVATION_ENABLED=false) is declined to LiteLLM's script whole, and so
    is a check-and-increment by 0 (a read of the count).

Differences from LiteLLM accepted
    - `limit_remaining` (x-ratelimit-remaining headers) is computed from an estimate of the
      count (what Redis last reported to this host less its unspent units), not
      the exact count after this request.
    - Redis counts units granted to hosts, not requests seen: a refused request is not
      counted (LiteLLM's INCR counts it), so a counter does not grow past the limit.
    - While Redis cannot be reached, a reservation the down policy admits has window 0, so
      LiteLLM's window-guarded reconciliation skips it: the usage is charged at the estimate
      (the debt) when Redis is back.

FAST_LITELLM_HOST_TIER=off leaves LiteLLM's Redis path alone (the limiter then declines
whenever Redis is configured, as before). FAST_LITELLM_REDIS_HOSTS (default 1) is how many
hosts share the Redis at least (the hosts heard from through the lease calls' heartbeat count
when more): it sizes the leases, never their correctness, and divides the local share of
FAST_LITELLM_REDIS_DOWN_POLICY=local-share. FAST_LITELLM_REDIS_TIMEOUT_MS (250) bounds a
lease call.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import shm
from ._acceleration import Decline
from ._config import HostTierSettings
from .host_tier import HostTier, Limit

log = logging.getLogger("fast_litellm")

#: What `_collect_windowed_keys_and_gauges` gathered for the request this task is checking.
_metadata: "contextvars.ContextVar[Optional[Mapping[str, Any]]]" = contextvars.ContextVar(
    "fast_litellm_window_metadata", default=None)
_tiers: "weakref.WeakKeyDictionary[Any, HostTier]" = weakref.WeakKeyDictionary()
_region: Optional[shm.Region] = None
_settings: Optional[HostTierSettings] = None


class _LiteLLMRedis:
    """LiteLLM's own `RedisCache` as the client HostTier registers its scripts on."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def register_script(self, script: str) -> Any:
        return self.cache.async_register_script(script)


def _tier(limiter: Any) -> HostTier:
    tier = _tiers.get(limiter)
    if tier is None:
        redis_cache = limiter.internal_usage_cache.dual_cache.redis_cache
        if _region is None or _settings is None or redis_cache is None:
            raise Decline("no region or no Redis")
        tier = _tiers[limiter] = HostTier(_region, _LiteLLMRedis(redis_cache), hosts=_settings.hosts,
                                          down_policy=_settings.down_policy, timeout_s=_settings.timeout_s)
    return tier


_warned_cluster = False


def _cluster(limiter: Any) -> bool:
    """Redis Cluster is not served yet (one lease call takes the pairs of several descriptors,
    which live in different hash slots): LiteLLM's own path runs, said once."""
    global _warned_cluster
    is_cluster = getattr(limiter, "_is_redis_cluster", None)
    if not (callable(is_cluster) and is_cluster()):
        return False
    if not _warned_cluster:
        _warned_cluster = True
        log.warning("fast_litellm: host tier off for Redis Cluster (not served yet): LiteLLM's own Redis path runs")
    return True


def collect_windowed_keys_and_gauges(original: Any) -> Any:
    """LiteLLM's own `original`, keeping the limits it gathers for the Redis step of the same
    request. (The original is held in the closure, where the import-order check does not
    take it for a stale copy.)"""

    def collect(self: Any, descriptors: Sequence[Any], skip_tpm_check: bool) -> Any:
        result = original(self, descriptors=descriptors, skip_tpm_check=skip_tpm_check)
        _metadata.set(result[1])
        return result

    return collect


def pre_read(limiter: Any, keys: List[str]) -> List[Optional[int]]:
    """`should_rate_limit`'s pre-read of LiteLLM's in-memory mirror of Redis, for a request
    whose counters are all `:requests`: nothing known, so the check goes on to the Redis step,
    which the host tier answers from the lease. LiteLLM's mirror would keep refusing, for up to
    a window, a key that another host's returned units have since made admissible."""
    from .limiter import _pairs

    if _settings is None or _cluster(limiter):
        raise Decline("no host tier")
    if any(not counter_key.endswith(":requests") for _, counter_key in _pairs(keys)):
        raise Decline("a tokens counter: LiteLLM's mirror answers")
    return [None] * len(keys)


async def execute_redis_batch_rate_limiter_script(self: Any, keys_to_fetch: List[str], now_int: int) -> List[Any]:
    from .limiter import _pairs

    metadata = _metadata.get()
    if metadata is None:
        raise Decline("no limits gathered for this request")
    if _cluster(self):
        raise Decline("Redis Cluster: a lease call would span hash slots")
    pairs = _pairs(keys_to_fetch)
    limits: List[Limit] = []
    for window_key, counter_key in pairs:
        meta: Optional[Dict[str, Any]] = metadata.get(window_key)
        if not counter_key.endswith(":requests") or meta is None or meta.get("requests_limit") is None:
            raise Decline("a tokens counter: LiteLLM's script counts it")
        size = int(self.window_size)
        limits.append(Limit(window_key, counter_key, int(meta["requests_limit"]), 1, size, size))
    try:
        answers = await _tier(self).admit_each(limits)
    except shm.RegionFullError:
        raise Decline("region table full") from None
    values: List[Any] = []
    for lim, (taken, start, count) in zip(limits, answers):
        values += [str(start or now_int), count if taken else lim.limit + 1]
    return values


async def atomic_lua_per_descriptor(self: Any, descriptor_groups: List[Tuple[Any, Any, List[Dict[str, Any]]]],
                                    parent_otel_span: Any = None) -> Dict[str, Any]:
    """TPM reservations (and any other check-and-increment by N): LiteLLM runs
    CHECK_AND_INCREMENT_BY_N_SCRIPT once per descriptor group, all or nothing over the groups.
    Here every counter of every group takes its increment from the host's lease, all or nothing
    (`HostTier.admit`), with one lease call for the counters whose lease is short. The reply
    each group's script would have given is rebuilt and read by LiteLLM's own
    `_build_atomic_response`, so statuses and the reservation windows that guard the post-call
    reconciliation are LiteLLM's: the windows are Redis's window starts, and the reconciliation
    (LiteLLM's INCRBY of actual - reserved, to Redis, window-guarded where its release records
    the window) stays correct with units leased, since Redis's counter holds them either way."""
    if _cluster(self):
        raise Decline("Redis Cluster: a lease call would span hash slots")
    limits: List[Limit] = []
    for _keys, _args, group in descriptor_groups:
        for meta in group:
            if int(meta["increment"]) <= 0:
                raise Decline("an increment of 0 is a read of the count: LiteLLM's script answers it")
            limits.append(Limit(meta["window_key"], meta["counter_key"], int(meta["current_limit"]),
                                int(meta["increment"]), int(meta["ttl"]), int(meta["window_size"]),
                                dry_poll=meta["rate_limit_type"] != "tokens"))
    tier = _tier(self)
    try:
        admission = await tier.admit(limits)
    except shm.RegionFullError:
        raise Decline("region table full") from None
    first = 0
    responses: List[Dict[str, Any]] = []
    for _keys, _args, group in descriptor_groups:
        if admission.denied_index is not None:
            if admission.denied_index < first + len(group):
                lim = limits[admission.denied_index]
                # Refused: short of the increment, as the script's {1, index, counter, limit} says.
                counter = max(tier.estimate(lim), lim.limit - lim.cost + 1)
                raw = [1, admission.denied_index - first + 1, counter, lim.limit]
                return dict(self._build_atomic_response(raw, group))
        else:
            raw = [0]
            for n, lim in enumerate(limits[first:first + len(group)]):
                raw += [tier.estimate(lim), admission.windows[first + n]]
            responses.append(self._build_atomic_response(raw, group))
        first += len(group)
    if len(responses) == 1:
        return dict(responses[0])
    return {"overall_code": "OK", "statuses": [s for r in responses for s in r["statuses"]],
            "reservation_windows": frozenset(w for r in responses for w in r.get("reservation_windows", ()))}


def patches(prl: Any) -> List[Tuple[Any, str, Tuple[str, ...], Any]]:
    """(owner, name, parameters, replacement) of the host tier's patches, for the limiter's
    shape check."""
    L = prl._PROXY_MaxParallelRequestsHandler_v3
    collect = inspect.getattr_static(L, "_collect_windowed_keys_and_gauges", None)
    return [
        (L, "_collect_windowed_keys_and_gauges", ("self", "descriptors", "skip_tpm_check"),
         collect_windowed_keys_and_gauges(collect)),
        (L, "_execute_redis_batch_rate_limiter_script", ("self", "keys_to_fetch", "now_int"),
         execute_redis_batch_rate_limiter_script),
        (L, "_atomic_lua_per_descriptor", ("self", "descriptor_groups", "parent_otel_span"),
         atomic_lua_per_descriptor),
    ]


def configure(region: shm.Region, settings: HostTierSettings) -> None:
    global _region, _settings
    _region, _settings = region, settings
