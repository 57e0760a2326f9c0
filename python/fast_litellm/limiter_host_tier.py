"""rate_limiter with Redis: the host tier (fast_litellm.host_tier) for the v3 limiter's rpm
windows, TPM reservations and post-call token increments, when LiteLLM is configured with
Redis (docs/host-tier.md); on LiteLLM 1.110's RateLimitStore the same (store_patches).

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
    The read-only check (before the request's body, from 1.109) is answered from the lease
    too: Redis's counter counts units leased, spent or not (`_read_only_count`).
    The pre-read of LiteLLM's in-memory mirror of Redis (`_batch_get_counter_values`,
    local_only) answers "nothing known" for such requests, so each goes on to the lease: a
    refused key is refused there without a Redis call (the dry marker), and admitted again as
    soon as another host's units come back, where LiteLLM's mirror would refuse it for up to
    a window.
    TPM reservations (`reserve_tpm_tokens` and every other check-and-increment by N, which
    LiteLLM runs as CHECK_AND_INCREMENT_BY_N_SCRIPT once per descriptor in
    `_atomic_lua_per_descriptor`) take their tokens from the host's leases, all or nothing.
    The post-call token increments (`async_increment_tokens_with_ttl_preservation`, and the
    window-guarded `async_increment_reservation_aware_tokens`): an increment of a counter with
    a token limit is settled in the host's lease of the live window when this process holds
    its window (`HostTier.settle`: a refund goes into the lease, an extra charge comes out of
    it), and one of a counter no token limit reads (no pre-call check of this process saw a
    token limit on it in TOKEN_LIMITED_S) is summed with the others of its counter and sent
    once per flush_s in a script that counts as LiteLLM's TOKEN_INCREMENT_SCRIPT does. LiteLLM
    sends the rest (limiter_host_tier_increments).
    The max_parallel_requests gauges stay LiteLLM's sorted sets: each host holds a pool of
    members in them that its requests take and give back without a Redis call
    (limiter_host_tier_pool), and LiteLLM's own acquire, where the pool does not serve, runs
    after a prologue that drops the slots of hosts that stopped refreshing them for SLOT_TTL_S
    (30 s; LiteLLM keeps a dead host's slots for an hour): limiter_host_tier_gauges. Everything else stays LiteLLM's: the
    statuses and headers (built by LiteLLM's own `_build_atomic_response` from the reply its
    script would have given).
    A request with a `:tokens` pair in the batch step (TPM reservations turned off with
    LITELLM_TPM_TOKEN_RESERVATION_ENABLED=false) is declined to LiteLLM's script whole, and so
    is a check-and-increment by 0 (a read of the count).

Differences from LiteLLM accepted
    - `limit_remaining` (x-ratelimit-remaining headers) is computed from an estimate of the
      count (what Redis last reported to this host less its unspent units), not
      the exact count after this request.
    - Redis counts units granted to hosts, not requests seen: a refused request is not
      counted (LiteLLM's INCR counts it), so a counter does not grow past the limit.
    - A refund settled in the lease is this host's to spend until it is idle for idle_s (then
      returned), where LiteLLM's DECRBY gives it to every host at once.
    - Token counts of counters no limit reads reach Redis up to flush_s late (a limit set at
      run time sees that much of their usage late; LiteLLM's own key cache already delays a new
      limit by its TTL), and a killed worker loses its last flush_s of them.
    - With LiteLLM's fail_closed_rate_limit_enforcement, a check is refused (LiteLLM's own
      RateLimitUnverifiableError) only when Redis cannot be reached and a lease is short: the
      units a lease holds were granted by Redis and are spent without asking it again.
    - While Redis cannot be reached, a reservation the down policy admits has window 0, so
      LiteLLM's window-guarded reconciliation skips it: the usage is charged at the estimate
      (the debt) when Redis is back.

FAST_LITELLM_HOST_TIER=off leaves LiteLLM's Redis path alone (the limiter then declines
whenever Redis is configured, as before). FAST_LITELLM_REDIS_HOSTS (default 1) is how many
hosts share the Redis at least (the hosts heard from through the lease calls' heartbeat count
when more): it sizes the leases, never their correctness, and divides the local share of
FAST_LITELLM_REDIS_DOWN_POLICY=local-share. FAST_LITELLM_REDIS_TIMEOUT_MS (250) bounds a
lease call. FAST_LITELLM_REDIS_FLUSH_MS (1000; 0 sends each increment as LiteLLM does) is flush_s.
"""

