"""The auth_otel_import component against LiteLLM's own `_seed_request_destinations`, in
real processes with the real LiteLLM (which, as `litellm[proxy]` installs it, lacks
opentelemetry-sdk): the same DEBUG lines and results, the failing module run once instead
of on every call, and a module that becomes findable at run time imported for real."""

import pytest

from subproc import run_python

pytestmark = pytest.mark.timeout(180)

# Calls LiteLLM's function 30 times; after 10, a directory that provides `opentelemetry.sdk`
# (but not `opentelemetry.sdk._logs`, which the logger needs next) joins sys.path.
# `runs`: how many times the logger module's code was executed (audit events).
SEED = """
import logging, os, sys, tempfile
import fast_litellm, litellm
from litellm._logging import verbose_proxy_logger
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.auth import user_api_key_auth as auth

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
verbose_proxy_logger.addHandler(Keep())
verbose_proxy_logger.setLevel(logging.DEBUG)
runs = []
sys.addaudithook(lambda event, args: runs.append(1) if event == "exec"
                 and getattr(args[0], "co_filename", "").endswith(os.path.join("otel", "logger.py")) else None)
key = UserAPIKeyAuth(api_key="sk-seed")
returned = [auth._seed_request_destinations(key, None) for _ in range(10)]
before = len(runs)
sdk = os.path.join(tempfile.mkdtemp(), "opentelemetry", "sdk")
os.makedirs(sdk)
open(os.path.join(sdk, "__init__.py"), "w").close()
sys.path.insert(0, os.path.dirname(os.path.dirname(sdk)))
returned += [auth._seed_request_destinations(key, request=None) for _ in range(20)]
emit({"lines": lines, "returned": returned, "runs": [before, len(runs) - before],
      "state": fast_litellm.status()["auth_otel_import"]["state"]})
"""


def _seed(disable):
    return run_python(SEED, env={"FAST_LITELLM_SHM": "off", "FAST_LITELLM_DISABLE": disable})


def test_the_failed_import_is_run_once_and_logs_and_returns_what_litellms_own_does():
    stock, accelerated = _seed("1"), _seed("0")
    assert accelerated["state"] == "on" and stock["state"] == "off"
    assert accelerated["lines"] == stock["lines"] and accelerated["returned"] == stock["returned"]
    missing = [line for line in stock["lines"] if "tenant destination resolution failed" in line]
    assert len(missing) == 30 and "No module named 'opentelemetry.sdk'" in missing[0], stock["lines"]
    assert "No module named 'opentelemetry.sdk._logs'" in missing[-1], missing[-1]
    # LiteLLM alone runs the logger's code on every call; accelerated, once before the SDK
    # directory appears, then once for the call that finds it and once to learn the new error.
    assert stock["runs"] == [10, 20], stock
    assert accelerated["runs"] == [1, 2], accelerated


def test_turned_off_or_removed_it_leaves_litellms_function_and_the_import_system_as_they_were():
    out = run_python("""
        import sys
        import fast_litellm
        from litellm.proxy.auth import user_api_key_auth as auth
        from fast_litellm import auth as accelerated
        finders = lambda: sum(isinstance(f, accelerated._KnownFailureFinder) for f in sys.meta_path)
        on = [hasattr(auth._seed_request_destinations, "__fast_litellm_original__"), finders()]
        fast_litellm.remove_acceleration()
        emit({"on": on, "removed": [hasattr(auth._seed_request_destinations, "__fast_litellm_original__"), finders()]})
    """, env={"FAST_LITELLM_SHM": "off"})
    assert out == {"on": [True, 1], "removed": [False, 0]}, out
    off = run_python("""
        import sys
        import fast_litellm
        from litellm.proxy.auth import user_api_key_auth as auth
        emit([hasattr(auth._seed_request_destinations, "__fast_litellm_original__"),
              [type(f).__name__ for f in sys.meta_path if "KnownFailure" in type(f).__name__]])
    """, env={"FAST_LITELLM_SHM": "off", "FAST_LITELLM_AUTH_OTEL_IMPORT": "false"})
    assert off == [False, []], off
