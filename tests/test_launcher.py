"""`fast-litellm` in front of LiteLLM's own CLI, and the config-line activation, end to end:
the real `litellm` command of the installed LiteLLM under each server it starts, 3 workers,
the mock upstream on 127.0.0.1, FAST_LITELLM_SHM unset (as a user starts it)."""

import collections
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from proxy import BIN, Upstream, cli_proxy, config, send
from subproc import run_python

pytestmark = pytest.mark.timeout(600)

WORKERS = 3
MODELS = [{"name": "gpt-4o", "upstream": "mock-gpt-4o"}]
READY = "Proxy initialized with Config"
#: uvicorn's supervisor kills a spawned worker that does not answer its health ping within 5 s;
#: a worker re-importing LiteLLM on a loaded 2-core host can take longer (with or without
#: fast_litellm), and is then killed in a loop. LiteLLM's own option gives it longer.
UVICORN = ["--timeout_worker_healthcheck", "60"]


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.close()


def _spread_burst(p, attempts=3):
    """40 requests of one rpm-10 key, repeated with a fresh key until they reached at least 2
    workers; (codes, {worker pid: requests}) of the last burst."""
    for _ in range(attempts):
        key = f"sk-cli-{uuid.uuid4().hex[:8]}-rpm10"
        codes = collections.Counter(send(p, [key] * 40, stagger_s=0.02))
        served = p.workers_of(key)
        if len(served) >= 2:
            return codes, served
    pytest.fail(f"{attempts} bursts never reached 2 of the {WORKERS} workers: {served}")


def _region_of(p):
    found = re.search(r"fast-litellm: shared region (\S+)", p.log())
    assert found, p.log()[-3000:]
    return found.group(1)


def _parses_with_httptools(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "/httptools/parser/" in f.read()


@pytest.mark.parametrize("server_args,uvicorn_http", [
    pytest.param(UVICORN, True, id="uvicorn-spawned-workers"),
    pytest.param(["--run_gunicorn"], True, id="gunicorn"),
    pytest.param(["--run_granian"], False, id="granian"),
])
def test_the_launcher_holds_one_limit_across_the_workers_of_every_server(upstream, tmp_path, server_args, uvicorn_http):
    cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS)
    with cli_proxy(cfg, tmp_path, [*server_args, "--num_workers", str(WORKERS)], ready_line=READY) as p:
        region = _region_of(p)
        assert region == f"/dev/shm/fast_litellm-proxy.{p.process.pid}" and os.path.exists(region)
        codes, served = _spread_burst(p)
        assert codes == {200: 10, 429: 30}, (codes, served)
        if uvicorn_http:  # the proxy extra's httptools (requirements-test.txt) instead of h11
            assert all(_parses_with_httptools(pid) for pid in served), served
        assert "IMPORT ORDER" not in p.log()
        assert re.search(r"fast_litellm:INFO: fast_litellm: active components = \[.*'rate_limiter'", p.log()), \
            "the launcher shows fast_litellm's own INFO line, which LiteLLM's logging would drop"
        # Logged at "Application startup complete", which a worker that served nothing yet may
        # reach after READY (a CI run: 2 of 3 when the burst ended, the third still starting).
        deadline = time.monotonic() + 60
        while True:
            frozen = set(re.findall(r"gc_freeze: \d+ objects of the proxy's import and startup frozen \(pid (\d+)\)",
                                    p.log()))
            if len(frozen) >= WORKERS or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(frozen) == WORKERS, f"each worker froze its startup's objects: {frozen}"
    assert not os.path.exists(region), "the master removes the region it chose when it exits"