from __future__ import annotations

import atexit
import contextvars
import inspect
import logging
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import shm
from ._acceleration import Decline, OriginalRaised
from ._config import HostTierSettings
from .host_tier import RETURN_SCRIPT, HostTier, Limit, RedisUnverifiable, _clock_s

log = logging.getLogger("fast_litellm")

#: What `_collect_windowed_keys_and_gauges` gathered for the request this task is checking.
_metadata: "contextvars.ContextVar[Optional[Mapping[str, Any]]]" = contextvars.ContextVar(
    "fast_litellm_window_metadata", default=None)
_tiers: "weakref.WeakKeyDictionary[Any, HostTier]" = weakref.WeakKeyDictionary()
#: `{scope}:tokens` counters this process saw a token limit on in a pre-call check -> when (clock s).
_token_limited: Dict[str, float] = {}
#: How long a counter seen with a token limit stays treated as limited without being seen again.
TOKEN_LIMITED_S = 600.0
#: rate_limit fields of a descriptor that are not token limits.
_NOT_TOKEN_LIMITS = ("requests_per_unit", "max_parallel_requests", "window_size")
_region: Optional[shm.Region] = None
_settings: Optional[HostTierSettings] = None


class _LiteLLMRedis:
    """LiteLLM's own `RedisCache` as the client HostTier registers its scripts on."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def register_script(self, script: str) -> Any:
        return self.cache.async_register_script(script)


def sync_script(redis_cache: Any, text: str) -> Optional[Callable[..., Any]]:
    """A script on LiteLLM's synchronous client, for exit handlers (no event loop is left),
    its keys namespaced as `RedisCache.async_register_script` namespaces them."""
    client = getattr(redis_cache, "redis_client", None)
    if client is None or not hasattr(client, "register_script"):
        return None
    script = client.register_script(text)
    namespaced = getattr(redis_cache, "check_and_fix_namespace", None) or (lambda key: key)
    return lambda keys, args: script(keys=[namespaced(k) for k in keys], args=args)


def _without_redis(limiter: Any) -> bool:
    store = getattr(limiter, "rate_limits", None)  # 1.110's RateLimitStore
    if store is not None:
        return not store.has_redis
    return getattr(limiter.internal_usage_cache.dual_cache, "redis_cache", None) is None


def _tier(limiter: Any) -> HostTier:
    tier = _tiers.get(limiter)
    if tier is None:
        redis_cache = limiter.internal_usage_cache.dual_cache.redis_cache
        if _region is None or _settings is None or redis_cache is None:
            raise Decline("no region or no Redis")
        tier = _tiers[limiter] = HostTier(_region, _LiteLLMRedis(redis_cache), hosts=_settings.hosts,
                                          down_policy=_settings.down_policy, timeout_s=_settings.timeout_s,
                                          refill_ahead=_settings.refill_ahead)
        # A worker that exits (gunicorn's sys.exit) gives its leases back with LiteLLM's sync client.
        sync_return = sync_script(redis_cache, RETURN_SCRIPT)
        if sync_return is not None:
            atexit.register(tier.give_back_at_exit, sync_return)
        fail_closed = getattr(limiter, "_fail_closed_resolver", None)  # from 1.105
        if callable(fail_closed):
            tier.fail_closed = lambda: bool(fail_closed())
    return tier


def _refuse_unverifiable(limiter: Any, script: str, error: RedisUnverifiable) -> Exception:
    """LiteLLM's own fail-closed refusal (RateLimitUnverifiableError, a 503) of a check the tier
    could not verify, passed through the guard; a Decline if fail-closed was turned off since."""
    try:
        limiter._reject_if_rate_limit_unverifiable(script, error)
    except Exception as refusal:  # noqa: BLE001 - LiteLLM's answer, whatever its type
        return OriginalRaised(refusal)
    return Decline("fail-closed is off: LiteLLM's own path answers")


_warned_cluster = False


def _cluster(limiter: Any) -> bool:
    """Redis Cluster is not served yet (one lease call takes the pairs of several descriptors,
    which live in different hash slots): LiteLLM's own path runs, said once."""
    global _warned_cluster
    is_cluster = getattr(limiter, "_is_redis_cluster", None)  # up to 1.109
    if callable(is_cluster):
        if not is_cluster():
            return False
    else:
        from litellm.caching.redis_cluster_cache import RedisClusterCache

        if not isinstance(limiter.internal_usage_cache.dual_cache.redis_cache, RedisClusterCache):
            return False
    if not _warned_cluster:
        _warned_cluster = True
        log.warning("fast_litellm: host tier off for Redis Cluster (not served yet): LiteLLM's own Redis path runs")
    return True


