"""Imports fast_litellm in a process just before that process imports LiteLLM's proxy app
(`litellm.proxy.proxy_server`): the order deploy/app.py uses, in every process that serves.

Installed at interpreter start by `bootstrap/sitecustomize.py` (which `fast-litellm` puts on
PYTHONPATH), so it reaches processes the launcher never sees: uvicorn's and granian's spawned
workers, which import the app by name. Why not earlier: a spawned uvicorn worker first re-runs
the imports of the `litellm` script, before it starts the thread that answers its supervisor's
health ping (which gives up after a few seconds and kills the worker); importing fast_litellm
there, or at interpreter start, would add its import and LiteLLM's proxy modules to that
window and, on a loaded host, get workers killed in a loop. The app import comes later, once
the ping thread runs, and before any Router or proxy object exists.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
import types
from typing import Optional, Sequence

TARGET = "litellm.proxy.proxy_server"


class _UntilLoggingIsConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """Shows fast_litellm's own records (its `active components` line, its warnings) on stderr
    while the process has no logging set up at the root. LiteLLM's proxy sets none: its loggers
    carry their own handlers, so an INFO record of ours would be dropped. Once the root logger
    has a handler, records reach it by propagation and this one steps aside."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def show_own_log() -> None:
    """The launcher's processes show fast_litellm's INFO lines; a library user's logging
    (plain `import fast_litellm`) is left as that user set it."""
    log = logging.getLogger("fast_litellm")
    if any(isinstance(h, _UntilLoggingIsConfigured) for h in log.handlers):
        return
    handler = _UntilLoggingIsConfigured(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s:%(levelname)s: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


class _ProxyAppFinder(importlib.abc.MetaPathFinder):
    """On the first import of the proxy app: imports fast_litellm, then lets the usual finders
    find the app (returns None)."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname == TARGET:
            uninstall()
            show_own_log()
            importlib.import_module("fast_litellm")
        return None


_finder = _ProxyAppFinder()


def install() -> None:
    """Arms the hook; a process that already imported the proxy app imports fast_litellm now."""
    if TARGET in sys.modules:
        show_own_log()
        importlib.import_module("fast_litellm")
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
