"""The README's main command (`make demo`, scripts/demo.sh) as a user runs it: it comes up,
answers through the mock upstream, holds a per-key limit across its workers, and Ctrl-C (a
SIGINT to its process group, as a terminal sends it) stops everything it started."""

import collections
import os
import signal
import subprocess
import time
import uuid

import pytest

from proxy import ROOT, Proxy, free_port, send

pytestmark = pytest.mark.timeout(600)


def test_make_demo_serves_holds_limits_and_stops_on_ctrl_c(tmp_path):
    port, upstream_port = free_port(), free_port()
    region = f"/dev/shm/fl-demo-test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, FL_DEMO_PORT=str(port), FL_DEMO_UPSTREAM_PORT=str(upstream_port), FAST_LITELLM_SHM=region)
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        # As a terminal starts it: SIGINT at its default. A test run started in the background
        # (`cmd &` in a script, as CI may be) inherits SIGINT ignored, and a shell that starts
        # with a signal ignored cannot trap it.
        demo = subprocess.Popen(["make", "demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 400
        while "Ctrl-C stops" not in log_path.read_text(errors="replace"):
            assert demo.poll() is None and time.time() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        out = log_path.read_text(errors="replace")
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in out and "fl-shm-inspect" in out
        p = Proxy(demo, port, str(log_path))
        assert collections.Counter(send(p, ["sk-demo-test-rpm10"] * 15, concurrency=15)) == {200: 10, 429: 5}
        assert "fast_litellm: active components = [" in out and "'rate_limiter'" in out, out[-4000:]
        os.killpg(demo.pid, signal.SIGINT)
        # make, which got the SIGINT too, ends by it once the demo exited 0: silently.
        assert demo.wait(timeout=60) in (0, -signal.SIGINT)
        out = log_path.read_text(errors="replace")
        stopping = out[out.index("stopping the proxy"):]
        for noise in ("was sent SIGINT", "make: ***", "Traceback", "Interrupt"):
            assert noise not in stopping, stopping[-3000:]
        # The only errors left are gunicorn's for its own graceful stop, which the demo explains.
        errors = [line for line in stopping.splitlines() if "[ERROR]" in line]
        assert all("was sent SIGTERM!" in line for line in errors), errors
        assert "plain `litellm --run_gunicorn`" in stopping
        assert f"the region file {region} stays" in stopping, stopping[-3000:]
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                os.killpg(demo.pid, 0)  # anything of the demo's still running?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("processes of the demo outlived Ctrl-C")
    finally:
        try:
            os.killpg(demo.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if os.path.exists(region):
            os.unlink(region)
