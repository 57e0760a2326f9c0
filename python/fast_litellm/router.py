"""router: LiteLLM Router state kept in the shared region, so every process of the host shares it.

What LiteLLM does, per process
    Without Redis each worker keeps its router state in its own `InMemoryCache`s, so under
    `gunicorn -w N` a deployment's `rpm: 10` admits 10 per worker, a deployment that fails in
    one worker stays in rotation in the others, and `max_parallel_requests` is per worker.

What this component does (keys and TTLs are LiteLLM's; written against 1.106.2, on LiteLLM
1.104.9, 1.105.7, 1.106.12, 1.108.x, 1.109.3 and 1.110.2: see "Releases" below)
    1. Usage counters `{id}:{model}:rpm|tpm:{HH-MM}` (TTL 60 s): usage-based-routing-v2
       (`LowestTPMLoggingHandler_v2`: pre-call rpm checks, tpm counts on success, and the
       selection reads `async_get_available_deployments` / `get_available_deployments`, which
       read the region, not a `PrefetchedUsage`), and `enforce_model_rate_limits`
       (`ModelRateLimitingCheck`: tpm read-only, rpm increment-first, a refused hit stays
       counted). `global_router:{id}:{model}:tpm|rpm:{HH-MM}` (`Router._increment_deployment_usage`,
       `Router.async_deployment_callback_on_failure`) and their reader
       `Router.get_model_group_usage` (the `x-ratelimit-remaining-*` headers, Prometheus).
    2. Cooldowns (`CooldownCache` and `RoutingReadBatch.async_get_cooldown_deployments`): a
       deployment one worker cools down is skipped by all. The counters the decision reads are
       host-wide too: `{id}:successes|fails` (`track_deployment_metrics`, TTL 60 s) and
       `deployment:{id}:allowed_fails[:suffix]` (`cooldown_handlers._increment_allowed_fails`).
    3. `max_parallel_requests` (`MaxParallelRequestsLimit.acquire/release`): region slots under
       `deployment:{model_id}:max_parallel_requests`, given back when the holder dies. `in_flight`
       shows the host-wide count as of this object's last acquire or release.

    Refusals are LiteLLM's own: when the region says no (rpm/tpm over the limit, no deployment
    fits, all slots taken), the patch sets LiteLLM's in-memory counters (or `in_flight`) to the
    region's counts and declines, and LiteLLM's check, run on the same call, raises its own
    error from them (the guard lets an accelerated path return or decline, not raise). Such
    calls count as declined in `status()`.

Redis
    When the Router has Redis (`router.cache.redis_cache`; cooldowns:
    `cooldown_cache.cooldown_store.redis_cache`), every path declines: LiteLLM's Redis path runs
    untouched and nothing is counted twice. The slots are host-wide either way: LiteLLM never
    keeps them in Redis. Deployments with itpm/otpm limits keep `enforce_model_rate_limits`
    (and its tpm/rpm counts) per process, as LiteLLM: their io-token reservations are not moved.

Cooldown records
    `value_set(key, stamp, value)`, stamp = `int(timestamp)`, value = cooldown time (ms, or
    whole seconds past 37 h) << 20 | status code << 10 | the timestamp's milliseconds. The
    process that set a cooldown returns LiteLLM's exact `CooldownCacheValue` (it keeps it);
    other processes get the same shape with the timestamp and cooldown time to the millisecond,
    the status code (0-1021; others read as "") and `REMOTE_EXCEPTION_TEXT` for the exception
    text, which is not shared. As in LiteLLM's in-memory store, a cooldown set again while one
    runs replaces the record but does not outlast the running one's key.

Differences from LiteLLM accepted
    - Up to 1.109, counters never go below 0 and count whole numbers (a float token count is
      rounded). From 1.110 such adds go to LiteLLM's own store and each read adds that part:
      exact in the process that made them, not seen by the others.
    - Region TTLs count whole seconds (a 60 s counter lives 59-60 s); the per-minute keys carry
      their minute, so no reader can tell. The allowed-fails counters (TTL = the cooldown time)
      can be told: their window is off by under a second (1.110 too, whose native store keeps
      fractional TTLs).
    - 1.110: a cooldown whose timestamp is before 1970 or after 2106, or after its own end, is
      LiteLLM's own (per process) and ends a shared one under the same id. A re-put while another
      process's cooldown runs keeps that cooldown's end (not its key's, which is not shared). ubr-v2's async tpm counts live 60 s (LiteLLM's
      in-memory default is 600 s there), which no reader of that minute's key can tell either.
    - ubr-v2's async rpm check no longer appends to `redis_increment_operation_queue`, which
      LiteLLM never drains without Redis.
    - A refusal found between ubr-v2's read and its increment (only possible across
      processes) raises LiteLLM's at-the-limit error, with the same message.
    - Full table: pre-call checks admit uncounted (FAST_LITELLM_SHM_FULL_POLICY=open) or refuse
      (closed); other writes decline to LiteLLM's per-process state, which these readers do
      not see (from 1.109 so do enforce_model_rate_limits' pre-call counts: its helpers are
      what is patched there).
    - Two Routers of one process with the same deployment ids share the counters, as the
      processes do.

Releases (told apart only by `_layout_of`, from the shapes in `_patches`; one set of patches)
    - 1.104: no `RoutingReadBatch` (the router reads cooldowns only through
      `CooldownCache.async_get_active_cooldowns`, patched), and ubr-v2 builds its usage keys
      inline (no `usage_counter_keys`): the same keys are built here.
    - 1.105-1.108: as described above.
    - 1.109: `Router` is a facade over `Router._core_class`, where the patched Router methods
      live (state in `self._core_cache`; `get_model_group_usage` calls the core's
      `_core_get_model_group_usage`, patched instead). track_deployment_metrics and
      `RoutingReadBatch` take a `RoutingContext` (`ctx.health().store`,
      `ctx.health().cooldowns`, `ctx.registry().names(kind="ids")`). ModelRateLimitingCheck
      gained daily limits (tpd/rpd, 24 h keys) and gives a refused rpm/rpd hit back; its checks
      reach the cache only through `_increment`, `_async_increment`,
      `_async_increment_request_counts`, `_async_refund_request_counts`, `_get_current_tpm` and
      `_async_get_current_tpm`, so those are patched and LiteLLM's own checks decide and raise
      (its itpm/otpm reservations stay in its DualCache, per process; the tpm/rpm counts of such
      deployments are host-wide from 1.109).
    - 1.110 (`_Layout.stores == "native"`, told by `CooldownCache.__init__(self, store, ...)`):
      the Router is a Rust core, and cooldowns, allowed fails and the global_router: counters
      live in native stores (`litellm.redis.stores.router_cooldowns.RouterCooldownStore`,
      `router_usage.RouterUsageStore`, in `rust_bridge/_native.abi3.so`). Every path to them
      (CooldownCache, the Router's usage writes and `get_model_group_usage`, the Rust core's
      cache steps through `RoutingStores`) goes through those stores' methods, which are
      patched instead of the Router's and CooldownCache's: `put`/`async_put`, `active_sync`
      (`active` answers from it without Redis), `minimum`, `evict_local`,
      `[async_]increment_allowed_fails`, `increment_sync`, `increment_deployment_sync`,
      `get_many_sync` (the async ones answer from these without Redis). Their behaviour, which is
      native code, was measured and is matched (see "1.110: the native stores" below): a re-put
      while a cooldown is active keeps its deadline, once it is over a put starts afresh, no
      correction of a key's life; allowed fails and usage keep the expiry of their first add; a
      fresh key with ttl <= 0 is not stored; usage counts keep LiteLLM's int/float and may go
      below 0 (such adds go to LiteLLM's own store, and reads add its part to the region's). With
      Redis (`store.has_redis`) every store method declines. `{id}:successes|fails` are not
      patched there: 1.110 keeps them per process on purpose (its Rust core writes them with
      `local` cache steps), so the failure-rate part of a cooldown decision is per process, as
      in LiteLLM; the allowed-fails counts and the cooldowns are host-wide.

Callbacks bound at `Router.__init__` (up to 1.109; from 1.110 the callback writes through the
patched usage store)
    Only `async_deployment_callback_on_failure` writes router state itself; the other bound
    callbacks go through patched functions. `install` re-binds that entry of every Router that
    already exists (in `litellm._async_failure_callback`), and an entry bound while patched
    hands back to LiteLLM after `remove_acceleration()`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import sys
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

from . import shm
from ._acceleration import Component, Decline
from ._compat import Shape, problems, shape

log = logging.getLogger("fast_litellm")

#: `exception_received` of a cooldown set by another process: the text is not shared.
REMOTE_EXCEPTION_TEXT = "(set by another process; exception text not shared)"


@dataclass(frozen=True)
class _LiteLLM:
    """The LiteLLM modules the patches call into, imported at install (by name, so the type
    checker does not walk LiteLLM)."""

    litellm: Any
    #: The module the Router's own code lives in (`litellm.router`, or from 1.109 on the module
    #: of the class `litellm.router.Router` delegates to): its `get_utc_datetime`, `RoutingArgs`.
    router: Any
    #: The class whose methods are the Router's (`Router` itself, or from 1.109 on its core).
    router_class: Any
    ubr: Any
    mrl: Any
    cooldown_cache: Any
    cooldown_handlers: Any
    metrics: Any
    slots: Any
    #: `litellm.router_utils.routing_read_batch`, None before 1.105 (where the router reads
    #: cooldowns only through `CooldownCache.async_get_active_cooldowns`).
    read_batch: Any
    types_router: Any
    #: `litellm.redis.stores.router_cooldowns` and `.router_usage` (1.110 on), else None.
    cooldown_store: Any = None
    usage_store: Any = None

    @classmethod
    def load(cls) -> "_LiteLLM":
        imp = importlib.import_module
        router_class = imp("litellm.router").Router
        # From 1.109 `Router` is a facade: its methods are those of `Router._core_class`.
        router_class = getattr(router_class, "_core_class", None) or router_class
        try:
            read_batch = imp("litellm.router_utils.routing_read_batch")
        except ModuleNotFoundError as error:
            if error.name != "litellm.router_utils.routing_read_batch":
                raise
            read_batch = None
        stores: List[Any] = []
        for name in ("litellm.redis.stores.router_cooldowns", "litellm.redis.stores.router_usage"):
            try:
                stores.append(imp(name))
            except ModuleNotFoundError as error:
                if not name.startswith(str(error.name)):
                    raise
                stores.append(None)
        return cls(
            litellm=imp("litellm"),
            router=sys.modules[router_class.__module__],
            router_class=router_class,
            ubr=imp("litellm.router_strategy.lowest_tpm_rpm_v2"),
            mrl=imp("litellm.router_utils.pre_call_checks.model_rate_limit_check"),
            cooldown_cache=imp("litellm.router_utils.cooldown_cache"),
            cooldown_handlers=imp("litellm.router_utils.cooldown_handlers"),
            metrics=imp("litellm.router_utils.router_callbacks.track_deployment_metrics"),
            slots=imp("litellm.router_utils.client_initalization_utils"),
            read_batch=read_batch,
            types_router=imp("litellm.types.router"),
            cooldown_store=stores[0],
            usage_store=stores[1],
        )


@dataclass(frozen=True)
class _TTLs:
    """LiteLLM's counter TTLs (RoutingArgs of each module), read and checked at install."""

    model_rate_limits: float = 60.0
    router: float = 60.0
    #: The longest in-memory life `_corrected_active_cooldown` gives a running cooldown's key.
    corrected_cooldown: float = 60.0

    @classmethod
    def of(cls, m: "_LiteLLM", layout: "_Layout") -> "_TTLs":
        if layout.stores == "native":
            # The global_router: counters' TTL is the native store's (measured: 60 s); cooldown
            # keys are not corrected there (see `cooldown_store_put`).
            return cls(model_rate_limits=_ttl(m.mrl.RoutingArgs.ttl), router=_NATIVE_USAGE_TTL)
        return cls(
            model_rate_limits=_ttl(m.mrl.RoutingArgs.ttl),
            router=_ttl(m.router.RoutingArgs.ttl.value),
            corrected_cooldown=float(m.cooldown_cache._MAX_CORRECTED_IN_MEMORY_TTL_SECONDS),
        )