def _note_token_limits(descriptors: Sequence[Any]) -> None:
    """Records the `:tokens` counters of descriptors that carry any token limit (TPM, or any
    rate_limit field but requests, parallel requests and the window), so that their post-call
    increments are never deferred."""
    now = _clock_s()
    for descriptor in descriptors:
        rate_limit = descriptor.get("rate_limit") or {}
        if any(v is not None for k, v in rate_limit.items() if k not in _NOT_TOKEN_LIMITS):
            _token_limited[f"{{{descriptor['key']}:{descriptor['value']}}}:tokens"] = now


def collect_windowed_keys_and_gauges(original: Any) -> Any:
    """LiteLLM's own `original`, keeping the limits it gathers for the Redis step of the same
    request, and noting which counters have a token limit. (The original is held in the
    closure, where the import-order check does not take it for a stale copy.)"""

    def collect(self: Any, descriptors: Sequence[Any], skip_tpm_check: bool) -> Any:
        _note_token_limits(descriptors)
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


def _request_limits(limiter: Any, pairs: Sequence[Tuple[str, str]], metadata_keys: Sequence[Any]) -> List[Limit]:
    """The Limits of a request's (window key, counter key) pairs, with the limits
    `_collect_windowed_keys_and_gauges` gathered (keyed by window key up to 1.109, by
    RateLimitScope from 1.110); declined unless every pair is an rpm window."""
    metadata = _metadata.get()
    if metadata is None:
        raise Decline("no limits gathered for this request")
    if _cluster(limiter):
        raise Decline("Redis Cluster: a lease call would span hash slots")
    size = int(limiter.window_size)
    limits: List[Limit] = []
    for (window_key, counter_key), metadata_key in zip(pairs, metadata_keys):
        meta: Optional[Mapping[str, Any]] = metadata.get(metadata_key)
        if not counter_key.endswith(":requests") or meta is None or meta.get("requests_limit") is None:
            raise Decline("a tokens counter: LiteLLM's script counts it")
        limits.append(Limit(window_key, counter_key, int(meta["requests_limit"]), 1, size, size))
    return limits


async def _admit_windows(limiter: Any, limits: Sequence[Limit], now_int: int) -> List[Tuple[str, int]]:
    """(window start, count) per limit, as LiteLLM's batch script answers: a refused one with
    limit + 1, so LiteLLM's own check refuses it."""
    try:
        answers = await _tier(limiter).admit_each(limits)
    except RedisUnverifiable as error:
        raise _refuse_unverifiable(limiter, "batch_rate_limiter_script", error) from error
    except shm.RegionFullError:
        raise Decline("region table full") from None
    return [(str(start or now_int), count if taken else lim.limit + 1)
            for lim, (taken, start, count) in zip(limits, answers)]


async def execute_redis_batch_rate_limiter_script(self: Any, keys_to_fetch: List[str], now_int: int) -> List[Any]:
    from .limiter import _pairs

    pairs = _pairs(keys_to_fetch)
    values: List[Any] = []
    for state in await _admit_windows(self, _request_limits(self, pairs, [w for w, _ in pairs]), now_int):
        values += state
    return values