def test_the_launcher_accelerates_hypercorns_single_process(upstream, tmp_path):
    cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS)
    with cli_proxy(cfg, tmp_path, ["--run_hypercorn"], workers=1, ready_line=READY) as p:
        region = _region_of(p)
        key = f"sk-cli-{uuid.uuid4().hex[:8]}-rpm10"
        codes = collections.Counter(send(p, [key] * 15, concurrency=5))
        assert codes == {200: 10, 429: 5}, codes
        from fast_litellm import shm

        counted = [k for k in shm.RegionView(region).top_keys(50) if k["key"].startswith("{api_key:")]
        assert counted, "the serving process counted the key in the launcher's region"
    assert not os.path.exists(region)


def test_plain_litellm_counts_per_worker_and_admits_more(upstream, tmp_path):
    cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS)
    with cli_proxy(cfg, tmp_path, [*UVICORN, "--num_workers", str(WORKERS)], launcher=False, ready_line=READY) as p:
        codes, served = _spread_burst(p)
    assert codes[200] == sum(min(10, n) for n in served.values()) and sum(codes.values()) == 40, (codes, served)
    assert codes[200] > 10


def test_one_config_line_holds_the_limit_under_plain_litellm(upstream, tmp_path):
    cfg = config(str(tmp_path / "config.yaml"), upstream, MODELS)
    with open(cfg) as f:
        body = json.load(f)
    body["litellm_settings"] = {"callbacks": ["fast_litellm_proxy.activate.callback"]}
    with open(cfg, "w") as f:
        json.dump(body, f)
    with cli_proxy(cfg, tmp_path, [*UVICORN, "--num_workers", str(WORKERS)], launcher=False, ready_line=READY) as p:
        region = f"/dev/shm/fast_litellm-proxy.{p.process.pid}"
        assert os.path.exists(region), "the workers share the region named after their master"
        codes, served = _spread_burst(p)
        assert codes == {200: 10, 429: 30}, (codes, served)
    # The master never loads the config, so the file stays until the next start removes it.
    subprocess.run([sys.executable, "-c", "from fast_litellm_proxy import _region; _region.remove_stale()"],
                   check=True)
    assert not os.path.exists(region)


def test_help_is_litellms_plus_a_paragraph():
    out = subprocess.run([os.path.join(BIN, "fast-litellm"), "--help"], capture_output=True, text=True, timeout=300)
    plain = subprocess.run([os.path.join(BIN, "litellm"), "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 == plain.returncode
    assert out.stdout.startswith(plain.stdout) and "--num_workers" in plain.stdout
    assert "fast_litellm" in out.stdout[len(plain.stdout):]


def test_the_bootstrap_imports_fast_litellm_before_the_proxy_app_and_keeps_the_users_sitecustomize(tmp_path):
    from fast_litellm_proxy.launcher import BOOTSTRAP

    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE_RAN'] = '1'\n")
    result = run_python(
        """
        import os, sys
        before = "fast_litellm" in sys.modules
        import litellm.proxy.proxy_server
        import fast_litellm
        names = list(sys.modules)
        emit({"before": before, "order": names.index("fast_litellm") < names.index("litellm.proxy.proxy_server"),
              "user": os.environ.get("USER_SITECUSTOMIZE_RAN"), "active": sorted(
              n for n, s in fast_litellm.status().items() if s.get("state") == "on")})
        """,
        env={"PYTHONPATH": os.pathsep.join([BOOTSTRAP, str(own)]), "FAST_LITELLM_SHM": str(tmp_path / "x")},
        timeout=300,
    )
    assert result["before"] is False, "nothing is imported at interpreter start"
    assert result["order"] is True and result["user"] == "1"
    assert "rate_limiter" in result["active"] and "router" in result["active"]


def test_stale_regions_of_dead_masters_are_removed_and_live_ones_kept():
    from fast_litellm_proxy import _region

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = _region.path_for(dead.pid), _region.path_for(os.getpid())
    for path in (stale, live):
        open(path, "w").close()
    try:
        assert stale in _region.remove_stale()
        assert not os.path.exists(stale) and os.path.exists(live)
    finally:
        for path in (stale, live):
            if os.path.exists(path):
                os.unlink(path)