@dataclass(frozen=True)
class _Layout:
    """Where this LiteLLM keeps what the patches reach: each field is the variant `_shapes`
    found at install (`_compat.Shape.variant()`); the patches read these and nothing else."""

    #: track_deployment_metrics and RoutingReadBatch are handed the Router ("router", up to
    #: 1.108) or a `RoutingContext` ("ctx", 1.109 on: `ctx.health().store` etc.).
    routing_arg: str = "router"
    #: The Router's methods and state: on `Router`, state in `self.cache` ("router", up to 1.108),
    #: or on its core class, state in `self._core_cache` ("core", 1.109 on).
    router_state: str = "router"
    #: ModelRateLimitingCheck: its checks and success events are replaced ("inline", up to
    #: 1.108), or, since 1.109 (daily limits, refunds), its own counter helpers are ("helpers").
    mrl: str = "inline"
    #: ubr-v2 has `usage_counter_keys` (1.105 on) or builds the same keys inline (1.104).
    usage_counter_keys: bool = True
    #: Cooldowns, allowed fails and the global_router: counters live in the Router's DualCaches
    #: ("cache", up to 1.109: `CooldownCache(cache, ...)`), or in LiteLLM's native stores
    #: ("native", 1.110 on: `CooldownCache(store, ...)` over `RouterCooldownStore`, and
    #: `RouterUsageStore`), whose methods are patched instead.
    stores: str = "cache"


#: track_deployment_metrics' `ttl=60`.
_METRICS_TTL = 60.0
#: `RouterUsageStore.increment_deployment[_sync]`'s TTL, set in LiteLLM's native code (1.110.2:
#: measured, a counter written at t is there at t + 59.5 s and gone at t + 60.5 s).
_NATIVE_USAGE_TTL = 60.0

_m: Any = None
_layout = _Layout()
_ttls = _TTLs()
_region: Optional[shm.Region] = None
_component: Optional[Component] = None


def _shared(cache: Any) -> shm.Region:
    """The region, for state LiteLLM keeps in `cache`; Decline when that cache has Redis."""
    if cache.redis_cache is not None:
        raise Decline("LiteLLM has Redis for this router: its own path counts")
    assert _region is not None
    return _region


def _minute(module: Any) -> str:
    """LiteLLM's UTC `HH-MM`, through the module's own `get_utc_datetime`."""
    return str(module.get_utc_datetime().strftime("%H-%M"))


def _whole(value: Any) -> int:
    return value if type(value) is int else round(value)


def _ttl(seconds: Any) -> float:
    if not seconds > 0:
        raise Decline(f"TTL {seconds!r} has no region equivalent")
    return float(seconds)


def _write(region: shm.Region, key: str, delta: int, ttl: float) -> int:
    """A counter add outside admission: a full table hands the call to LiteLLM's own path."""
    try:
        return region.counter_add(key, delta, ttl)
    except shm.RegionFullError as error:
        raise Decline(str(error)) from error


def _count_hit(region: shm.Region, key: str, ttl: float) -> Optional[int]:
    """An increment-first rpm hit: the new count. A full table admits uncounted (None) when
    the policy is open, and refuses (a count past any limit) when it is closed."""
    try:
        return region.counter_add(key, 1, ttl)
    except shm.RegionFullError:
        if region.fail_open:
            return None
        log.warning("fast_litellm: router: region table full, %s refused (FAST_LITELLM_SHM_FULL_POLICY=closed)", key)
        return sys.maxsize


def _refuse(cache: Any, counts: Dict[str, Optional[int]], ttl: float, why: str) -> NoReturn:
    """Hands a refusal to LiteLLM: its in-memory counters are set to the region's counts, and
    its own check, run on the same call (Decline), raises its own error from them."""
    for key, count in counts.items():
        if count is None:
            cache.in_memory_cache.delete_cache(key)
        else:
            cache.set_cache(key, count, local_only=True, ttl=ttl)
    raise Decline(why)


# ---------------------------------------------------------------------------------------------
# 1. usage-based-routing-v2 (router_strategy/lowest_tpm_rpm_v2.py)


def _rpm_limit(deployment: Dict[str, Any]) -> Any:
    """ubr-v2's lookup: the deployment, its litellm_params, its model_info, else inf."""
    for source in (deployment, deployment.get("litellm_params", {}), deployment.get("model_info", {})):
        value = source.get("rpm")
        if value is not None:
            return value
    return float("inf")


