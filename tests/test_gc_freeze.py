"""The gc_freeze component in real processes with the real LiteLLM proxy app: its ASGI startup
driven through Starlette's lifespan protocol, as every server drives it, and a real fork, as a
gunicorn --preload master forks its workers. LiteLLM alone (FAST_LITELLM_DISABLE=1) beside
it, in the same script."""

import pytest

from subproc import run_python

pytestmark = pytest.mark.timeout(240)

PRELUDE = """
import asyncio, gc, os, sys
import fast_litellm
from litellm.proxy import proxy_server

def private_dirty_kib():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))

def in_forked_child(fn):
    # fn's result (an int) from a forked child, which then exits.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, str(fn()).encode())
        os._exit(0)
    os.close(w)
    value = int(os.read(r, 64))
    os.waitpid(pid, 0)
    return value

def collection_dirties():
    # KiB a full collection makes private in a forked child: the pages it shares with its
    # parent that the collector writes to.
    def child():
        before = private_dirty_kib()
        gc.collect()
        return private_dirty_kib() - before
    return in_forked_child(child)

def lifespan(app, fail_startup=False):
    # The ASGI lifespan as a server runs it: startup, then shutdown; the messages the app sent.
    sent = []
    async def run():
        inbox = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        async def receive():
            return await inbox.get()
        async def send(message):
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                await inbox.put({"type": "lifespan.shutdown"})
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    try:
        asyncio.run(run())
    except Exception as error:
        sent.append(f"raised {type(error).__name__}")
    return sent
"""

ENV = {"FAST_LITELLM_SHM": "off", "LITELLM_MASTER_KEY": "sk-gc-freeze-test-0123456789abcdef"}


def _run(code, disable):
    return run_python(PRELUDE + code, env={**ENV, "FAST_LITELLM_DISABLE": disable})


STARTUP = """
tracked_after_import = len(gc.get_objects())
dirtied_at_fork = collection_dirties()
sent = lifespan(proxy_server.app)
emit({"tracked_after_import": tracked_after_import, "dirtied_at_fork": dirtied_at_fork, "sent": sent,
      "tracked_after_startup": len(gc.get_objects()), "frozen": gc.get_freeze_count(),
      "status": fast_litellm.status()["gc_freeze"]})
"""


def test_a_forked_worker_leaves_the_masters_pages_shared_and_startup_objects_are_frozen():
    stock, accelerated = _run(STARTUP, "1"), _run(STARTUP, "0")
    assert stock["sent"] == accelerated["sent"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # LiteLLM alone: a full collection in a worker forked after the proxy's import writes to
    # the headers of all ~700,000 objects the master built and copies their pages (~150 MiB
    # here); after the freeze before the fork it copies next to nothing.
    assert stock["tracked_after_import"] > 300_000, stock
    assert stock["dirtied_at_fork"] > 40 * 1024, stock
    assert accelerated["dirtied_at_fork"] < stock["dirtied_at_fork"] / 10, (accelerated, stock)
    # After the startup, what the collector still visits is what later requests create.
    # (LiteLLM from 1.109 freezes at the end of its own startup too, not before a fork.)
    assert stock["frozen"] >= stock["tracked_after_import"] or stock["tracked_after_startup"] >= stock["tracked_after_import"], stock
    assert accelerated["frozen"] >= stock["tracked_after_import"], accelerated
    assert accelerated["tracked_after_startup"] < stock["tracked_after_import"] / 20, accelerated
    assert accelerated["status"]["state"] == "on" and accelerated["status"]["calls"] == 1, accelerated["status"]


def test_a_failing_startup_fails_once_as_litellms_own_does():
    code = """
def failing_startup(app):
    calls.append(1)
    raise RuntimeError("config unreadable")
calls = []
proxy_server.app.router.lifespan_context = failing_startup
emit({"sent": lifespan(proxy_server.app), "calls": len(calls), "frozen": gc.get_freeze_count(),
      "status": fast_litellm.status()["gc_freeze"]})
"""
    stock, accelerated = _run(code, "1"), _run(code, "0")
    assert stock["sent"] == accelerated["sent"] == ["lifespan.startup.failed", "raised RuntimeError"], (stock, accelerated)
    assert stock["calls"] == accelerated["calls"] == 1
    assert accelerated["status"]["errors"] == 0 and accelerated["status"]["fallbacks"] == 0, accelerated["status"]


def test_other_apps_and_processes_without_the_proxy_app_are_left_alone():
    code = """
from starlette.applications import Starlette
other = lifespan(Starlette())
forked_frozen = in_forked_child(gc.get_freeze_count)
emit({"other": other, "frozen": gc.get_freeze_count(), "forked_frozen": forked_frozen,
      "status": fast_litellm.status()["gc_freeze"]})
"""
    plain = run_python(PRELUDE.replace("from litellm.proxy import proxy_server\n", "import litellm\n") + code,
                       env={**ENV, "FAST_LITELLM_DISABLE": "0"})
    assert plain["other"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"], plain
    assert plain["frozen"] == plain["forked_frozen"] == 0, plain
    assert plain["status"]["declined"] == 1 and plain["status"]["calls"] == 0, plain["status"]


def test_removed_or_flagged_off_nothing_stays_frozen():
    code = """
lifespan(proxy_server.app)
frozen = gc.get_freeze_count()
fast_litellm.remove_acceleration()
from starlette.routing import Router
emit({"frozen": frozen, "after_removal": gc.get_freeze_count(), "forked_frozen": in_forked_child(gc.get_freeze_count),
      "restored": not hasattr(Router.lifespan, "__fast_litellm_original__")})
"""
    removed, stock = _run(code, "0"), _run(code, "1")
    assert removed["frozen"] > 300_000, removed
    # What stays frozen is LiteLLM's own freeze (from 1.109), as without fast_litellm.
    if stock["after_removal"] == 0:
        assert removed["after_removal"] == removed["forked_frozen"] == 0, removed
    else:
        assert removed["after_removal"] > 0 and removed["forked_frozen"] > 0, (removed, stock)
    assert removed["restored"], removed
    off = run_python(PRELUDE + STARTUP, env={**ENV, "FAST_LITELLM_GC_FREEZE": "off"})
    # Flagged off, what is frozen is what LiteLLM alone freezes (from 1.109, at its startup).
    assert off["status"]["state"] == "off" and (off["frozen"] == 0) == (_run(STARTUP, "1")["frozen"] == 0), off
