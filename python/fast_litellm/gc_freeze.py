"""The garbage collector in a proxy process: what the proxy's import and startup built is frozen.

After `import litellm.proxy.proxy_server` a process tracks some 710,000 objects (modules,
classes, functions, pydantic schemas), and they live as long as the process. CPython's full
collection walks every one of them: ~0.8 s on this machine, during which the worker answers
nothing, about every 1,800 requests (issue 13's profile: the proxy's p99). In a gunicorn
`--preload` worker each such walk also writes to every object's header, so the pages the
master shared with it by fork are copied, one worker after another.

Accelerated, in a process that has imported LiteLLM's proxy app:
- before each `os.fork()` (a gunicorn master forking its workers), `gc.freeze()`: the objects
  the master built move to the collector's permanent generation, which no collection in the
  workers visits (the pattern the `gc` documentation gives for fork servers);
- when the proxy app's ASGI startup has completed (the lifespan's `startup.complete`, in every
  server: uvicorn, gunicorn's workers, hypercorn, granian), `gc.collect()` then `gc.freeze()`:
  the router, config and caches the startup built join them. The collection first, so no
  garbage is frozen.
Objects created later are collected as before. What changes is only which objects the
collector visits: an object frozen and later dropped is still freed by its reference count;
one that is then part of an unreachable cycle stays (as it would under LiteLLM alone until the
next full collection). The collector's thresholds are left as they are (LiteLLM sets them from
PYTHON_GC_THRESHOLD).

LiteLLM from 1.109 calls `gc.freeze()` itself at the end of its startup (no collection first,
nothing before a fork); the two compose, and what the component adds there is the freeze
before each fork. `remove_acceleration()` unfreezes what this component froze, unless
something had frozen objects before it did (gc cannot unfreeze a part: LiteLLM's own freeze
is left as LiteLLM made it).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any, Callable, Dict, MutableMapping, Optional

from ._acceleration import Component, Decline, OriginalRaised

log = logging.getLogger("fast_litellm")

#: The module whose `app` is LiteLLM's proxy.
PROXY_APP = "litellm.proxy.proxy_server"

_component: Component
#: Whether this process's frozen objects are this component's alone (what `restore()` then
#: unfreezes): None until it first freezes, False if something had frozen objects before.
_owns_freeze: Optional[bool] = None
_fork_hook_registered = False


def _proxy_app() -> Any:
    return getattr(sys.modules.get(PROXY_APP), "app", None)


def _freeze(collect: bool) -> None:
    global _owns_freeze
    if _owns_freeze is None:
        _owns_freeze = gc.get_freeze_count() == 0
    if collect:
        gc.collect()
    gc.freeze()


def _before_fork() -> None:
    """os.register_at_fork's `before`: one cannot unregister it, so it checks the component."""
    if _component.active and _proxy_app() is not None:
        _freeze(collect=False)


def _unfreeze() -> None:
    global _owns_freeze
    if _owns_freeze:
        gc.unfreeze()
    _owns_freeze = None


def install(c: Component) -> None:
    global _component, _fork_hook_registered
    try:
        from starlette.routing import Router
    except ImportError:
        raise Decline("Starlette is not installed: no proxy app to serve here") from None

    _component = c
    original = Router.lifespan

    async def lifespan(router: Any, scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """Starlette's `Router.lifespan`, with a freeze as the proxy app reports its startup done."""
        app = _proxy_app()
        if app is None or scope.get("app") is not app:
            raise Decline("not LiteLLM's proxy app")

        async def send_after_freezing(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "lifespan.startup.complete":
                _freeze(collect=True)
                log.info("fast_litellm: gc_freeze: %d objects of the proxy's import and startup frozen (pid %d)",
                         gc.get_freeze_count(), os.getpid())
            await send(message)

        try:
            await original(router, scope, receive, send_after_freezing)
        except BaseException as error:  # the app's own startup or shutdown: LiteLLM's to raise, once
            raise OriginalRaised(error) from None

    if not c.patch(Router, "lifespan", lifespan):
        return
    c.undo.append(_unfreeze)
    if not _fork_hook_registered:
        os.register_at_fork(before=_before_fork)
        _fork_hook_registered = True