def _read_only_count(tier: HostTier, lim: Limit) -> int:
    """The count a read-only check (the one before the request's body, from 1.109) sees: Redis's
    counter counts units leased to hosts, spent or not, and would refuse at auth a unit this
    host holds. Over the limit only when the host's lease is short and Redis refused this host
    less than poll_s ago; otherwise at most limit - 1, and the check that takes the unit decides."""
    short = tier.region.lease_left(lim.counter_key)[1] < lim.cost
    return lim.limit if short and tier.dry(lim) else min(tier.estimate(lim), lim.limit - 1)


def read_counter_values_without_incrementing(original: Any) -> Any:
    async def read(self: Any, keys: List[str], parent_otel_span: Any = None) -> Any:
        from .limiter import _pairs

        if _without_redis(self):  # the region limiter's own read (limiter.py), under `original`
            return await original(self, keys=keys, parent_otel_span=parent_otel_span)
        pairs = _pairs(keys)
        limits = _request_limits(self, pairs, [w for w, _ in pairs])
        tier = _tier(self)
        values: List[Any] = []
        for lim in limits:
            values += [None, _read_only_count(tier, lim)]
        return values

    return read


# ---- LiteLLM 1.110 (RateLimitStore): the rpm windows ---------------------------------------
# The same step on RateLimitCounter objects. The stock methods declare their scripts on the
# request's native Redis batch before awaiting anything (and the batch sends a declared script
# even if nobody awaits it), so these replace them whole: a Decline runs the stock method.


def _store_limits(limiter: Any, counters: Sequence[Any]) -> List[Limit]:
    from .limiter import _counter_keys

    return _request_limits(limiter, [_counter_keys(c) for c in counters], [c.scope for c in counters])


def store_pre_read(limiter: Any, counters: Sequence[Any]) -> List[Tuple[None, None]]:
    """1.110's `_local_counter_states` in a check through the tier, read-only or not (the
    mirror would refuse on counts of units leased, not spent; `pre_read` above)."""
    if _settings is None or _cluster(limiter):
        raise Decline("no host tier")
    if any(c.kind != "requests" for c in counters):
        raise Decline("a tokens counter: LiteLLM's mirror answers")
    return [(None, None)] * len(counters)


async def execute_store_batch_rate_limiter_script(self: Any, counters: Sequence[Any], now_int: int) -> List[Any]:
    return list(await _admit_windows(self, _store_limits(self, counters), now_int))


def read_store_counter_values_without_incrementing(original: Any) -> Any:
    """1.110's read-only check (`raise_if_over_limit_before_body`): `_read_only_count`."""

    async def read(self: Any, counters: Sequence[Any]) -> Any:
        if _without_redis(self):
            return await original(self, counters=counters)
        limits = _store_limits(self, counters)
        tier = _tier(self)
        return [(None, _read_only_count(tier, lim)) for lim in limits]

    return read


