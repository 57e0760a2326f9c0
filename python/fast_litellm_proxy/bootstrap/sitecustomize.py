"""Run by Python at start-up in every process `fast-litellm` starts (its directory is first on
PYTHONPATH): arms the hook that imports fast_litellm right after litellm, registers the
region's removal in the master, then runs the user's own sitecustomize, if any, as Python
would have without this one."""

import importlib
import os
import sys


def _run_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        try:
            importlib.import_module("sitecustomize")
        except ModuleNotFoundError as error:
            if error.name != "sitecustomize":
                raise
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules.setdefault("sitecustomize", mine)


try:
    from fast_litellm_proxy import _hook, _region
except ImportError:  # another interpreter that inherited PYTHONPATH, without fast_litellm
    pass
else:
    _region.remove_at_exit_if_owner()
    _hook.install()
_run_next_sitecustomize()
