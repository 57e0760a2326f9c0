"""The one place that patches LiteLLM: flags, fallback and the circuit breaker for every
accelerated component.

A component (one module per LiteLLM part: limiter, router, tokens, ...) declares itself with
`component(name, env_var)` and installs its replacements with `Component.patch`. Every
replacement runs behind the same guard:

- the component's flag (`FAST_LITELLM_RUST_<NAME>=true|false|canary:N|rollout:N`, read once at
  import; `FAST_LITELLM_DISABLE=1` turns every component off) decides whether a call is
  accelerated;
- an exception in the accelerated path is counted and the original runs on the same call
  (except `OriginalRaised`: a path that ran the original itself passes its error on);
- after `FAST_LITELLM_BREAKER_THRESHOLD` (default 10) errors the breaker opens: the component
  is off for the rest of the process, logged once, shown by `status()`;
- `remove_acceleration()` puts every original object back where it was.
"""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
import logging
import os
import random
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from . import _compat, _config
from ._config import ConfigError

log = logging.getLogger("fast_litellm")

DEFAULT_BREAKER_THRESHOLD = 10
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Decline(Exception):
    """Raised by an accelerated path for a call it does not handle (LiteLLM configured with
    Redis, a model without a tiktoken encoding, ...): the original runs, and nothing is
    counted as an error."""