async def _admit_atomic_groups(self: Any, groups: Sequence[Sequence[Mapping[str, Any]]],
                               keys_of: Callable[[Mapping[str, Any]], Tuple[str, str]],
                               applied: Callable[[List[Tuple[int, int]]], Any],
                               over_limit: Callable[[int, int, int], Any]) -> Dict[str, Any]:
    """TPM reservations (and any other check-and-increment by N): LiteLLM runs
    CHECK_AND_INCREMENT_BY_N_SCRIPT once per descriptor group, all or nothing over the groups.
    Here every counter of every group takes its increment from the host's lease, all or nothing
    (`HostTier.admit`), with one lease call for the counters whose lease is short. The reply
    each group's script would have given (`applied([(count, window start), ...])` or
    `over_limit(index in the group, count, limit)`, in the release's shape) is read by
    LiteLLM's own `_build_atomic_response`, so statuses and the reservation windows that guard
    the post-call reconciliation are LiteLLM's: the windows are Redis's window starts, and the
    reconciliation (LiteLLM's INCRBY of actual - reserved, to Redis, window-guarded where its
    release records the window) stays correct with units leased, since Redis's counter holds
    them either way. `keys_of(meta)`: the counter's (window key, counter key)."""
    if _cluster(self):
        raise Decline("Redis Cluster: a lease call would span hash slots")
    limits: List[Limit] = []
    now = _clock_s()
    for group in groups:
        for meta in group:
            window_key, counter_key = keys_of(meta)
            if meta["rate_limit_type"] != "requests":
                _token_limited[counter_key] = now
            if int(meta["increment"]) <= 0:
                raise Decline("an increment of 0 is a read of the count: LiteLLM's script answers it")
            limits.append(Limit(window_key, counter_key, int(meta["current_limit"]), int(meta["increment"]),
                                int(meta["ttl"]), int(meta["window_size"]),
                                dry_poll=meta["rate_limit_type"] != "tokens"))
    tier = _tier(self)
    try:
        admission = await tier.admit(limits)
    except RedisUnverifiable as error:
        raise _refuse_unverifiable(self, "check_and_increment_by_n_script", error) from error
    except shm.RegionFullError:
        raise Decline("region table full") from None
    first = 0
    responses: List[Dict[str, Any]] = []
    for group in groups:
        if admission.denied_index is not None:
            if admission.denied_index < first + len(group):
                lim = limits[admission.denied_index]
                # Refused: short of the increment, as the script's over-limit reply says.
                counter = max(tier.estimate(lim), lim.limit - lim.cost + 1)
                return dict(self._build_atomic_response(
                    over_limit(admission.denied_index - first, counter, lim.limit), list(group)))
        else:
            counters = [(tier.estimate(lim), admission.windows[first + n])
                        for n, lim in enumerate(limits[first:first + len(group)])]
            responses.append(self._build_atomic_response(applied(counters), list(group)))
        first += len(group)
    if len(responses) == 1:
        return dict(responses[0])
    return {"overall_code": "OK", "statuses": [s for r in responses for s in r["statuses"]],
            "reservation_windows": frozenset(w for r in responses for w in r.get("reservation_windows", ()))}


async def atomic_lua_per_descriptor(self: Any, descriptor_groups: List[Tuple[Any, Any, List[Dict[str, Any]]]],
                                    parent_otel_span: Any = None) -> Dict[str, Any]:
    """1.108's groups, (keys, args, meta) with the keys in each meta; its script's replies,
    [0, count, window, ...] and [1, index from 1, count, limit]."""
    return await _admit_atomic_groups(
        self, [group for _keys, _args, group in descriptor_groups],
        lambda meta: (meta["window_key"], meta["counter_key"]),
        lambda counters: [0, *(x for pair in counters for x in pair)],
        lambda index, counter, limit: [1, index + 1, counter, limit])


def atomic_store_lua_per_descriptor(applied: Any, over_limit: Any) -> Any:
    """1.110's groups, (counters, meta) with a RateLimitCounter in each meta; its native
    client's replies, `applied` (AtomicApplied) and `over_limit` (AtomicOverLimit, index from 0).
    Replaced whole: with a request batch open the stock method declares every group's script
    on it first."""
    from .limiter import _counter_keys

    async def admit(self: Any, descriptor_groups: List[Tuple[Any, List[Dict[str, Any]]]],
                    parent_otel_span: Any = None) -> Dict[str, Any]:
        return await _admit_atomic_groups(self, [group for _counters, group in descriptor_groups],
                                          lambda meta: _counter_keys(meta["counter"]), applied, over_limit)

    return admit


