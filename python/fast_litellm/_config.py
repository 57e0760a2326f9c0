"""Settings read from the environment. Every bad value raises ConfigError naming the variable,
at import, so a typo never silently means "default"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from . import _native

OFF_VALUES = ("off", "none", "disabled")


class ConfigError(ValueError):
    """A FAST_LITELLM_* environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class RegionSettings:
    #: Region file, None for an anonymous region shared with forked children.
    path: Optional[str]
    #: False when FAST_LITELLM_SHM=off: no region at all.
    enabled: bool
    capacity: Optional[int]
    max_workers: Optional[int]
    fail_open: bool


def _positive_int(env: Mapping[str, str], name: str) -> Optional[int]:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _on_off(env: Mapping[str, str], name: str) -> bool:
    """A switch that is on unless set to off (on/off, 1/0, true/false)."""
    raw = env.get(name, "on").strip().lower() or "on"
    if raw not in ("on", "off", "1", "0", "true", "false"):
        raise ConfigError(f"{name}={raw!r} must be 'on' or 'off'")
    return raw in ("on", "1", "true")


def capacity_for(slots: int) -> int:
    """The table capacity for a requested number of slots: the next power of two."""
    return 1 << (slots - 1).bit_length()


def capacity_problem(slots: int) -> Optional[str]:
    """Why `slots` counters cannot be a region's capacity, or None."""
    low, high = _native.MIN_CAPACITY, _native.MAX_CAPACITY
    if not low <= capacity_for(slots) <= high:
        return f"asks for {slots} counters: a region holds {low:,} to {high:,} (rounded up to a power of two)"
    return None


def workers_problem(workers: int) -> Optional[str]:
    """Why `workers` cannot be a region's worker count, or None."""
    low, high = _native.MIN_WORKERS, _native.MAX_WORKERS
    if not low <= workers <= high:
        return f"asks for {workers} worker entries: a region has {low} to {high:,}"
    return None


def region_settings(env: Mapping[str, str] = os.environ) -> RegionSettings:
    raw_path = env.get("FAST_LITELLM_SHM", "").strip()
    enabled = raw_path.lower() not in OFF_VALUES
    path = raw_path if raw_path and enabled else None
    if path is not None and not path.startswith("/"):
        raise ConfigError(f"FAST_LITELLM_SHM={raw_path!r} must be an absolute path (e.g. /dev/shm/fl) or 'off'")
    slots = _positive_int(env, "FAST_LITELLM_SHM_CAPACITY")
    if slots is not None and capacity_problem(slots):
        raise ConfigError(f"FAST_LITELLM_SHM_CAPACITY={env['FAST_LITELLM_SHM_CAPACITY']!r} {capacity_problem(slots)}")
    capacity = capacity_for(slots) if slots is not None else None
    max_workers = _positive_int(env, "FAST_LITELLM_SHM_WORKERS")
    if max_workers is not None and workers_problem(max_workers):
        raise ConfigError(f"FAST_LITELLM_SHM_WORKERS={env['FAST_LITELLM_SHM_WORKERS']!r} {workers_problem(max_workers)}")
    policy = env.get("FAST_LITELLM_SHM_FULL_POLICY", "closed").strip().lower() or "closed"
    if policy not in ("open", "closed"):
        raise ConfigError(f"FAST_LITELLM_SHM_FULL_POLICY={policy!r} must be 'open' or 'closed'")
    return RegionSettings(path, enabled, capacity, max_workers, policy == "open")



@dataclass(frozen=True)
class HostTierSettings:
    on: bool
    hosts: int
    down_policy: str
    timeout_s: float
    #: How long token increments of counters no limit reads wait to be sent to Redis, summed
    #: (0: each is sent when LiteLLM sends it).
    flush_s: float = 1.0
    #: Whether a key that keeps asking has its next lease asked for before this one runs out.
    refill_ahead: bool = True
    #: How long a max_parallel_requests slot the host holds in Redis stays idle before it is
    #: given back (0: each request acquires and releases its own slot in Redis, as LiteLLM does).
    gauge_linger_s: float = 0.5


def host_tier_settings(env: Mapping[str, str] = os.environ) -> HostTierSettings:
    """FAST_LITELLM_HOST_TIER, _REDIS_HOSTS, _REDIS_DOWN_POLICY, _REDIS_TIMEOUT_MS,
    _REDIS_FLUSH_MS, _REDIS_REFILL_AHEAD, _REDIS_GAUGE_LINGER_MS (docs/host-tier.md)."""
    on = _on_off(env, "FAST_LITELLM_HOST_TIER")
    hosts_raw = env.get("FAST_LITELLM_REDIS_HOSTS", "").strip()
    hosts = _positive_int(env, "FAST_LITELLM_REDIS_HOSTS") or 1
    if hosts > 10_000:
        raise ConfigError(f"FAST_LITELLM_REDIS_HOSTS={hosts_raw!r} must be between 1 and 10000")
    policy = env.get("FAST_LITELLM_REDIS_DOWN_POLICY", "local-share").strip().lower() or "local-share"
    if policy not in ("local-share", "closed", "open"):
        raise ConfigError(f"FAST_LITELLM_REDIS_DOWN_POLICY={policy!r} must be 'local-share', 'closed' or 'open'")
    timeout_raw = env.get("FAST_LITELLM_REDIS_TIMEOUT_MS", "").strip()
    timeout_ms = _positive_int(env, "FAST_LITELLM_REDIS_TIMEOUT_MS") or 250
    if timeout_ms > 60_000:
        raise ConfigError(f"FAST_LITELLM_REDIS_TIMEOUT_MS={timeout_raw!r} must be between 1 and 60000")
    return HostTierSettings(on, hosts, policy, timeout_ms / 1000,
                            _millis(env, "FAST_LITELLM_REDIS_FLUSH_MS", 1000) / 1000,
                            _on_off(env, "FAST_LITELLM_REDIS_REFILL_AHEAD"),
                            _millis(env, "FAST_LITELLM_REDIS_GAUGE_LINGER_MS", 500) / 1000)


def _millis(env: Mapping[str, str], name: str, default: int) -> int:
    """A duration in whole milliseconds, 0 (off) to 60000."""
    raw = env.get(name, "").strip()
    try:
        millis = int(raw.replace("_", "")) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not 0 <= millis <= 60_000:
        raise ConfigError(f"{name}={raw!r} must be between 0 (off) and 60000")
    return millis
