"""router: LiteLLM Router state kept in the shared region, so every process of the host shares it.

What LiteLLM does, per process
    Without Redis each worker keeps its router state in its own `InMemoryCache`s, so under
    `gunicorn -w N` a deployment's `rpm: 10` admits 10 per worker, a deployment that fails in
    one worker stays in rotation in the others, and `max_parallel_requests` is per worker.

What this component does (LiteLLM 1.106.2; keys and TTLs are LiteLLM's)
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
    - Counters never go below 0 and count whole numbers (a float token count is rounded).
    - Region TTLs count whole seconds (a 60 s counter lives 59-60 s); the per-minute keys carry
      their minute, so no reader can tell. ubr-v2's async tpm counts live 60 s (LiteLLM's
      in-memory default is 600 s there), which no reader of that minute's key can tell either.
    - ubr-v2's async rpm check no longer appends to `redis_increment_operation_queue`, which
      LiteLLM never drains without Redis.
    - A refusal found between ubr-v2's read and its increment (only possible across
      processes) raises LiteLLM's at-the-limit error, with the same message.
    - Full table: pre-call checks admit uncounted (FAST_LITELLM_SHM_FULL_POLICY=open) or refuse
      (closed); other writes decline to LiteLLM's per-process state, which these readers do
      not see.
    - Two Routers of one process with the same deployment ids share the counters, as the
      processes do.

Callbacks bound at `Router.__init__`
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

log = logging.getLogger("fast_litellm")

#: `exception_received` of a cooldown set by another process: the text is not shared.
REMOTE_EXCEPTION_TEXT = "(set by another process; exception text not shared)"


@dataclass(frozen=True)
class _LiteLLM:
    """The LiteLLM modules the patches call into, imported at install (by name, so the type
    checker does not walk LiteLLM)."""

    litellm: Any
    router: Any
    ubr: Any
    mrl: Any
    cooldown_cache: Any
    cooldown_handlers: Any
    metrics: Any
    slots: Any
    read_batch: Any
    types_router: Any

    @classmethod
    def load(cls) -> "_LiteLLM":
        imp = importlib.import_module
        return cls(
            litellm=imp("litellm"),
            router=imp("litellm.router"),
            ubr=imp("litellm.router_strategy.lowest_tpm_rpm_v2"),
            mrl=imp("litellm.router_utils.pre_call_checks.model_rate_limit_check"),
            cooldown_cache=imp("litellm.router_utils.cooldown_cache"),
            cooldown_handlers=imp("litellm.router_utils.cooldown_handlers"),
            metrics=imp("litellm.router_utils.router_callbacks.track_deployment_metrics"),
            slots=imp("litellm.router_utils.client_initalization_utils"),
            read_batch=imp("litellm.router_utils.routing_read_batch"),
            types_router=imp("litellm.types.router"),
        )


@dataclass(frozen=True)
class _TTLs:
    """LiteLLM's counter TTLs (RoutingArgs of each module), read and checked at install."""

    model_rate_limits: float = 60.0
    router: float = 60.0
    #: The longest in-memory life `_corrected_active_cooldown` gives a running cooldown's key.
    corrected_cooldown: float = 60.0

    @classmethod
    def of(cls, m: "_LiteLLM") -> "_TTLs":
        return cls(
            model_rate_limits=_ttl(m.mrl.RoutingArgs.ttl),
            router=_ttl(m.router.RoutingArgs.ttl.value),
            corrected_cooldown=float(m.cooldown_cache._MAX_CORRECTED_IN_MEMORY_TTL_SECONDS),
        )


#: track_deployment_metrics' `ttl=60`.
_METRICS_TTL = 60.0

_m: Any = None
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


def _ubr_select(self: Any, model_group: str, healthy_deployments: List[Any], messages: Any, input: Any) -> Any:
    """ubr-v2's selection from the region's counts (a `PrefetchedUsage` is not used: the
    region is the fresher read). When no deployment fits, LiteLLM raises its own error from
    the same counts."""
    region = _shared(self.router_cache)
    tpm_keys, rpm_keys = self.usage_counter_keys(healthy_deployments)
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