class OriginalRaised(Exception):
    """Raised by an accelerated path that called the original itself (for the part of the call
    it does not handle) when the original raised, or that raised the host package's own answer
    (its error for a request it refuses): that error reaches the caller as it would without
    fast_litellm, and the original is not run a second time."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Flag:
    """How much of a component's traffic is accelerated.

    mode "on" / "off"; "rollout": `percent` of calls, chosen at random per call, with the
    usual breaker; "canary": the same split, and the first error turns the component off for
    the process (a canary stops at the first sign of trouble).
    """

    mode: str
    percent: float = 100.0

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and self.percent > 0

    def __str__(self) -> str:
        return self.mode if self.mode in ("on", "off") else f"{self.mode}:{self.percent:g}"


def parse_flag(name: str, raw: Optional[str], default: Flag) -> Flag:
    """Parses one FAST_LITELLM_RUST_* value; a bad value raises ConfigError naming `name`."""
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return Flag("on")
    if value in _FALSE:
        return Flag("off")
    mode, sep, pct = value.partition(":")
    if sep and mode in ("canary", "rollout"):
        try:
            percent = float(pct)
        except ValueError:
            percent = -1.0
        if 0.0 <= percent <= 100.0:
            return Flag(mode, percent)
    raise ConfigError(
        f"{name}={raw!r} is not one of true, false, canary:N, rollout:N (N a percentage from 0 to 100)"
    )


def _disabled(env: Mapping[str, str]) -> bool:
    raw = env.get("FAST_LITELLM_DISABLE", "").strip().lower()
    if not raw:
        return False
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"FAST_LITELLM_DISABLE={raw!r} must be 1/true or 0/false")


def breaker_threshold(env: Mapping[str, str] = os.environ) -> int:
    raw = env.get("FAST_LITELLM_BREAKER_THRESHOLD", "").strip()
    if not raw:
        return DEFAULT_BREAKER_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"FAST_LITELLM_BREAKER_THRESHOLD={raw!r} must be a whole number of at least 1")
    return value


@dataclass
class Component:
    name: str
    env_var: str
    flag: Flag
    #: Why the component is in its state: the flag, the breaker, or what could not be patched.
    reason: str
    threshold: int
    calls: int = 0
    fallbacks: int = 0
    errors: int = 0
    #: Calls the accelerated path handed back to the original (Decline), e.g. Redis configured.
    declined: int = 0
    breaker_trips: int = 0
    breaker_open: bool = False
    #: A rollout or canary share is chosen per process, not per call: for components that keep
    #: state (a limiter's counters), calls split between the region and LiteLLM's own cache
    #: would count each request in only one of them and loosen every limit. A worker forked
    #: after import chooses again.
    per_process: bool = False
    _chosen_pid: int = field(default=0, repr=False)
    _chosen: bool = field(default=False, repr=False)
    #: (owner, attribute, original) of every patch, in the order they were made.
    patches: List[Tuple[Any, str, Any]] = field(default_factory=list)
    #: What else `restore()` undoes, newest first: changes that are not an attribute (a finder
    #: put in sys.meta_path).
    undo: List[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def active(self) -> bool:
        return self.flag.enabled and not self.breaker_open and bool(self.patches)

    def _take(self, always: bool = False) -> bool:
        """Whether this call goes the accelerated way. `always` paths (giving back what an
        accelerated call took: a slot, a reservation) run whatever the flag and breaker say;
        they decide themselves, and Decline what is not theirs."""
        if always:
            return True
        if self.breaker_open or not self.flag.enabled:
            return False
        if self.flag.percent >= 100.0:
            return True
        if self.per_process:
            pid = os.getpid()
            if self._chosen_pid != pid:
                self._chosen_pid, self._chosen = pid, random.random() * 100.0 < self.flag.percent
            return self._chosen
        return random.random() * 100.0 < self.flag.percent

    def _count(self, name: str) -> None:
        """One more of `name` (calls, fallbacks, errors, declined, breaker_trips): in this
        process, and in the region's host-wide total that metrics report."""
        setattr(self, name, getattr(self, name) + 1)
        if _host_region is not None:
            try:
                _host_region.counter_add(host_counter_key(self.name, name), 1)
            except Exception:  # noqa: BLE001 - a full table must not break the call it counts
                pass

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._count("calls")
            self._count("errors")
            self._count("fallbacks")
            trip = not self.breaker_open and self.errors >= self.threshold
            if trip:
                self.breaker_open = True
                self._count("breaker_trips")
                self.reason = f"breaker open after {self.errors} errors (last: {type(error).__name__}: {error})"
        if trip:
            log.error("fast_litellm: %s turned off for this process: %s", self.name, self.reason)
        else:
            log.warning("fast_litellm: %s failed, original used: %r", self.name, error, exc_info=error)

    def guard(
        self, original: Callable[..., Any], accelerated: Callable[..., Any], always: bool = False
    ) -> Callable[..., Any]:
        """A stand-in for `original` that runs `accelerated` when the flag and breaker allow,
        and the original on the same call when it raises. Keeps sync/async as it was."""
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                if not self._take(always):
                    return await original(*args, **kwargs)
                try:
                    result = await accelerated(*args, **kwargs)
                except OriginalRaised as raised:
                    self._count("calls")
                    raise raised.error from None
                except Decline:
                    self._count("declined")
                except Exception as error:  # noqa: BLE001 - every failure falls back
                    self._failed(error)
                else:
                    self._count("calls")
                    return result
                return await original(*args, **kwargs)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(original)
            def run(*args: Any, **kwargs: Any) -> Any:
                if not self._take(always):
                    return original(*args, **kwargs)
                try:
                    result = accelerated(*args, **kwargs)
                except OriginalRaised as raised:
                    self._count("calls")
                    raise raised.error from None
                except Decline:
                    self._count("declined")
                except Exception as error:  # noqa: BLE001 - every failure falls back
                    self._failed(error)
                else:
                    self._count("calls")
                    return result
                return original(*args, **kwargs)

            wrapper = run
        wrapper.__fast_litellm_original__ = original  # type: ignore[attr-defined]
        return wrapper

    def patch(self, owner: Any, attribute: str, accelerated: Callable[..., Any], always: bool = False) -> bool:
        """Replaces `owner.attribute` (a module function or a class's method) by a guarded
        call of `accelerated`, and so every module that copied the same object under any name.
        Returns False, with a WARNING that names it, when it cannot be patched.
        `always`: see `_take`."""
        target = f"{getattr(owner, '__name__', owner)}.{attribute}"
        original = inspect.getattr_static(owner, attribute, None)
        if original is None:
            log.warning("fast_litellm: %s: cannot patch %s: it does not exist in this LiteLLM", self.name, target)
            self.reason = f"{target} not found"
            return False
        func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        guarded: Any = self.guard(func, accelerated, always)
        if isinstance(original, staticmethod):
            guarded = staticmethod(guarded)
        elif isinstance(original, classmethod):
            guarded = classmethod(guarded)
        setattr(owner, attribute, guarded)
        self.patches.append((owner, attribute, original))
        if inspect.ismodule(owner):
            for module in list(sys.modules.values()):
                if module is owner or module is None:
                    continue
                for name, value in list(getattr(module, "__dict__", {}).items()):
                    if value is original:
                        setattr(module, name, guarded)
                        self.patches.append((module, name, original))
        return True

    def restore(self) -> None:
        for owner, attribute, original in reversed(self.patches):
            setattr(owner, attribute, original)
        self.patches.clear()
        while self.undo:
            self.undo.pop()()
        self.reason = "removed by remove_acceleration()"

    def status(self) -> Dict[str, Any]:
        return {
            "state": "on" if self.active else "off",
            "flag": str(self.flag),
            "reason": self.reason,
            "calls": self.calls,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "declined": self.declined,
            "breaker": "open" if self.breaker_open else "closed",
            "patched": [f"{getattr(o, '__name__', o)}.{a}" for o, a, _ in self.patches],
        }


_components: Dict[str, Component] = {}
_announced = False
#: Where the host-wide totals of every component's counts go (None: no region).
_host_region: Optional[Any] = None
#: The counts kept host-wide, per component.
HOST_COUNTS = ("calls", "fallbacks", "errors", "declined", "breaker_trips")


