"""gunicorn settings for the accelerated LiteLLM proxy (deploy/app.py).

    CONFIG_FILE_PATH=config.yaml FAST_LITELLM_SHM=/dev/shm/fl \
        gunicorn --chdir deploy app:app -c deploy/gunicorn.conf.py

preload_app is what makes limits host-wide with no configuration: the master imports
fast_litellm (deploy/app.py), maps the region, and every worker forked from it shares it.
Without --preload each worker imports on its own: set FAST_LITELLM_SHM to a file so they
attach to the same region (an anonymous region would be each worker's own).
Workers, bind and timeout come from the environment (WEB_CONCURRENCY, FL_BIND).
"""

import logging
import os

preload_app = True
worker_class = "uvicorn.workers.UvicornWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
bind = os.environ.get("FL_BIND", "127.0.0.1:4000")
timeout = 600  # LLM calls are long; gunicorn's 30 s default would kill a worker mid-stream

log = logging.getLogger("gunicorn.error")


def _region():
    """The region the app's import mapped; None when there is none (FAST_LITELLM_DISABLE=1
    maps nothing, and these hooks must not map it either)."""
    from fast_litellm import _acceleration, shm

    return None if _acceleration.disabled() else shm.region()


def when_ready(server):
    """Master, app loaded, before the first fork: say which region the workers will share, and
    load the tokenizers once here, so that every worker uses the master's copy (about 65 MiB
    less per worker than each loading its own; README, Token counting). The objects the
    master built stay shared too: fast_litellm's gc_freeze component freezes them before each
    fork, so no collection in a worker writes to their pages (README, gc_freeze). The
    collector's thresholds stay Python's: none measured better with the freeze (BENCHMARKS.md);
    PYTHON_GC_THRESHOLD, LiteLLM's own setting, changes them."""
    import fast_litellm
    from fast_litellm import tokens

    region = _region()
    if region is None:
        log.warning("fast_litellm: no shared region (FAST_LITELLM_SHM=off or FAST_LITELLM_DISABLE=1): limits are per worker")
    else:
        log.info(
            "fast_litellm: region %s, %.1f MiB (%d counter slots, %d worker entries), shared by every worker",
            region.path or "anonymous (memfd, inherited by forked workers)",
            region.size_bytes / 2**20, region.capacity, region.max_workers,
        )
    if fast_litellm.status().get("token_counting", {}).get("state") == "on":
        tokens.preload()


def post_fork(server, worker):
    """Worker, right after the fork: take its worker entry now rather than on its first call."""
    region = _region()
    if region is not None:
        region.register()


def child_exit(server, worker):
    """Master, after a worker exited (including SIGKILL or OOM): give back its slots at once
    rather than at the next audit."""
    region = _region()
    if region is not None:
        reaped = region.reap()
        if reaped:
            log.info("fast_litellm: worker %s exited; reaped %d dead worker entr(ies) and their slots", worker.pid, reaped)