def _ubr_check(self: Any, deployment: Dict[str, Any]) -> Dict[str, Any]:
    """`pre_call_check` / `async_pre_call_check`: refused at the limit, else counted, and
    refused past it (the hit stays counted)."""
    region = _shared(self.router_cache)
    ttl = _ttl(self.routing_args.ttl)
    model_id = deployment.get("model_info", {}).get("id")
    deployment_name = deployment.get("litellm_params", {}).get("model")
    rpm_key = f"{model_id}:{deployment_name}:rpm:{_minute(_m.ubr)}"
    deployment_rpm = _rpm_limit(deployment)
    count = region.counter_get(rpm_key)
    if count is None or count < deployment_rpm:
        count = _count_hit(region, rpm_key, ttl)
        if count is None or count <= deployment_rpm:
            return deployment
    _refuse(self.router_cache, {rpm_key: count}, ttl, f"rpm {count} of {deployment_rpm}: LiteLLM raises")


def ubr_pre_call_check(self: Any, deployment: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    return _ubr_check(self, deployment)


async def ubr_async_pre_call_check(
    self: Any, deployment: Dict[str, Any], parent_otel_span: Any
) -> Optional[Dict[str, Any]]:
    return _ubr_check(self, deployment)


def _ubr_count_tokens(self: Any, kwargs: Dict[str, Any], from_async: bool) -> None:
    region = _shared(self.router_cache)
    ttl = _ttl(self.routing_args.ttl)
    if _m.ubr.is_batch_retrieve_call_type(kwargs.get("call_type")):
        return
    try:
        standard_logging_object = kwargs.get("standard_logging_object")
        if standard_logging_object is None:
            raise ValueError("standard_logging_object not passed in.")
        model_group = standard_logging_object.get("model_group")
        hidden_params = standard_logging_object["hidden_params"]
        model = hidden_params["litellm_model_name"] if from_async else hidden_params.get("litellm_model_name")
        id = standard_logging_object.get("model_id")
        if model_group is None or id is None or (model is None and not from_async):
            return
        elif isinstance(id, int):
            id = str(id)
        total_tokens = standard_logging_object.get("total_tokens")
        tpm_key = f"{id}:{model}:tpm:{_minute(_m.ubr)}"
        _write(region, tpm_key, _whole(total_tokens), ttl)
        if self.test_flag:
            self.logged_success += 1
    except Decline:
        raise
    except Exception as e:
        where = "async_log_success_event" if from_async else "log_success_event"
        _m.ubr.verbose_logger.exception(
            "litellm.proxy.hooks.lowest_tpm_rpm_v2.py::%s(): Exception occured - %s", where, e
        )


def ubr_log_success_event(self: Any, kwargs: Dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
    _ubr_count_tokens(self, kwargs, from_async=False)


async def ubr_async_log_success_event(
    self: Any, kwargs: Dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
) -> None:
    _ubr_count_tokens(self, kwargs, from_async=True)


def _usage_counter_keys(self: Any, healthy_deployments: List[Any]) -> Tuple[List[str], List[str]]:
    """ubr-v2's `{id}:{model}:tpm|rpm:{HH-MM}` keys: its own `usage_counter_keys`, or (1.104)
    the same keys built as its selection builds them inline."""
    if _layout.usage_counter_keys:
        keys: Tuple[List[str], List[str]] = self.usage_counter_keys(healthy_deployments)
        return keys
    current_minute = _minute(_m.ubr)
    prefixes = [
        f"{m.get('model_info', {}).get('id')}:{m.get('litellm_params', {}).get('model')}"
        for m in healthy_deployments
        if isinstance(m, dict)
    ]
    return [f"{p}:tpm:{current_minute}" for p in prefixes], [f"{p}:rpm:{current_minute}" for p in prefixes]


def _ubr_select(self: Any, model_group: str, healthy_deployments: List[Any], messages: Any, input: Any) -> Any:
    """ubr-v2's selection from the region's counts (a `PrefetchedUsage` is not used: the
    region is the fresher read). When no deployment fits, LiteLLM raises its own error from
    the same counts."""
    region = _shared(self.router_cache)
    tpm_keys, rpm_keys = _usage_counter_keys(self, healthy_deployments)
    tpm_values = [region.counter_get(key) for key in tpm_keys]
    rpm_values = [region.counter_get(key) for key in rpm_keys]
    deployment = self._common_checks_available_deployment(
        model_group=model_group,
        healthy_deployments=healthy_deployments,
        tpm_keys=tpm_keys,
        tpm_values=tpm_values,
        rpm_keys=rpm_keys,
        rpm_values=rpm_values,
        messages=messages,
        input=input,
    )
    if deployment is not None:
        return deployment
    counts = dict(zip(tpm_keys + rpm_keys, tpm_values + rpm_values))
    _refuse(self.router_cache, counts, _ttl(self.routing_args.ttl), "no deployment fits: LiteLLM raises")


async def ubr_async_get_available_deployments(
    self: Any,
    model_group: str,
    healthy_deployments: List[Any],
    messages: Optional[List[Dict[str, str]]] = None,
    input: Any = None,
) -> Any:
    return _ubr_select(self, model_group, healthy_deployments, messages, input)


def ubr_get_available_deployments(
    self: Any,
    model_group: str,
    healthy_deployments: List[Any],
    messages: Optional[List[Dict[str, str]]] = None,
    input: Any = None,
    parent_otel_span: Any = None,
) -> Any:
    return _ubr_select(self, model_group, healthy_deployments, messages, input)


# ---------------------------------------------------------------------------------------------
# enforce_model_rate_limits (router_utils/pre_call_checks/model_rate_limit_check.py)


def _mrl_check(self: Any, deployment: Dict[str, Any]) -> Dict[str, Any]:
    """ModelRateLimitingCheck's pre-call check: tpm read-only, refused at the limit; rpm
    increment-first, refused past it (the hit stays counted)."""
    region = _shared(self.dual_cache)
    if _m.mrl.deployment_has_io_token_limits(deployment):
        raise Decline("itpm/otpm limits: LiteLLM's per-process check")
    tpm_limit, rpm_limit = self._get_deployment_limits(deployment)
    if tpm_limit is None and rpm_limit is None:
        return deployment
    tpm_key, rpm_key = self._get_cache_keys(deployment, _minute(_m.mrl))
    ttl = _ttls.model_rate_limits
    current_tpm = region.counter_get(tpm_key) if tpm_limit is not None else None
    if current_tpm is not None and current_tpm >= tpm_limit:
        _refuse(self.dual_cache, {tpm_key: current_tpm}, ttl, f"tpm {current_tpm} of {tpm_limit}: LiteLLM raises")
    if rpm_limit is not None:
        current_rpm = _count_hit(region, rpm_key, ttl)
        if current_rpm is not None and current_rpm > rpm_limit:
            # LiteLLM's check adds the hit to its counter: it finds the region's count.
            counts = {rpm_key: current_rpm - 1, **({tpm_key: current_tpm} if tpm_limit is not None else {})}
            _refuse(self.dual_cache, counts, ttl, f"rpm {current_rpm} of {rpm_limit}: LiteLLM raises")
    return deployment


def mrl_pre_call_check(self: Any, deployment: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    return _mrl_check(self, deployment)


async def mrl_async_pre_call_check(
    self: Any, deployment: Dict[str, Any], parent_otel_span: Any = None
) -> Optional[Dict[str, Any]]:
    return _mrl_check(self, deployment)


def _mrl_count_tokens(self: Any, kwargs: Dict[str, Any], where: str) -> None:
    """ModelRateLimitingCheck's tpm count after a call. A request that reserved itpm/otpm
    tokens is LiteLLM's own (its reconciliation and counts stay per process)."""
    region = _shared(self.dual_cache)
    standard_logging_object = kwargs.get("standard_logging_object")
    slo_metadata = (standard_logging_object.get("metadata") or {}) if standard_logging_object else {}
    kwargs_metadata = kwargs.get("metadata") or {}
    if _m.mrl.ITPM_RESERVED_KEY in slo_metadata or _m.mrl.ITPM_RESERVED_KEY in kwargs_metadata:
        raise Decline("itpm/otpm reservation: LiteLLM's per-process reconciliation")
    try:
        if standard_logging_object is None:
            return
        model_id = standard_logging_object.get("model_id")
        if model_id is None:
            return
        total_tokens = standard_logging_object.get("total_tokens", 0)
        model = standard_logging_object.get("hidden_params", {}).get("litellm_model_name")
        if not model or not total_tokens:
            return
        tpm_key = f"{model_id}:{model}:tpm:{_minute(_m.mrl)}"
        _write(region, tpm_key, _whole(total_tokens), _ttls.model_rate_limits)
    except Decline:
        raise
    except Exception as e:
        _m.mrl.verbose_router_logger.debug("Error in ModelRateLimitingCheck.%s: %s", where, e)


async def mrl_async_log_success_event(
    self: Any, kwargs: Dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
) -> None:
    _mrl_count_tokens(self, kwargs, "async_log_success_event")


def mrl_log_success_event(self: Any, kwargs: Dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
    _mrl_count_tokens(self, kwargs, "log_success_event")


# From 1.109 ModelRateLimitingCheck also has daily limits (tpd/rpd) and gives a refused hit back;
# its checks reach the cache only through the helpers below, which then run on the region, so
# LiteLLM's own checks decide and raise (its io-token reservations stay in its DualCache).


def mrl_increment(self: Any, key: str, value: int, ttl: int) -> int:
    return _write(_shared(self.dual_cache), key, _whole(value), _ttl(ttl))


async def mrl_async_increment(self: Any, key: str, value: int, ttl: int, parent_otel_span: Any = None) -> Optional[int]:
    return _write(_shared(self.dual_cache), key, _whole(value), _ttl(ttl))


def _mrl_request_counts(self: Any, rpm_key: Optional[str], rpd_key: Optional[str], delta: int) -> Dict[str, int]:
    region = _shared(self.dual_cache)
    operations = self._request_count_operations(rpm_key, rpd_key, delta)
    return {op["key"]: _write(region, op["key"], _whole(op["increment_value"]), _ttl(op["ttl"])) for op in operations}


async def mrl_async_increment_request_counts(
    self: Any, rpm_key: Optional[str], rpd_key: Optional[str], parent_otel_span: Any
) -> Tuple[Optional[int], Optional[int]]:
    counts = _mrl_request_counts(self, rpm_key, rpd_key, 1)
    if not counts:
        return None, None
    return (None if rpm_key is None else counts.get(rpm_key), None if rpd_key is None else counts.get(rpd_key))


async def mrl_async_refund_request_counts(
    self: Any, rpm_key: Optional[str], rpd_key: Optional[str], parent_otel_span: Any
) -> None:
    _mrl_request_counts(self, rpm_key, rpd_key, -1)


def mrl_get_current_tpm(self: Any, tpm_key: str, tpm_limit: int) -> Optional[int]:
    return _shared(self.dual_cache).counter_get(tpm_key)


async def mrl_async_get_current_tpm(self: Any, tpm_key: str, tpm_limit: int, parent_otel_span: Any) -> Optional[int]:
    return _shared(self.dual_cache).counter_get(tpm_key)


# ---------------------------------------------------------------------------------------------
# global_router: counters (router.py)


def _router_cache(router: Any) -> Any:
    return router._core_cache if _layout.router_state == "core" else router.cache


def _tracks_usage(router: Any, deployment_id: str, model_group: str) -> bool:
    """Whether `_increment_deployment_usage` counts for this deployment: LiteLLM's own cached
    answer (1.109 on), else its check up to 1.108: a tpm/rpm limit, or itpm/otpm limits."""
    if _layout.router_state == "core":
        return bool(router._cached_deployment_tracks_usage(deployment_id, model_group))
    deployment_info = router.get_deployment(model_id=deployment_id)
    if deployment_info is None:
        return False
    deployment_model_info = router.get_router_model_info(deployment=deployment_info, received_model_name=model_group)
    configured_limits = (
        deployment_info.get("tpm", None),
        deployment_info.get("rpm", None),
        deployment_info.litellm_params.tpm,
        deployment_info.litellm_params.rpm,
        deployment_model_info.get("tpm", None),
        deployment_model_info.get("rpm", None),
    )
    return not all(limit is None for limit in configured_limits) or bool(
        _m.router.deployment_has_io_token_limits(deployment_info.model_dump())
    )


def _global_key(kind: str, deployment_id: Any, model: Any, current_minute: str) -> str:
    template: str = getattr(_m.types_router.RouterCacheEnum, kind).value
    return template.format(id=deployment_id, model=model, current_minute=current_minute)


async def router_increment_deployment_usage(
    self: Any,
    *,
    deployment_id: str,
    deployment_name: Optional[str],
    model_group: str,
    total_tokens: float,
    rpm_increment: int,
    parent_otel_span: Any,
) -> Optional[str]:
    region = _shared(_router_cache(self))
    if total_tokens <= 0 and rpm_increment <= 0:
        return None
    if not _tracks_usage(self, deployment_id, model_group):
        return None
    current_minute = _minute(_m.router)
    tpm_key = _global_key("TPM", deployment_id, deployment_name, current_minute)
    rpm_key = _global_key("RPM", deployment_id, deployment_name, current_minute)
    _write(region, tpm_key, _whole(total_tokens), _ttls.router)
    _write(region, rpm_key, _whole(rpm_increment), _ttls.router)
    return tpm_key


async def router_async_deployment_callback_on_failure(
    self: Any, kwargs: Dict[str, Any], completion_response: Any, start_time: Any, end_time: Any
) -> None:
    assert _component is not None
    if not _component.patches:
        raise Decline("removed by remove_acceleration(); this callback was bound while patched")
    region = _shared(_router_cache(self))
    if _m.router.is_batch_retrieve_call_type(kwargs.get("call_type")):
        return
    try:
        metadata = kwargs["litellm_params"]["metadata"]
        model_info = kwargs["litellm_params"].get("model_info", {}) or {}
    except (KeyError, TypeError, AttributeError) as error:
        raise Decline(f"not a router call's kwargs: {error!r}") from None
    deployment_name = metadata.get("deployment", None)
    model_group = metadata.get("model_group", None)
    id = model_info.get("id", None)
    if model_group is None or id is None:
        return
    elif isinstance(id, int):
        id = str(id)
    rpm_key = _global_key("RPM", id, deployment_name, _minute(_m.router))
    _write(region, rpm_key, 1, _ttls.router)


async def router_get_model_group_usage(self: Any, model_group: str) -> Tuple[Optional[int], Optional[int]]:
    """`Router.get_model_group_usage` (1.109 on: the core's `_core_get_model_group_usage`,
    which the Router's deprecated member calls)."""
    region = _shared(_router_cache(self))
    current_minute = _minute(_m.router)
    core = _layout.router_state == "core"
    model_list = self._core_get_model_list(model_name=model_group) if core else self.get_model_list(model_name=model_group)
    if model_list is None:
        return None, None
    tpm_usage: Optional[int] = None
    rpm_usage: Optional[int] = None
    for model in model_list:
        id = model.get("model_info", {}).get("id")
        litellm_model = model["litellm_params"].get("model")
        if id is None or litellm_model is None:
            continue
        tpm = region.counter_get(_global_key("TPM", id, litellm_model, current_minute))
        rpm = region.counter_get(_global_key("RPM", id, litellm_model, current_minute))
        if tpm is not None:
            tpm_usage = (tpm_usage or 0) + tpm
        if rpm is not None:
            rpm_usage = (rpm_usage or 0) + rpm
    return tpm_usage, rpm_usage


# ---------------------------------------------------------------------------------------------
# 2. Cooldowns (router_utils/cooldown_cache.py) and the counters that decide them

_SUBSECOND_BITS = 10
_STATUS_BITS = 10
_COOLDOWN_BITS = 28
#: Cooldown field: below this, milliseconds; else this bit set and whole seconds.
_IN_SECONDS = 1 << (_COOLDOWN_BITS - 1)
_STATUS_OTHER = (1 << _STATUS_BITS) - 1


class _OwnCooldown(NamedTuple):
    """A cooldown this process set: the record it wrote, LiteLLM's value, and when LiteLLM's
    in-memory key would expire (a cooldown set again while it runs keeps that)."""

    record: Tuple[int, int]
    value: Dict[str, Any]
    deadline: float


#: Cooldown key -> the last cooldown this process set under it.
_own_cooldowns: Dict[str, _OwnCooldown] = {}


def _pack_cooldown(value: Dict[str, Any], end: float) -> Tuple[int, int]:
    timestamp = float(value["timestamp"])
    stamp = int(timestamp)
    millis = min(int((timestamp - stamp) * 1000), 999)
    status = str(value["status_code"])
    if status == "":
        code = 0
    elif status.isascii() and status.isdigit() and int(status) < _STATUS_OTHER - 1:
        code = int(status) + 1
    else:
        code = _STATUS_OTHER
    seconds = max(end - timestamp, 0.0)
    cooldown = round(seconds * 1000)
    if cooldown >= _IN_SECONDS:
        cooldown = _IN_SECONDS | min(math.ceil(seconds), _IN_SECONDS - 1)
    return stamp, cooldown << (_STATUS_BITS + _SUBSECOND_BITS) | code << _SUBSECOND_BITS | millis


def _unpack_cooldown(record: Tuple[int, int]) -> Dict[str, Any]:
    stamp, packed = record
    cooldown = packed >> (_STATUS_BITS + _SUBSECOND_BITS)
    code = packed >> _SUBSECOND_BITS & ((1 << _STATUS_BITS) - 1)
    millis = packed & ((1 << _SUBSECOND_BITS) - 1)
    return {
        "exception_received": REMOTE_EXCEPTION_TEXT,
        "status_code": str(code - 1) if 0 < code < _STATUS_OTHER else "",
        "timestamp": stamp + millis / 1000,
        "cooldown_time": float(cooldown & (_IN_SECONDS - 1)) if cooldown & _IN_SECONDS else cooldown / 1000,
    }


class _Found(NamedTuple):
    value: Dict[str, Any]
    #: When the cooldown is over.
    end: float
    #: This process's own record, when it set it.
    own: Optional[_OwnCooldown]


def _read_cooldown(region: shm.Region, key: str, now: float) -> Optional[_Found]:
    """The cooldown record LiteLLM's store would still hold under `key`, or None. This
    process's own records live until LiteLLM's key would expire; other processes' records
    until their cooldown ends."""
    record = region.value_get(key)
    own = _own_cooldowns.get(key)
    if own is not None and own.record == record:
        if now > own.deadline:
            _own_cooldowns.pop(key, None)
            return None
        return _Found(own.value, own.value["timestamp"] + own.value["cooldown_time"], own)
    if own is not None:
        _own_cooldowns.pop(key, None)  # another process replaced it
    if record is None:
        return None
    value = _unpack_cooldown(record)
    end = value["timestamp"] + value["cooldown_time"]
    return _Found(value, end, None) if end > now else None


def _active_cooldowns(region: shm.Region, model_ids: Sequence[str]) -> List[Tuple[str, Dict[str, Any]]]:
    """`CooldownCache.get_active_cooldowns` (with `_corrected_active_cooldown`'s effect on the
    key's life): (model id, CooldownCacheValue) of each running cooldown."""
    now = time.time()
    active: List[Tuple[str, Dict[str, Any]]] = []
    for model_id in model_ids:
        key = _m.cooldown_cache.CooldownCache.get_cooldown_cache_key(model_id)
        found = _read_cooldown(region, key, now)
        if found is None:
            continue
        remaining = found.end - now
        if remaining <= 0:
            _own_cooldowns.pop(key, None)
            continue
        if found.own is not None and found.own.deadline > now + remaining + 5:
            _own_cooldowns[key] = found.own._replace(deadline=now + min(remaining, _ttls.corrected_cooldown))
        active.append((model_id, dict(found.value)))
    return active


def cooldown_add_deployment_to_cooldown(
    self: Any, model_id: str, original_exception: Exception, exception_status: int, cooldown_time: Optional[float]
) -> None:
    region = _shared(self.cooldown_store)
    ttl = self.default_cooldown_time if cooldown_time is None else cooldown_time
    key, value = self._common_add_cooldown_logic(
        model_id=model_id,
        original_exception=original_exception,
        exception_status=exception_status,
        cooldown_time=ttl,
    )
    now = value["timestamp"]
    running = _read_cooldown(region, key, now)
    # As LiteLLM's in-memory key: a cooldown set while one runs keeps the running one's expiry.
    if running is None:
        deadline = now + float(ttl)
    else:
        deadline = running.own.deadline if running.own is not None else running.end
    stamp, packed = _pack_cooldown(value, min(deadline, now + float(ttl)))
    try:
        region.value_set(key, stamp, packed, ttl_s=max(deadline - now, 0.0) + 1.0)
    except shm.RegionFullError as error:
        raise Decline(str(error)) from error
    _own_cooldowns[key] = _OwnCooldown((stamp, packed), value, deadline)


async def cooldown_async_get_active_cooldowns(
    self: Any, model_ids: List[str], parent_otel_span: Any
) -> List[Tuple[str, Dict[str, Any]]]:
    return _active_cooldowns(_shared(self.cooldown_store), model_ids)


def cooldown_get_active_cooldowns(
    self: Any, model_ids: List[str], parent_otel_span: Any
) -> List[Tuple[str, Dict[str, Any]]]:
    return _active_cooldowns(_shared(self.cooldown_store), model_ids)


def cooldown_get_min_cooldown(self: Any, model_ids: List[str], parent_otel_span: Any) -> float:
    region = _shared(self.cooldown_store)
    now = time.time()
    min_cooldown_time: Optional[float] = None
    for model_id in model_ids:
        found = _read_cooldown(region, f"deployment:{model_id}:cooldown", now)
        if found is not None:
            cooldown = found.value["cooldown_time"]
            if min_cooldown_time is None or cooldown < min_cooldown_time:
                min_cooldown_time = cooldown
    return min_cooldown_time or self.default_cooldown_time


# ---------------------------------------------------------------------------------------------
# 1.110: the native stores (`litellm.redis.stores.router_cooldowns.RouterCooldownStore`,
# `litellm.redis.stores.router_usage.RouterUsageStore`). Their async methods answer from their
# sync ones without Redis, except `async_put` and `async_increment_allowed_fails`, patched too.
# What LiteLLM's native code does, measured on 1.110.2 (unpatched store, no Redis):
#   - cooldown `put(model_id, value, ttl)`: key `deployment:{id}:cooldown`; a value is active while
#     now < its key's deadline and now < timestamp + cooldown_time. A put while one is active
#     replaces the value and keeps the running deadline (whatever its ttl, 0 or negative
#     included); otherwise the deadline is now + ttl (ttl <= 0: nothing is stored). The value is
#     read back as a new dict of its four keys, their types kept (an int timestamp or
#     cooldown_time stays int), other keys dropped; a missing key, a bool or a wrong type raise
#     in LiteLLM, as do an infinite or NaN ttl.
#   - `active_sync(ids)`: (id, value) of each active id in the order of `ids`, duplicates kept;
#     `minimum(ids, default)`: the smallest active cooldown_time, `or default`.
#   - `increment_allowed_fails(id, suffix, ttl)`: key `deployment:{id}:allowed_fails[:{suffix}]`
#     (suffix "" as None); the expiry is set when the key is created and not moved by later
#     increments (whatever their ttl); a fresh key with ttl <= 0 is not stored (the call
#     answers 1).
#   - usage: key `global_router:{id}:{model}:{tpm|rpm}:{minute}` (model None as "None");
#     `increment_sync` returns the new count (int while every add is, else float), keeps the
#     key's first expiry, stores nothing for a fresh key with ttl <= 0, counts below 0;
#     `increment_deployment_sync` adds tokens to tpm and requests to rpm, 0 included, TTL 60 s;
#     `get_many_sync` answers None for a missing key.
# The patches below keep every count the region can hold there; any other add (a float, a
# negative, a fresh key with ttl <= 0, a full table) goes to LiteLLM's own store, and every read
# answers region + LiteLLM's own, so the process that made it reads LiteLLM's exact number.

def _original(owner: Any, attribute: str) -> Any:
    """LiteLLM's own `owner.attribute` (the guard keeps it), to add its per-process part."""
    function = inspect.getattr_static(owner, attribute)
    return getattr(function, "__fast_litellm_original__", function)


def _native_region(store: Any) -> shm.Region:
    """The region, for a native store; Decline when it has Redis (LiteLLM's own path)."""
    if store.has_redis:
        raise Decline("LiteLLM has Redis for this router: its own path counts")
    assert _region is not None
    return _region


def _plus(region_count: Optional[int], own: Any) -> Any:
    if region_count is None:
        return own
    return region_count if own is None else region_count + own


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


_USAGE_KINDS = {"tpm": "TPM", "rpm": "RPM"}


def _usage_key(counter: Any) -> str:
    kind = _USAGE_KINDS.get(counter.kind) if isinstance(counter.kind, str) else None
    if kind is None:
        raise Decline(f"usage kind {counter.kind!r}: LiteLLM's own store")
    return _global_key(kind, counter.deployment_id, counter.model, counter.minute)


def _usage_add(store: Any, counter: Any, value: Any, ttl: Any) -> Any:
    region = _native_region(store)
    key = _usage_key(counter)
    if type(value) not in (int, float):
        raise Decline(f"value {value!r}: LiteLLM's store checks it")
    cls = _m.usage_store.RouterUsageStore
    if type(value) is int and 0 <= value < 1 << 40 and type(ttl) is int:
        try:
            count: Optional[int]
            if ttl > 0:
                count = region.counter_add(key, value, float(ttl))
            else:  # an existing key keeps its expiry; a fresh one is LiteLLM's (not stored)
                count = region.counter_get(key)
                if count is not None:
                    count = region.counter_add(key, value, 1.0)
            if count is not None:
                return _plus(count, _original(cls, "get_many_sync")(store, [counter])[0])
        except shm.RegionFullError:
            pass
    own = _original(cls, "increment_sync")(store, counter, value, ttl)
    return _plus(region.counter_get(key), own)


def usage_increment_sync(self: Any, counter: Any, value: float, ttl: int) -> Any:
    return _usage_add(self, counter, value, ttl)


def usage_increment_deployment_sync(
    self: Any, deployment_id: str, model: Optional[str], minute: str, tokens: float, requests: int
) -> None:
    _native_region(self)
    if type(tokens) not in (int, float) or type(requests) is not int:
        raise Decline("not a count LiteLLM's native store takes")
    counter = _m.usage_store.UsageCounter
    ttl = int(_NATIVE_USAGE_TTL)
    _usage_add(self, counter(deployment_id, model, minute, "tpm"), tokens, ttl)
    _usage_add(self, counter(deployment_id, model, minute, "rpm"), requests, ttl)


def usage_get_many_sync(self: Any, counters: Sequence[Any]) -> List[Any]:
    region = _native_region(self)
    own = _original(_m.usage_store.RouterUsageStore, "get_many_sync")(self, counters)
    return [_plus(region.counter_get(_usage_key(c)), o) for c, o in zip(counters, own)]


def _native_cooldown_value(value: Any) -> Dict[str, Any]:
    """The value LiteLLM's native store keeps and reads back, or Decline (where it raises)."""
    try:
        fields = [value[k] for k in ("exception_received", "status_code", "timestamp", "cooldown_time")]
    except (KeyError, TypeError, IndexError):
        raise Decline("not a CooldownCacheValue: LiteLLM's store raises") from None
    exception, status, timestamp, cooldown_time = fields
    if type(exception) is not str or type(status) is not str or not _finite(timestamp) or not _finite(cooldown_time):
        raise Decline("not a CooldownCacheValue: LiteLLM's store raises")
    return {"exception_received": exception, "status_code": status, "timestamp": timestamp,
            "cooldown_time": cooldown_time}


def _native_key(kind: str, model_id: Any) -> str:
    if type(model_id) is not str:
        raise Decline(f"model id {model_id!r}: LiteLLM's own store")
    return f"deployment:{model_id}:{kind}"


def _tombstone(region: shm.Region, key: str) -> None:
    """Ends the shared record under `key` (a record of timestamp 0 is over)."""
    _own_cooldowns.pop(key, None)
    if region.value_get(key) is not None:
        try:
            region.value_set(key, 0, 0, ttl_s=1.0)
        except shm.RegionFullError:
            pass


def _store_active(store: Any, model_ids: Sequence[str]) -> Tuple[Tuple[str, Dict[str, Any]], ...]:
    """`RouterCooldownStore.active_sync`: the region's active cooldowns, else LiteLLM's own."""
    region = _native_region(store)
    own = dict(_original(_m.cooldown_store.RouterCooldownStore, "active_sync")(store, model_ids))
    now = time.time()
    active: List[Tuple[str, Dict[str, Any]]] = []
    for model_id in model_ids:
        found = _read_cooldown(region, _native_key("cooldown", model_id), now)
        if found is not None and found.end > now:
            active.append((model_id, dict(found.value)))
        elif model_id in own:
            active.append((model_id, dict(own[model_id])))
    return tuple(active)


def cooldown_store_put(self: Any, model_id: str, value: Any, ttl: float) -> None:
    region = _native_region(self)
    key = _native_key("cooldown", model_id)
    cooldown = _native_cooldown_value(value)
    if not _finite(ttl):
        raise Decline(f"ttl {ttl!r}: LiteLLM's store raises")
    now = time.time()
    running = _read_cooldown(region, key, now)
    if running is not None and running.end > now:
        deadline = running.own.deadline if running.own is not None else running.end
    else:
        if _original(_m.cooldown_store.RouterCooldownStore, "active_sync")(self, [model_id]):
            raise Decline("a cooldown LiteLLM's own store holds is running: its own re-cooldown")
        deadline = now + float(ttl)
        if deadline <= now:
            return  # LiteLLM stores nothing
    timestamp = cooldown["timestamp"]
    end = min(deadline, timestamp + cooldown["cooldown_time"])
    if not 0 <= timestamp < 1 << 32 or end < timestamp:
        _tombstone(region, key)
        raise Decline("a timestamp the shared record cannot carry: LiteLLM's own store")
    stamp, packed = _pack_cooldown(cooldown, end)
    try:
        region.value_set(key, stamp, packed, ttl_s=max(deadline - now, 0.0) + 1.0)
    except shm.RegionFullError as error:
        _tombstone(region, key)
        raise Decline(str(error)) from error
    _own_cooldowns[key] = _OwnCooldown((stamp, packed), cooldown, deadline)


async def cooldown_store_async_put(self: Any, model_id: str, value: Any, ttl: float) -> None:
    cooldown_store_put(self, model_id, value, ttl)


def cooldown_store_active_sync(self: Any, model_ids: Sequence[str]) -> Tuple[Tuple[str, Dict[str, Any]], ...]:
    return _store_active(self, model_ids)


def cooldown_store_minimum(self: Any, model_ids: Sequence[str], default: float) -> float:
    lowest = min((value["cooldown_time"] for _, value in _store_active(self, model_ids)), default=None)
    return lowest or default


def cooldown_store_evict_local(self: Any, model_id: str) -> None:
    """Ends the cooldown for every process (the region is this store's memory), and in LiteLLM's."""
    _tombstone(_native_region(self), _native_key("cooldown", model_id))
    _original(_m.cooldown_store.RouterCooldownStore, "evict_local")(self, model_id)


def cooldown_store_increment_allowed_fails(self: Any, model_id: str, suffix: Optional[str], ttl: float) -> int:
    region = _native_region(self)
    if suffix is not None and type(suffix) is not str or not _finite(ttl):
        raise Decline("arguments LiteLLM's store checks itself")
    key = _native_key("allowed_fails", model_id) + (f":{suffix}" if suffix else "")
    if ttl > 0:
        return _write(region, key, 1, float(ttl))
    count = region.counter_get(key)  # an existing key keeps its expiry; a fresh one is not stored
    return 1 if count is None else _write(region, key, 1, 1.0)


async def cooldown_store_async_increment_allowed_fails(
    self: Any, model_id: str, suffix: Optional[str], ttl: float
) -> int:
    return cooldown_store_increment_allowed_fails(self, model_id, suffix, ttl)


def _routing_call(args: Tuple[Any, ...], kwargs: Dict[str, Any], rest: Tuple[str, ...]) -> List[Any]:
    """The arguments of a call that hands over the router, positional or by keyword: the
    parameter's name (`litellm_router_instance`, or from 1.109 `ctx`, whose renaming decorator
    still takes `litellm_router_instance=`), then `rest` in order. A call LiteLLM's own
    function would bind otherwise Declines to it."""
    values = list(args)
    kwargs = dict(kwargs)
    for name in ("ctx", "litellm_router_instance"):
        if name in kwargs and not values:
            values.append(kwargs.pop(name))
            break
    for name in rest[len(values) - 1 :] if values else ():
        if name in kwargs:
            values.append(kwargs.pop(name))
    if kwargs or len(values) != 1 + len(rest):
        raise Decline("call arguments LiteLLM's own function binds")
    return values


def _routing_store(holder: Any) -> Any:
    """The router's state cache: `router.cache`, or from 1.109 `ctx.health().store` (a Router
    handed where the context goes, which LiteLLM still accepts, has the same `health()`)."""
    return holder.health().store if _layout.routing_arg == "ctx" else holder.cache


def _routing_cooldowns(holder: Any) -> Tuple[Any, List[str]]:
    """(the CooldownCache's store, the router's deployment ids)."""
    if _layout.routing_arg == "ctx":
        return holder.health().cooldowns.cooldown_store, list(holder.registry().names(kind="ids"))
    return holder.cooldown_cache.cooldown_store, list(holder.get_model_ids())


async def read_batch_async_get_cooldown_deployments(self: Any, *args: Any, **kwargs: Any) -> List[str]:
    """The cooldowns from the region; no usage is prefetched, since ubr-v2's selection reads
    the region itself."""
    holder, _healthy_deployments, _parent_otel_span = _routing_call(
        args, kwargs, ("healthy_deployments", "parent_otel_span")
    )
    store, model_ids = _routing_cooldowns(holder)
    if _layout.stores == "native":
        return [model_id for model_id, _ in _store_active(store, model_ids)]
    return [model_id for model_id, _ in _active_cooldowns(_shared(store), model_ids)]


def metrics_increment_successes(*args: Any, **kwargs: Any) -> str:
    holder, deployment_id = _routing_call(args, kwargs, ("deployment_id",))
    key = f"{deployment_id}:successes"
    _write(_shared(_routing_store(holder)), key, 1, _METRICS_TTL)
    return key


def metrics_increment_failures(*args: Any, **kwargs: Any) -> None:
    holder, deployment_id = _routing_call(args, kwargs, ("deployment_id",))
    _write(_shared(_routing_store(holder)), f"{deployment_id}:fails", 1, _METRICS_TTL)


def metrics_get_successes(*args: Any, **kwargs: Any) -> int:
    holder, deployment_id = _routing_call(args, kwargs, ("deployment_id",))
    return _shared(_routing_store(holder)).counter_get(f"{deployment_id}:successes") or 0


def metrics_get_failures(*args: Any, **kwargs: Any) -> int:
    holder, deployment_id = _routing_call(args, kwargs, ("deployment_id",))
    return _shared(_routing_store(holder)).counter_get(f"{deployment_id}:fails") or 0


def cooldown_increment_allowed_fails(cache: Any, cache_key: str, ttl: float) -> int:
    return _write(_shared(cache), cache_key, 1, _ttl(ttl))


# ---------------------------------------------------------------------------------------------
# 3. Per-deployment max_parallel_requests (router_utils/client_initalization_utils.py)

#: MaxParallelRequestsLimit -> (pid, region slots it holds in that process).
_region_slots: "weakref.WeakKeyDictionary[Any, Tuple[int, int]]" = weakref.WeakKeyDictionary()


def _slot_key(limit: Any) -> str:
    return f"deployment:{limit.model_id}:max_parallel_requests"


def _slots_held(limit: Any) -> int:
    pid, held = _region_slots.get(limit, (0, 0))
    return held if pid == os.getpid() else 0  # a forked child holds none of its parent's slots


def slots_acquire(self: Any) -> None:
    """A host-wide slot. `in_flight` then shows the host-wide count; on a refusal it is set to
    at least the limit, and LiteLLM's own acquire raises its own error on the same call."""
    assert _region is not None
    max_slots = self.max_parallel_requests
    if type(max_slots) is not int or max_slots < 0:
        raise Decline(f"max_parallel_requests={max_slots!r} is not a whole number")
    key = _slot_key(self)
    if not _region.acquire(key, max_slots):
        self.in_flight = max(_region.slots_in_use(key), max_slots)
        raise Decline(f"all {max_slots} slots in use: LiteLLM raises")
    _region_slots[self] = (os.getpid(), _slots_held(self) + 1)
    self.in_flight = _region.slots_in_use(key)


def slots_release(self: Any) -> None:
    """Gives back a region slot this object took in this process; Declines otherwise (a slot
    LiteLLM's own acquire took)."""
    held = _slots_held(self)
    if held == 0 or _region is None:
        raise Decline("no region slot held by this object in this process")
    key = _slot_key(self)
    _region.release(key)
    _region_slots[self] = (os.getpid(), held - 1)
    self.in_flight = _region.slots_in_use(key)


# ---------------------------------------------------------------------------------------------
# Install


class _Patch(NamedTuple):
    shape: Shape
    accelerated: Any
    #: Runs whatever the flag and breaker say (gives back what an accelerated call took).
    always: bool = False


def _layout_of(m: _LiteLLM) -> _Layout:
    """The one place that tells LiteLLM releases apart: which variant each shape has."""
    metrics = shape(m.metrics, "increment_deployment_successes_for_current_minute")
    metrics = Shape(metrics.owner, metrics.attribute, _ROUTING_ARG)
    facade = importlib.import_module("litellm.router").Router
    stores = Shape(m.cooldown_cache.CooldownCache, "__init__", _STORES).variant()
    return _Layout(
        routing_arg=metrics.variant() or "router",
        router_state="router" if m.router_class is facade else "core",
        mrl="helpers" if hasattr(m.mrl.ModelRateLimitingCheck, "_increment") else "inline",
        usage_counter_keys=hasattr(m.ubr.LowestTPMLoggingHandler_v2, "usage_counter_keys"),
        stores=stores if stores == "native" and m.cooldown_store and m.usage_store else "cache",
    )


#: `CooldownCache.__init__`: over the router's DualCache, or (1.110) over a native store.
_STORES = {
    "cache": ("self", "cache", "default_cooldown_time", "redis_read_interval_seconds"),
    "native": ("self", "store", "default_cooldown_time", "clock"),
}

#: What the router (or its RoutingContext) is called in track_deployment_metrics.
_ROUTING_ARG = {"router": ("litellm_router_instance", "deployment_id"), "ctx": ("ctx", "deployment_id")}


def _patches(m: _LiteLLM, layout: _Layout) -> List[_Patch]:
    """Every patch, with the shape (the parameter lists, by variant) LiteLLM's original must have."""
    ubr, mrl = m.ubr.LowestTPMLoggingHandler_v2, m.mrl.ModelRateLimitingCheck
    router, cooldowns = m.router_class, m.cooldown_cache.CooldownCache
    event = ("self", "kwargs", "response_obj", "start_time", "end_time")
    ids = ("self", "model_ids", "parent_otel_span")

    def p(owner: Any, attribute: str, accelerated: Any, *params: Tuple[str, ...], always: bool = False) -> _Patch:
        return _Patch(shape(owner, attribute, *params, is_async=inspect.iscoroutinefunction(accelerated)), accelerated, always)

    def routed(owner: Any, attribute: str, accelerated: Any, *rest: str) -> _Patch:
        lead = ("self",) if inspect.isclass(owner) else ()
        variants = {name: lead + params[:1] + rest for name, params in _ROUTING_ARG.items()}
        return _Patch(Shape(owner, attribute, variants, inspect.iscoroutinefunction(accelerated)), accelerated)

    patches = [
        p(ubr, "pre_call_check", ubr_pre_call_check, ("self", "deployment")),
        p(ubr, "async_pre_call_check", ubr_async_pre_call_check, ("self", "deployment", "parent_otel_span")),
        p(ubr, "log_success_event", ubr_log_success_event, event),
        p(ubr, "async_log_success_event", ubr_async_log_success_event, event),
        p(ubr, "async_get_available_deployments", ubr_async_get_available_deployments,
          ("self", "model_group", "healthy_deployments", "messages", "input")),
        p(ubr, "get_available_deployments", ubr_get_available_deployments,
          ("self", "model_group", "healthy_deployments", "messages", "input", "parent_otel_span")),
    ]
    if layout.mrl == "inline":
        patches += [
            p(mrl, "pre_call_check", mrl_pre_call_check, ("self", "deployment")),
            p(mrl, "async_pre_call_check", mrl_async_pre_call_check, ("self", "deployment", "parent_otel_span")),
            p(mrl, "log_success_event", mrl_log_success_event, event),
            p(mrl, "async_log_success_event", mrl_async_log_success_event, event),
        ]
    else:
        request_counts = ("self", "rpm_key", "rpd_key", "parent_otel_span")
        patches += [
            p(mrl, "_increment", mrl_increment, ("self", "key", "value", "ttl")),
            p(mrl, "_async_increment", mrl_async_increment, ("self", "key", "value", "ttl", "parent_otel_span")),
            p(mrl, "_async_increment_request_counts", mrl_async_increment_request_counts, request_counts),
            p(mrl, "_async_refund_request_counts", mrl_async_refund_request_counts, request_counts),
            p(mrl, "_get_current_tpm", mrl_get_current_tpm, ("self", "tpm_key", "tpm_limit")),
            p(mrl, "_async_get_current_tpm", mrl_async_get_current_tpm,
              ("self", "tpm_key", "tpm_limit", "parent_otel_span")),
        ]
    if layout.stores == "cache":
        usage = "get_model_group_usage" if layout.router_state == "router" else "_core_get_model_group_usage"
        patches += [
            p(router, "_increment_deployment_usage", router_increment_deployment_usage,
              ("self", "deployment_id", "deployment_name", "model_group", "total_tokens", "rpm_increment",
               "parent_otel_span")),
            p(router, "async_deployment_callback_on_failure", router_async_deployment_callback_on_failure,
              ("self", "kwargs", "completion_response", "start_time", "end_time")),
            p(router, usage, router_get_model_group_usage, ("self", "model_group")),
            p(cooldowns, "add_deployment_to_cooldown", cooldown_add_deployment_to_cooldown,
              ("self", "model_id", "original_exception", "exception_status", "cooldown_time")),
            p(cooldowns, "async_get_active_cooldowns", cooldown_async_get_active_cooldowns, ids),
            p(cooldowns, "get_active_cooldowns", cooldown_get_active_cooldowns, ids),
            p(cooldowns, "get_min_cooldown", cooldown_get_min_cooldown, ids),
            p(m.cooldown_handlers, "_increment_allowed_fails", cooldown_increment_allowed_fails,
              ("cache", "cache_key", "ttl")),
        ]
    else:
        # The Router's usage writes and reads, CooldownCache and the Rust core's cache steps
        # (`RoutingStores`) all reach their state through these two stores.
        store, usage_store = m.cooldown_store.RouterCooldownStore, m.usage_store.RouterUsageStore
        put, fails = ("self", "model_id", "value", "ttl"), ("self", "model_id", "suffix", "ttl")
        patches += [
            p(store, "put", cooldown_store_put, put),
            p(store, "async_put", cooldown_store_async_put, put),
            p(store, "active_sync", cooldown_store_active_sync, ("self", "model_ids")),
            p(store, "minimum", cooldown_store_minimum, ("self", "model_ids", "default")),
            p(store, "evict_local", cooldown_store_evict_local, ("self", "model_id")),
            p(store, "increment_allowed_fails", cooldown_store_increment_allowed_fails, fails),
            p(store, "async_increment_allowed_fails", cooldown_store_async_increment_allowed_fails, fails),
            p(usage_store, "increment_sync", usage_increment_sync, ("self", "counter", "value", "ttl")),
            p(usage_store, "increment_deployment_sync", usage_increment_deployment_sync,
              ("self", "deployment_id", "model", "minute", "tokens", "requests")),
            p(usage_store, "get_many_sync", usage_get_many_sync, ("self", "counters")),
        ]
    if m.read_batch is not None:
        patches.append(routed(m.read_batch.RoutingReadBatch, "async_get_cooldown_deployments",
                              read_batch_async_get_cooldown_deployments, "healthy_deployments", "parent_otel_span"))
    if layout.stores == "cache":
        # From 1.110 LiteLLM keeps `{id}:successes|fails` per process on purpose: the Rust core
        # writes them with `local` cache steps, which these functions never see.
        patches += [
            routed(m.metrics, "increment_deployment_successes_for_current_minute", metrics_increment_successes,
                   "deployment_id"),
            routed(m.metrics, "increment_deployment_failures_for_current_minute", metrics_increment_failures,
                   "deployment_id"),
            routed(m.metrics, "get_deployment_successes_for_current_minute", metrics_get_successes,
                   "deployment_id"),
            routed(m.metrics, "get_deployment_failures_for_current_minute", metrics_get_failures, "deployment_id"),
        ]
    patches += [
        p(m.slots.MaxParallelRequestsLimit, "acquire", slots_acquire, ("self",)),
        p(m.slots.MaxParallelRequestsLimit, "release", slots_release, ("self",), always=True),
    ]
    return patches


def _used(m: _LiteLLM, layout: _Layout) -> List[Tuple[Any, str]]:
    """The LiteLLM names the patches use besides the patched ones: (owner, attribute)."""
    ubr, mrl, router = m.ubr.LowestTPMLoggingHandler_v2, m.mrl.ModelRateLimitingCheck, m.router_class
    names = [
        (ubr, "_common_checks_available_deployment"),
        (m.ubr, "get_utc_datetime"),
        (m.ubr, "is_batch_retrieve_call_type"),
        (m.ubr, "verbose_logger"),
        (mrl, "_get_cache_keys"),
        (m.mrl, "RoutingArgs"),
        (m.types_router, "RouterCacheEnum"),
    ]
    if layout.stores == "cache":
        names += [
            (m.router, "get_utc_datetime"),
            (m.router, "RoutingArgs"),
            (m.router, "is_batch_retrieve_call_type"),
            (m.cooldown_cache.CooldownCache, "_common_add_cooldown_logic"),
            (m.cooldown_cache.CooldownCache, "get_cooldown_cache_key"),
            (m.cooldown_cache, "_MAX_CORRECTED_IN_MEMORY_TTL_SECONDS"),
        ]
    else:
        store, usage_store = m.cooldown_store.RouterCooldownStore, m.usage_store.RouterUsageStore
        names += [(store, "has_redis"), (usage_store, "has_redis"), (m.usage_store, "UsageCounter")]
    if layout.mrl == "inline":
        names += [
            (mrl, "_get_deployment_limits"),
            (m.mrl, "deployment_has_io_token_limits"),
            (m.mrl, "ITPM_RESERVED_KEY"),
            (m.mrl, "get_utc_datetime"),
            (m.mrl, "verbose_router_logger"),
        ]
    else:
        names += [(mrl, "_request_count_operations")]
    if layout.stores == "native":
        pass  # the Router's usage code is LiteLLM's own, over the patched store
    elif layout.router_state == "router":
        names += [(router, "get_deployment"), (router, "get_router_model_info"), (router, "get_model_list"),
                  (m.router, "deployment_has_io_token_limits")]
    else:
        names += [(router, "_deployment_tracks_usage"), (router, "_core_get_model_list")]  # cached per instance
    if layout.usage_counter_keys:
        names.append((ubr, "usage_counter_keys"))
    return names


def _check(m: _LiteLLM, layout: _Layout, patches: List[_Patch]) -> None:
    """Declines, naming them, when LiteLLM's functions do not look as the patches expect."""
    found = problems([patch.shape for patch in patches], _used(m, layout))
    if found:
        log.warning("fast_litellm: router: this LiteLLM does not match: %s", "; ".join(found))
        raise Decline(f"LiteLLM does not match: {'; '.join(found)}")


def _rebind_existing_routers(m: _LiteLLM, original: Any) -> int:
    """Points the failure callback of every Router built before the patch at the patched method."""
    callbacks = m.litellm._async_failure_callback
    rebound = 0
    for index, callback in enumerate(list(callbacks) if isinstance(callbacks, list) else []):
        if isinstance(callback, types.MethodType) and callback.__func__ is original:
            router: Any = callback.__self__
            callbacks[index] = router.async_deployment_callback_on_failure
            rebound += 1
    return rebound


def install(c: Component) -> None:
    global _m, _layout, _ttls, _region, _component
    region = shm.region()
    if region is None:
        raise Decline("no shared region (FAST_LITELLM_SHM=off)")
    m = _LiteLLM.load()
    layout = _layout_of(m)
    patches = _patches(m, layout)
    _check(m, layout, patches)
    _m, _layout, _ttls, _region, _component = m, layout, _TTLs.of(m, layout), region, c
    failure_callback = m.router_class.async_deployment_callback_on_failure if layout.stores == "cache" else None
    for patch in patches:
        owner, attribute = patch.shape.owner, patch.shape.attribute
        if not c.patch(owner, attribute, patch.accelerated, always=patch.always):
            raise Decline(f"{getattr(owner, '__name__', owner)}.{attribute} is missing in this LiteLLM")
    rebound = 0 if failure_callback is None else _rebind_existing_routers(m, failure_callback)
    if rebound:
        log.info("fast_litellm: router: re-bound the failure callback of %d existing Router(s)", rebound)