def host_counter_key(component_name: str, count: str) -> str:
    return f"fast_litellm:{component_name}:{count}"


def component(
    name: str,
    env_var: str,
    default: Flag = Flag("on"),
    env: Mapping[str, str] = os.environ,
    per_process: bool = False,
) -> Component:
    """Declares a component and reads its flag (ConfigError on a bad value)."""
    flag = parse_flag(env_var, env.get(env_var), default)
    reason = f"{env_var}={flag}"
    if _disabled(env):
        flag, reason = Flag("off"), "FAST_LITELLM_DISABLE=1"
    threshold = 1 if flag.mode == "canary" else breaker_threshold(env)
    c = Component(name, env_var, flag, reason, threshold, per_process=per_process)
    _components[name] = c
    return c


#: Every component: (name, flag variable, module whose `install(component)` patches LiteLLM
#: (`module:function` names another function than `install`), default flag, whether a rollout
#: share is chosen per process), in patching order. Routing has no module: it is not shipped
#: (README, "Routing"), and its flag only says so.
COMPONENTS: Tuple[Tuple[str, str, Optional[str], Flag, bool], ...] = (
    ("rate_limiter", "FAST_LITELLM_RUST_RATE_LIMITING", "fast_litellm.limiter", Flag("on"), True),
    ("router", "FAST_LITELLM_RUST_ROUTER", "fast_litellm.router", Flag("on"), True),
    ("connection_pool", "FAST_LITELLM_RUST_CONNECTION_POOL", "fast_litellm.pool", Flag("on"), False),
    ("token_counting", "FAST_LITELLM_RUST_TOKEN_COUNTING", "fast_litellm.tokens", Flag("on"), False),
    ("batch_token_counting", "FAST_LITELLM_BATCH_TOKEN_COUNTING", "fast_litellm.tokens:install_batch", Flag("on"), False),
    ("auth_otel_import", "FAST_LITELLM_AUTH_OTEL_IMPORT", "fast_litellm.auth", Flag("on"), False),
    ("gc_freeze", "FAST_LITELLM_GC_FREEZE", "fast_litellm.gc_freeze", Flag("on"), False),
    ("routing", "FAST_LITELLM_RUST_ROUTING", None, Flag("off"), False),
)
ROUTING_NOT_SHIPPED = "not shipped: LiteLLM's own deployment selection is used (README, Routing)"


def disabled(env: Mapping[str, str] = os.environ) -> bool:
    """FAST_LITELLM_DISABLE=1: nothing is patched and no region is mapped at import."""
    return _disabled(env)


def install_all(env: Mapping[str, str] = os.environ, region: Optional[Any] = None) -> None:
    """Declares every component and patches LiteLLM for those whose flag is on. A component
    that cannot be installed stays off, with a WARNING that says why; the others go on.
    `region` receives the host-wide totals of the components' counts."""
    global _host_region
    _host_region = region
    _config.host_tier_settings(env)  # a bad value is a ConfigError at import, like every setting
    version = _compat.version_status()
    for name, env_var, module_name, default, per_process in COMPONENTS:
        c = component(name, env_var, default, env=env, per_process=per_process)
        if module_name is None:
            if c.flag.enabled:
                log.warning("fast_litellm: %s=%s has no effect: %s", env_var, c.flag, ROUTING_NOT_SHIPPED)
            c.reason = ROUTING_NOT_SHIPPED
            continue
        if not c.flag.enabled:
            continue
        try:
            module, _, function = module_name.partition(":")
            getattr(importlib.import_module(module), function or "install")(c)
        except Decline as why:
            c.restore()
            c.reason = str(why)
            log.info("fast_litellm: %s off: %s", name, why)
        except ImportError as error:
            c.restore()
            c.reason = f"LiteLLM part missing: {error}"
            log.warning("fast_litellm: %s off: %s", name, c.reason)
        except Exception as error:  # noqa: BLE001 - one component's failure must not stop the others
            c.restore()
            c.reason = f"not installed: {type(error).__name__}: {error}"
            log.warning("fast_litellm: %s off: %s", name, c.reason, exc_info=error)
        else:
            if c.patches and not version["tested"]:
                # Its shape check passed: on, but say which LiteLLM nobody tested it with.
                c.reason += f"; LiteLLM {version['litellm']} is outside the tested range {version['tested_range']}"
                log.warning(
                    "fast_litellm: %s on with LiteLLM %s, which is outside the tested range %s: the names and "
                    "signatures it patches are unchanged, but this version is untested",
                    name, version["litellm"], version["tested_range"],
                )