# ---------------------------------------------------------------------------------------------
# global_router: counters (router.py)


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
    region = _shared(self.cache)
    deployment_info = self.get_deployment(model_id=deployment_id)
    if deployment_info is None:
        return None
    deployment_model_info = self.get_router_model_info(deployment=deployment_info, received_model_name=model_group)
    configured_limits = (
        deployment_info.get("tpm", None),
        deployment_info.get("rpm", None),
        deployment_info.litellm_params.tpm,
        deployment_info.litellm_params.rpm,
        deployment_model_info.get("tpm", None),
        deployment_model_info.get("rpm", None),
    )
    if all(limit is None for limit in configured_limits) and not _m.router.deployment_has_io_token_limits(
        deployment_info.model_dump()
    ):
        return None
    if total_tokens <= 0 and rpm_increment <= 0:
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
    region = _shared(self.cache)
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
    region = _shared(self.cache)
    current_minute = _minute(_m.router)
    model_list = self.get_model_list(model_name=model_group)
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


async def read_batch_async_get_cooldown_deployments(
    self: Any, litellm_router_instance: Any, healthy_deployments: List[Any], parent_otel_span: Any
) -> List[str]:
    """The cooldowns from the region; no usage is prefetched, since ubr-v2's selection reads
    the region itself."""
    region = _shared(litellm_router_instance.cooldown_cache.cooldown_store)
    return [model_id for model_id, _ in _active_cooldowns(region, litellm_router_instance.get_model_ids())]


def metrics_increment_successes(litellm_router_instance: Any, deployment_id: str) -> str:
    key = f"{deployment_id}:successes"
    _write(_shared(litellm_router_instance.cache), key, 1, _METRICS_TTL)
    return key


def metrics_increment_failures(litellm_router_instance: Any, deployment_id: str) -> None:
    _write(_shared(litellm_router_instance.cache), f"{deployment_id}:fails", 1, _METRICS_TTL)


def metrics_get_successes(litellm_router_instance: Any, deployment_id: str) -> int:
    return _shared(litellm_router_instance.cache).counter_get(f"{deployment_id}:successes") or 0


def metrics_get_failures(litellm_router_instance: Any, deployment_id: str) -> int:
    return _shared(litellm_router_instance.cache).counter_get(f"{deployment_id}:fails") or 0


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


def _patches(m: _LiteLLM) -> List[Tuple[Any, str, Any, Tuple[str, ...], bool]]:
    """(owner, attribute, accelerated, LiteLLM's parameter names, always) of every patch."""
    ubr, mrl = m.ubr.LowestTPMLoggingHandler_v2, m.mrl.ModelRateLimitingCheck
    router, cooldowns = m.router.Router, m.cooldown_cache.CooldownCache
    event = ("self", "kwargs", "response_obj", "start_time", "end_time")
    ids = ("self", "model_ids", "parent_otel_span")
    router_and_id = ("litellm_router_instance", "deployment_id")
    return [
        (ubr, "pre_call_check", ubr_pre_call_check, ("self", "deployment"), False),
        (ubr, "async_pre_call_check", ubr_async_pre_call_check, ("self", "deployment", "parent_otel_span"), False),
        (ubr, "log_success_event", ubr_log_success_event, event, False),
        (ubr, "async_log_success_event", ubr_async_log_success_event, event, False),
        (ubr, "async_get_available_deployments", ubr_async_get_available_deployments,
         ("self", "model_group", "healthy_deployments", "messages", "input"), False),
        (ubr, "get_available_deployments", ubr_get_available_deployments,
         ("self", "model_group", "healthy_deployments", "messages", "input", "parent_otel_span"), False),
        (mrl, "pre_call_check", mrl_pre_call_check, ("self", "deployment"), False),
        (mrl, "async_pre_call_check", mrl_async_pre_call_check, ("self", "deployment", "parent_otel_span"), False),
        (mrl, "log_success_event", mrl_log_success_event, event, False),
        (mrl, "async_log_success_event", mrl_async_log_success_event, event, False),
        (router, "_increment_deployment_usage", router_increment_deployment_usage,
         ("self", "deployment_id", "deployment_name", "model_group", "total_tokens", "rpm_increment",
          "parent_otel_span"), False),
        (router, "async_deployment_callback_on_failure", router_async_deployment_callback_on_failure,
         ("self", "kwargs", "completion_response", "start_time", "end_time"), False),
        (router, "get_model_group_usage", router_get_model_group_usage, ("self", "model_group"), False),
        (cooldowns, "add_deployment_to_cooldown", cooldown_add_deployment_to_cooldown,
         ("self", "model_id", "original_exception", "exception_status", "cooldown_time"), False),
        (cooldowns, "async_get_active_cooldowns", cooldown_async_get_active_cooldowns, ids, False),
        (cooldowns, "get_active_cooldowns", cooldown_get_active_cooldowns, ids, False),
        (cooldowns, "get_min_cooldown", cooldown_get_min_cooldown, ids, False),
        (m.read_batch.RoutingReadBatch, "async_get_cooldown_deployments", read_batch_async_get_cooldown_deployments,
         ("self", "litellm_router_instance", "healthy_deployments", "parent_otel_span"), False),
        (m.metrics, "increment_deployment_successes_for_current_minute", metrics_increment_successes,
         router_and_id, False),
        (m.metrics, "increment_deployment_failures_for_current_minute", metrics_increment_failures,
         router_and_id, False),
        (m.metrics, "get_deployment_successes_for_current_minute", metrics_get_successes, router_and_id, False),
        (m.metrics, "get_deployment_failures_for_current_minute", metrics_get_failures, router_and_id, False),
        (m.cooldown_handlers, "_increment_allowed_fails", cooldown_increment_allowed_fails,
         ("cache", "cache_key", "ttl"), False),
        (m.slots.MaxParallelRequestsLimit, "acquire", slots_acquire, ("self",), False),
        (m.slots.MaxParallelRequestsLimit, "release", slots_release, ("self",), True),
    ]


