"""The real LiteLLM proxy under real gunicorn, for the end-to-end tests: deploy/app.py with
deploy/gunicorn.conf.py (or plain gunicorn arguments), a config written per test, per-key
limits from deploy/demo_auth.py, and deploy/mock_upstream.py on 127.0.0.1 as the only
upstream."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
sys.path.insert(0, DEPLOY)
import mock_upstream  # noqa: E402

GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
MASTER_KEY = "sk-feb40c8392005119bcda32d2082da2512853c17db8d63b296f3457d5c9521cc6"
MESSAGE = {"role": "user", "content": "Hello"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """The mock upstream, served from a thread of the test process."""

    def __init__(self, slow_delay_s: float = 1.0) -> None:
        mock_upstream.SLOW_DELAY_S = slow_delay_s
        self.server = mock_upstream.serve(0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stats(self) -> Dict:
        return mock_upstream.STATS.snapshot()

    def reset(self) -> None:
        mock_upstream.STATS.reset()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(path: str, upstream: Upstream, models: List[Dict], router_settings: Optional[Dict] = None,
           litellm_settings: Optional[Dict] = None) -> str:
    """A LiteLLM config.yaml (JSON is YAML) with `models` as (model_name, mock model, extra
    litellm_params) and the demo's custom_auth (through tests/e2e_auth.py, which also records
    which worker served each request: `Proxy.workers_of`). The tests' callback modules
    (parity_callback.py) are put beside it for `litellm_settings` to name."""
    import json

    model_list = [
        {"model_name": m["name"], "litellm_params": {
            "model": f"openai/{m['upstream']}", "api_base": upstream.url, "api_key": "mock", **m.get("params", {})}}
        for m in models
    ]
    body = {
        "model_list": model_list,
        "general_settings": {"master_key": MASTER_KEY, "custom_auth": "e2e_auth.user_api_key_auth"},
        "router_settings": router_settings or {},
        **({"litellm_settings": litellm_settings} if litellm_settings else {}),
    }
    with open(path, "w") as f:
        json.dump(body, f)
    # LiteLLM loads a custom_auth module from the config's directory first.
    for module in ("e2e_auth.py", "parity_callback.py"):
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), module), os.path.dirname(path))
    return path


class Proxy:
    def __init__(self, process: subprocess.Popen, port: int, log_path: str, auth_log: str = "") -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.auth_log = auth_log

    def workers_of(self, key: str) -> Dict[int, int]:
        """How many requests with `key` each worker (pid) served, from tests/e2e_auth.py's log."""
        served: Dict[int, int] = {}
        with open(self.auth_log) as f:
            for line in f:
                pid, served_key = line.split()
                if served_key == key:
                    served[int(pid)] = served.get(int(pid), 0) + 1
        return served

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def worker_pids(self) -> List[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@contextmanager
def proxy(config_path: str, region: str, tmp_path, workers: int = 3, preload: bool = True,
          extra_args: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None) -> Iterator[Proxy]:
    port = free_port()
    log_path = str(tmp_path / f"gunicorn-{port}.log")
    auth_log = str(tmp_path / f"auth-{port}.log")
    open(auth_log, "w").close()
    child_env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", CONFIG_FILE_PATH=config_path, FL_E2E_AUTH_LOG=auth_log,
                     FAST_LITELLM_SHM=region, WEB_CONCURRENCY=str(workers), FL_BIND=f"127.0.0.1:{port}",
                     **(env or {}))
    if preload:
        args = [GUNICORN, "--chdir", DEPLOY, "app:app", "-c", os.path.join(DEPLOY, "gunicorn.conf.py")]
    else:  # each worker imports fast_litellm and LiteLLM on its own, after the fork
        args = [GUNICORN, "--chdir", DEPLOY, "app:app", "-w", str(workers), "-k", "uvicorn.workers.UvicornWorker",
                "-b", f"127.0.0.1:{port}", "--timeout", "600"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(args + (extra_args or []), env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    p = Proxy(process, port, log_path, auth_log)
    try:
        wait_ready(p, workers)
        yield p
    finally:
        stop(process)


BIN = os.path.dirname(sys.executable)


@contextmanager
def cli_proxy(config_path: str, tmp_path, args: List[str], workers: int = 3, launcher: bool = True,
              env: Optional[Dict[str, str]] = None, ready_line: str = "Application startup complete") -> Iterator[Proxy]:
    """LiteLLM's own CLI, as users start it: `fast-litellm ARGS` (launcher) or `litellm ARGS`,
    run from the config's directory with `--config --port` added and FAST_LITELLM_SHM unset
    (the launcher picks the region). Ready when `ready_line` was logged once per worker and
    the proxy answers."""
    port = free_port()
    log_path = str(tmp_path / f"cli-{port}.log")
    auth_log = str(tmp_path / f"auth-{port}.log")
    open(auth_log, "w").close()
    child_env = {k: v for k, v in os.environ.items() if k != "FAST_LITELLM_SHM"}
    child_env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", FL_E2E_AUTH_LOG=auth_log, PYTHONPATH=DEPLOY)
    child_env.update(env or {})
    command = [os.path.join(BIN, "fast-litellm" if launcher else "litellm"), "--config", config_path,
               "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=child_env, cwd=os.path.dirname(config_path), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    p = Proxy(process, port, log_path, auth_log)
    try:
        wait_ready(p, workers, ready_line=ready_line)
        yield p
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stops a server as Docker or Kubernetes does, SIGTERM to its master only, then SIGKILLs
    whatever is left of its process group. SIGTERM to the whole group races gunicorn: the
    master can reap workers that died of it and fork replacements before it handles its own
    SIGTERM, and a replacement that gets its stop signal before its handlers are set runs on
    until gunicorn's graceful_timeout (40 s under LiteLLM's CLI) ends it. The wait is longer
    than that, so a master always exits on its own here (and runs its exit handlers)."""
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_ready(p: Proxy, workers: int, timeout_s: float = 180.0,
               ready_line: str = "Application startup complete") -> None:
    """Every worker has finished its application startup, and the proxy answers."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if p.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {p.process.returncode}:\n{p.log()[-5000:]}")
        if p.log().count(ready_line) >= workers:
            try:
                if httpx.get(p.url + "/health/liveliness", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    raise AssertionError(f"proxy not ready in {timeout_s} s:\n{p.log()[-5000:]}")


#: The "status" of a request whose connection broke before an answer (transport_errors=True).
NO_ANSWER = -1


async def _send(url: str, keys: List[str], model: str, concurrency: int, transport_errors: bool,
                stagger_s: float) -> List[int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def one(index: int, key: str) -> int:
            await asyncio.sleep(index * stagger_s)
            async with sem:
                try:
                    r = await client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                          json={"model": model, "messages": [MESSAGE]})
                except httpx.TransportError:
                    if not transport_errors:
                        raise
                    return NO_ANSWER
                return r.status_code
        return list(await asyncio.gather(*(one(i, k) for i, k in enumerate(keys))))


def send(p: Proxy, keys: List[str], model: str = "gpt-4o", concurrency: int = 40,
         transport_errors: bool = False, stagger_s: float = 0.0) -> List[int]:
    """One chat completion per key in `keys` (repeat a key to send it several times), at most
    `concurrency` at once, each on its own connection; the status codes in order
    (`transport_errors`: NO_ANSWER for a broken connection instead of raising). `stagger_s`
    starts request i after i x stagger_s seconds: connections arriving together tend to be
    accepted by one worker (asyncio accepts a whole backlog at once), one by one they spread."""
    return asyncio.run(_send(p.url, keys, model, concurrency, transport_errors, stagger_s))