def status() -> Dict[str, Dict[str, Any]]:
    """`"litellm"`: the installed LiteLLM's version and whether it is inside the tested range;
    then each component's state: on or off, why, calls, fallbacks, errors, breaker state."""
    return {"litellm": _compat.version_status(), **{name: c.status() for name, c in _components.items()}}


def remove_acceleration() -> None:
    """Puts back every original object that fast_litellm replaced."""
    for c in _components.values():
        c.restore()


def announce() -> None:
    """Logs `fast_litellm: active components = [...]` at INFO, once per process."""
    global _announced
    if _announced:
        return
    _announced = True
    active = [name for name, c in _components.items() if c.active]
    log.info("fast_litellm: active components = %s", active)


def _target(owner: Any, attribute: str) -> str:
    return f"{getattr(owner, '__name__', owner)}.{attribute}"


def _describe(holder: Any, held: Any) -> str:
    """Names an object that holds `held`: a module's global, a bound method, a container."""
    if isinstance(holder, dict):
        names = ", ".join(str(k) for k, v in holder.items() if v is held)
        for module in list(sys.modules.values()):
            if getattr(module, "__dict__", None) is holder:
                return f"module {module.__name__} (as {names})"
        return f"a dict of {len(holder)} entries"
    if isinstance(holder, types.MethodType):
        return f"a bound method of a {type(holder.__self__).__name__} made before the import"
    if isinstance(holder, functools.partial):
        return "a functools.partial made before the import"
    if isinstance(holder, (list, tuple, set)):
        return f"a {type(holder).__name__} of {len(holder)} items (a callback list?) filled before the import"
    return f"a {type(holder).__name__}"


def _held(holder: Any) -> List[Any]:
    """What a referrer found by gc holds, for the kinds that can keep a function."""
    if isinstance(holder, dict):
        return list(holder.values())
    if isinstance(holder, types.MethodType):
        return [holder.__func__]
    if isinstance(holder, functools.partial):
        return [holder.func]
    if isinstance(holder, (list, tuple, set, frozenset)):
        return list(holder)
    return []


def stale_references() -> List[str]:
    """What still holds an original that fast_litellm replaced, other than fast_litellm itself:
    objects made before `import fast_litellm` that kept LiteLLM's own function (a callback
    list, a bound method, a partial, a global copied under a name nobody patched). Calls
    through them are not accelerated and, for the limiter and router, count outside the
    region."""
    originals: Dict[int, Tuple[Component, Any, str, Any]] = {}
    for c in _components.values():
        for owner, attribute, original in c.patches:
            func = getattr(original, "__func__", original)
            originals.setdefault(id(func), (c, owner, attribute, func))
    if not originals:
        return []
    found: List[str] = []
    funcs = [entry[3] for entry in originals.values()]
    own = {id(funcs), id(originals)} | {id(entry) for entry in originals.values()}
    for holder in gc.get_referrers(*funcs):
        if id(holder) in own or isinstance(holder, (types.CellType, types.FrameType)):
            continue  # this check's own lists, the guards' closures, running frames
        if isinstance(holder, tuple) and len(holder) == 3 and id(getattr(holder[2], "__func__", holder[2])) in originals:
            continue  # Component.patches records
        if isinstance(holder, dict) and "__fast_litellm_original__" in holder:
            continue  # a guard's own __dict__ (__wrapped__)
        if isinstance(holder, (staticmethod, classmethod)):
            continue  # the original descriptor, kept by Component.patches
        for item in _held(holder):
            if id(item) in originals:
                c, owner, attribute, func = originals[id(item)]
                found.append(f"{c.name}: LiteLLM's own {_target(owner, attribute)} is still held by {_describe(holder, func)}")
                break
    return sorted(set(found))


def _worker_with_private_region(region: Optional[Any]) -> Optional[str]:
    """The parent's command line when this process looks like a server's worker (gunicorn,
    uvicorn, litellm --num_workers) that made its own anonymous region: its limits would be its
    own. None otherwise."""
    if region is None or getattr(region, "path", None) is not None:
        return None
    from fast_litellm_proxy._region import server_parent_command

    return server_parent_command()


def check_import_order(region: Optional[Any]) -> None:
    """Says loudly, at ERROR, what the import order left unaccelerated (README, Deploy)."""
    for problem in stale_references():
        log.error("fast_litellm: IMPORT ORDER: %s; import fast_litellm before LiteLLM (deploy/app.py does)", problem)
    parent = _worker_with_private_region(region)
    if parent is not None:
        log.error(
            "fast_litellm: IMPORT ORDER: imported in a worker of %r with FAST_LITELLM_SHM unset: this "
            "process's region is its own and its limits count per worker. Import fast_litellm in the "
            "master (gunicorn --preload, deploy/app.py) or set FAST_LITELLM_SHM=/dev/shm/fl",
            parent,
        )