def patches(prl: Any) -> List[Tuple[Any, str, Tuple[str, ...], Any]]:
    """(owner, name, parameters, replacement) of the host tier's patches, for the limiter's
    shape check."""
    L = prl._PROXY_MaxParallelRequestsHandler_v3
    collect = inspect.getattr_static(L, "_collect_windowed_keys_and_gauges", None)
    unguarded = inspect.getattr_static(L, "async_increment_tokens_with_ttl_preservation", None)
    guarded = inspect.getattr_static(L, "async_increment_reservation_aware_tokens", None)
    from . import limiter_host_tier_gauges, limiter_host_tier_increments as increments

    gauges = inspect.getattr_static(L, "_check_parallel_request_gauges", None)
    read_only = inspect.getattr_static(L, "_read_counter_values_without_incrementing", None)
    return [
        (L, "_collect_windowed_keys_and_gauges", ("self", "descriptors", "skip_tpm_check"),
         collect_windowed_keys_and_gauges(collect)),
        (L, "_execute_redis_batch_rate_limiter_script", ("self", "keys_to_fetch", "now_int"),
         execute_redis_batch_rate_limiter_script),
        (L, "_atomic_lua_per_descriptor", ("self", "descriptor_groups", "parent_otel_span"),
         atomic_lua_per_descriptor),
        (L, "async_increment_tokens_with_ttl_preservation", ("self", "pipeline_operations", "parent_otel_span"),
         increments.increment_tokens_with_ttl_preservation(unguarded, increments.DICTS)),
        (L, "async_increment_reservation_aware_tokens", ("self", "pipeline_operations", "parent_otel_span"),
         increments.increment_reservation_aware_tokens(guarded, increments.DICTS)),
        (L, "_check_parallel_request_gauges", ("self", "gauges", "slot_id", "parent_otel_span", "read_only"),
         limiter_host_tier_gauges.check_parallel_request_gauges(gauges)),
    ] + ([(L, "_read_counter_values_without_incrementing", ("self", "keys", "parent_otel_span"),
           read_counter_values_without_incrementing(read_only))]
         # from 1.108 (the read-only check before the body, from 1.109); none to answer before
         if read_only is not None else []) + _defer_release_patch(L)


#: Patches that give back what an accelerated call took: they run whatever the flag and
#: breaker say since (a pooled request's slot released by LiteLLM's own code would stay taken).
ALWAYS = frozenset({"_defer_parallel_slot_release"})


def _defer_release_patch(L: Any) -> List[Tuple[Any, str, Tuple[str, ...], Any]]:
    """From 1.108: a pooled request's release from the logging callbacks (up to 1.107 every
    release goes through `_release_parallel_request_slots`, which limiter.py patches, always)."""
    from . import limiter_host_tier_pool

    if inspect.getattr_static(L, "_defer_parallel_slot_release", None) is None:
        return []
    return [(L, "_defer_parallel_slot_release", ("self", "acquisition", "parent_otel_span"),
             limiter_host_tier_pool.defer_parallel_slot_release)]


def store_patches(prl: Any) -> List[Tuple[Any, str, Tuple[str, ...], Any]]:
    """The same for LiteLLM 1.110's RateLimitStore."""
    from . import limiter_host_tier_gauges, limiter_host_tier_increments as increments

    L = prl._PROXY_MaxParallelRequestsHandler_v3
    collect = inspect.getattr_static(L, "_collect_windowed_keys_and_gauges", None)
    unguarded = inspect.getattr_static(L, "async_increment_tokens_with_ttl_preservation", None)
    guarded = inspect.getattr_static(L, "async_increment_reservation_aware_tokens", None)
    return [
        (L, "_collect_windowed_keys_and_gauges", ("self", "descriptors", "skip_tpm_check"),
         collect_windowed_keys_and_gauges(collect)),
        (L, "_execute_redis_batch_rate_limiter_script", ("self", "counters", "now_int"),
         execute_store_batch_rate_limiter_script),
        (L, "_read_counter_values_without_incrementing", ("self", "counters"),
         read_store_counter_values_without_incrementing(
             inspect.getattr_static(L, "_read_counter_values_without_incrementing", None))),
        (L, "_atomic_lua_per_descriptor", ("self", "descriptor_groups", "parent_otel_span"),
         atomic_store_lua_per_descriptor(prl.AtomicApplied, prl.AtomicOverLimit)),
        (L, "async_increment_tokens_with_ttl_preservation", ("self", "pipeline_operations", "parent_otel_span"),
         increments.increment_tokens_with_ttl_preservation(unguarded, increments.STORE)),
        (L, "async_increment_reservation_aware_tokens", ("self", "pipeline_operations", "parent_otel_span"),
         increments.increment_reservation_aware_tokens(guarded, increments.STORE)),
        (L, "_check_parallel_request_gauges", ("self", "gauges", "slot_id", "parent_otel_span", "read_only"),
         limiter_host_tier_gauges.check_store_parallel_request_gauges(
             inspect.getattr_static(L, "_check_parallel_request_gauges", None))),
    ] + _defer_release_patch(L)


def configure(region: shm.Region, settings: HostTierSettings) -> None:
    global _region, _settings
    _region, _settings = region, settings
