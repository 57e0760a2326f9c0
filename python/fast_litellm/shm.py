"""The shared-memory region: host-wide rate-limit counters and concurrency slots.

    from fast_litellm import shm
    r = shm.Region("/dev/shm/fl")               # creates or attaches
    d = r.hit("api_key:abc:rpm", limit=10)      # d.allowed, d.current, d.remaining, d.reset_in_s
    r.hit_many([("key:rpm", 10, 60.0, 1), ("user:rpm", 100, 60.0, 1)])   # all or nothing
    with r.slot("deployment:gpt-4o", max_slots=8):
        ...

shm.region() is the process-wide region configured by the environment (see the README):
created when fast_litellm is imported, shared by every process forked after that.
"""

from __future__ import annotations

import atexit
import logging
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from . import _config, _native
from ._native import (
    Decision,
    MultiDecision,
    RegionConfigError,
    RegionError,
    RegionFormatError,
    RegionFullError,
    RegionPermissionError,
    RegionSpaceError,
    RegionView,
    SlotNotHeldError,
    region_size,
)

__all__ = [
    "Decision",
    "MultiDecision",
    "Region",
    "RegionConfigError",
    "RegionError",
    "RegionFormatError",
    "RegionFullError",
    "RegionPermissionError",
    "RegionSpaceError",
    "RegionView",
    "SlotNotHeldError",
    "SlotUnavailable",
    "region",
    "region_size",
]

log = logging.getLogger("fast_litellm")

class SlotUnavailable(RuntimeError):
    """No slot of a key could be taken (raised by Region.slot): all `max_slots` are in use,
    or (`table_full`) the region's table had no room for the key at all."""

    def __init__(self, key: str, max_slots: int, in_use: int = -1) -> None:
        self.table_full = 0 <= in_use < max_slots
        if self.table_full:
            message = (f"no slot of {key!r} could be taken: the region's table is full ({in_use} of {max_slots} "
                       f"in use); raise FAST_LITELLM_SHM_CAPACITY")
        else:
            message = f"all {max_slots} slots of {key!r} are in use"
        super().__init__(message)
        self.key = key
        self.max_slots = max_slots


def _whole(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


class Region(_native.Region):
    """A process's handle on a shared region, created or attached.

    path None means FAST_LITELLM_SHM when it names a file, else an anonymous region shared
    with the processes forked after this one. capacity (counter slots, rounded up to a power
    of two), max_workers and fail_open default to FAST_LITELLM_SHM_CAPACITY,
    FAST_LITELLM_SHM_WORKERS and FAST_LITELLM_SHM_FULL_POLICY. A capacity given explicitly
    must match an existing region.
    """

    def __new__(
        cls,
        path: Optional[str] = None,
        *,
        capacity: Optional[int] = None,
        max_workers: Optional[int] = None,
        fail_open: Optional[bool] = None,
    ) -> "Region":
        settings = _config.region_settings()
        if path is None:
            path = settings.path
        elif not os.fspath(path):
            raise ValueError("path must name a region file, e.g. /dev/shm/fl (None: FAST_LITELLM_SHM)")
        if capacity is None:
            capacity = settings.capacity
        else:
            _whole(capacity, "capacity")
            problem = _config.capacity_problem(capacity)
            if problem:
                raise RegionConfigError(f"capacity={capacity} {problem}")
            capacity = _config.capacity_for(capacity)
        if max_workers is None:
            max_workers = settings.max_workers
        else:
            _whole(max_workers, "max_workers")
            problem = _config.workers_problem(max_workers)
            if problem:
                raise RegionConfigError(f"max_workers={max_workers} {problem}")
        if fail_open is None:
            fail_open = settings.fail_open
        return super().__new__(cls, os.fspath(path) if path is not None else None,
                               capacity=capacity, max_workers=max_workers, fail_open=fail_open)

    @contextmanager
    def slot(self, key: str, max_slots: int) -> Iterator[None]:
        """Holds one slot of key for the block; SlotUnavailable when all are taken.
        The slot is given back however the block ends."""
        if not self.acquire(key, max_slots):
            raise SlotUnavailable(key, max_slots, self.slots_in_use(key))
        try:
            yield
        finally:
            self.release(key)

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "(anonymous)"
        return f"<fast_litellm.shm.Region {where} capacity={self.capacity} {self.attach}>"


_region: Optional[Region] = None
_settings: Optional[_config.RegionSettings] = None


def _init_from_env() -> Optional[Region]:
    """Maps the process-wide region (called once, at import of fast_litellm)."""
    global _region, _settings
    _settings = _config.region_settings()
    if not _settings.enabled:
        log.info("fast_litellm: shared region off (FAST_LITELLM_SHM=off)")
        return None
    _region = Region()
    atexit.register(_region.close)
    log.info(
        "fast_litellm: shared region %s (%s, %.1f MiB, capacity %d, fail-%s)",
        _region.path or "anonymous (shared with forked children only)",
        _region.attach,
        _region.size_bytes / 2**20,
        _region.capacity,
        "open" if _region.fail_open else "closed",
    )
    return _region


def region() -> Optional[Region]:
    """The process-wide region from the environment, or None when FAST_LITELLM_SHM=off."""
    if _settings is None:
        return _init_from_env()
    return _region
