"""LiteLLM's proxy auth: the import of the OTel V2 logger that fails on every request.

`user_api_key_auth._seed_request_destinations` (1.104 on) runs on every authenticated request
and starts with `from litellm.integrations.otel.logger import ...`. That module needs
`opentelemetry-sdk`, which `litellm[proxy]` does not install. Python remembers no failed
import, so each request finds the module, loads its code and runs it again up to the failing
line, then LiteLLM catches the error and logs it at DEBUG: about 450 µs a request on this
machine, 6 % of a worker's CPU in issue 13's profile, for a result that cannot change while
the missing module stays missing.

Accelerated: the first time the import fails with a module that cannot be found, the failure
is remembered. On later calls LiteLLM's own function still runs, with one difference: while
the import system still cannot find that module (`importlib.util.find_spec`, the finders a
real import asks, ~20 µs), a finder answers the logger's import at once with the same error
instead of running the module again. What LiteLLM logs and returns is the same. Once the
module can be found (the SDK installed, `sys.path` changed), the next call imports for real.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any, Optional, Sequence

from . import _compat
from ._acceleration import Component, Decline, OriginalRaised

#: The module whose import fails; the one name the finder answers for.
OTEL_LOGGER = "litellm.integrations.otel.logger"


class _Failure:
    """The ModuleNotFoundError importing OTEL_LOGGER last raised, if its missing module still
    cannot be found."""

    def __init__(self) -> None:
        self.error: Optional[ModuleNotFoundError] = None
        #: The import failed otherwise (not a missing module): not learned again, which would
        #: make each call import twice.
        self.other = False
        self._lock = threading.Lock()

    def learn(self) -> None:
        """Imports OTEL_LOGGER once, as LiteLLM's function is about to, and keeps the error
        if a module was missing."""
        try:
            importlib.import_module(OTEL_LOGGER)
        except ModuleNotFoundError as error:
            if error.name and error.name != OTEL_LOGGER:
                self.error = error
            else:
                self.other = True
        except Exception:  # noqa: BLE001 - any other failure is LiteLLM's to see, every time
            self.other = True

    def current(self) -> Optional[ModuleNotFoundError]:
        """The remembered error, while its module still cannot be found; None otherwise."""
        with self._lock:
            if self.error is None and not self.other and OTEL_LOGGER not in sys.modules:
                self.learn()
            error = self.error
            if error is not None and _findable(error.name or ""):
                self.error = error = None
            return error


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing too
        return False


class _RaisingLoader(importlib.abc.Loader):
    def __init__(self, error: ModuleNotFoundError) -> None:
        self.error = error

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[types.ModuleType]:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        raise ModuleNotFoundError(str(self.error), name=self.error.name, path=self.error.path)


class _KnownFailureFinder(importlib.abc.MetaPathFinder):
    """Answers OTEL_LOGGER's import with the remembered error, in the thread running the
    accelerated call only (`answering`); every other import goes on to the next finder."""

    def __init__(self) -> None:
        self.answering = threading.local()

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[types.ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        error: Optional[ModuleNotFoundError] = getattr(self.answering, "error", None)
        if error is None or fullname != OTEL_LOGGER:
            return None
        return importlib.machinery.ModuleSpec(fullname, _RaisingLoader(error))


def install(c: Component) -> None:
    try:
        from litellm.proxy.auth import user_api_key_auth as auth
    except ImportError as error:  # the SDK without the proxy: nothing to do
        raise Decline(f"LiteLLM's proxy is not installed ({error})") from None
    found = _compat.problems([_compat.shape(auth, "_seed_request_destinations", ("user_api_key_dict", "request"),
                                            is_async=False)])
    if found:
        raise Decline(f"LiteLLM does not match: {'; '.join(found)}")
    original = auth._seed_request_destinations
    failure = _Failure()
    finder = _KnownFailureFinder()

    def seed_request_destinations(*args: Any, **kwargs: Any) -> Any:
        finder.answering.error = failure.current()
        try:
            return original(*args, **kwargs)
        except Exception as error:  # (it catches everything itself) never run it twice
            raise OriginalRaised(error) from None
        finally:
            finder.answering.error = None

    sys.meta_path.insert(0, finder)
    c.undo.append(lambda: sys.meta_path.remove(finder) if finder in sys.meta_path else None)
    if not c.patch(auth, "_seed_request_destinations", seed_request_destinations):
        raise Decline("user_api_key_auth._seed_request_destinations could not be patched")