def _used(m: _LiteLLM) -> List[Tuple[Any, str]]:
    """The LiteLLM names the patches use besides the patched ones: (owner, attribute)."""
    return [
        (m.ubr.LowestTPMLoggingHandler_v2, "usage_counter_keys"),
        (m.ubr.LowestTPMLoggingHandler_v2, "_common_checks_available_deployment"),
        (m.ubr, "get_utc_datetime"),
        (m.ubr, "is_batch_retrieve_call_type"),
        (m.ubr, "verbose_logger"),
        (m.mrl.ModelRateLimitingCheck, "_get_deployment_limits"),
        (m.mrl.ModelRateLimitingCheck, "_get_cache_keys"),
        (m.mrl, "deployment_has_io_token_limits"),
        (m.mrl, "ITPM_RESERVED_KEY"),
        (m.mrl, "RoutingArgs"),
        (m.mrl, "get_utc_datetime"),
        (m.mrl, "verbose_router_logger"),
        (m.router, "get_utc_datetime"),
        (m.router, "RoutingArgs"),
        (m.router, "deployment_has_io_token_limits"),
        (m.router, "is_batch_retrieve_call_type"),
        (m.types_router, "RouterCacheEnum"),
        (m.cooldown_cache.CooldownCache, "_common_add_cooldown_logic"),
        (m.cooldown_cache.CooldownCache, "get_cooldown_cache_key"),
        (m.cooldown_cache, "_MAX_CORRECTED_IN_MEMORY_TTL_SECONDS"),
    ]


def _parameters(function: Any) -> Tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def _check(m: _LiteLLM, patches: List[Tuple[Any, str, Any, Tuple[str, ...], bool]]) -> None:
    """Declines, naming them, when LiteLLM's methods do not look as the patches expect."""
    problems = [f"{getattr(o, '__name__', o)}.{a} missing" for o, a in _used(m) if not hasattr(o, a)]
    for owner, attribute, accelerated, expected, _ in patches:
        original = inspect.getattr_static(owner, attribute, None)
        if original is None:
            continue  # Component.patch names it
        function = getattr(original, "__func__", original)
        found = _parameters(function)
        if found != expected:
            problems.append(f"{owner.__name__}.{attribute}{found} is not {expected}")
        elif inspect.iscoroutinefunction(function) != inspect.iscoroutinefunction(accelerated):
            problems.append(f"{owner.__name__}.{attribute} changed between sync and async")
    if problems:
        log.warning("fast_litellm: router: this LiteLLM does not match: %s", "; ".join(problems))
        raise Decline(f"LiteLLM does not match: {'; '.join(problems)}")


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
    global _m, _ttls, _region, _component
    region = shm.region()
    if region is None:
        raise Decline("no shared region (FAST_LITELLM_SHM=off)")
    m = _LiteLLM.load()
    patches = _patches(m)
    _check(m, patches)
    _m, _ttls, _region, _component = m, _TTLs.of(m), region, c
    failure_callback = m.router.Router.async_deployment_callback_on_failure
    for owner, attribute, accelerated, _, always in patches:
        if not c.patch(owner, attribute, accelerated, always=always):
            raise Decline(f"{getattr(owner, '__name__', owner)}.{attribute} is missing in this LiteLLM")
    rebound = _rebind_existing_routers(m, failure_callback)
    if rebound:
        log.info("fast_litellm: router: re-bound the failure callback of %d existing Router(s)", rebound)
