"""Regressions for defects found by probing the library as a new user would (issue 11)."""

import os

from fast_litellm import shm


def test_peek_answers_as_the_next_hit_would(region_path):
    r = shm.Region(region_path, capacity=1024)
    assert r.hit("k", 2, 60.0).allowed and r.hit("k", 2, 60.0).allowed
    read = r.peek("k", 2, 60.0)
    assert (read.allowed, read.current, read.remaining) == (False, 2, 0) and read.retry_after_s > 0
    assert not r.hit("k", 2, 60.0).allowed
    assert r.peek("unused", 2, 60.0).allowed and not r.peek("unused", 0, 60.0).allowed
    assert r.peek("k", 3, 60.0).allowed, "one more unit fits under a limit of 3"
    r.close()


def test_close_gives_back_slots_and_a_later_call_registers_again_as_documented(region_path):
    def live():
        return sum(1 for w in other.workers() if w["status"] == "live")

    r = shm.Region(region_path, capacity=1024)
    other = shm.Region(region_path)
    assert r.acquire("s", 1) and not other.acquire("s", 1)
    before = live()
    r.close()
    assert live() == before - 1
    assert other.slots_in_use("s") == 0 and other.acquire("s", 1), "close gave the slot back"
    assert r.acquire("t", 1)  # the handle still works, and registered again
    assert live() == before
    other.close()


def test_argument_errors_name_the_argument(region_path):
    import pytest

    r = shm.Region(region_path, capacity=1024)
    with pytest.raises(ValueError, match="ttl_s must be 0 .never expires. or a positive number"):
        r.counter_add("c", 1, -5.0)
    with pytest.raises(TypeError, match=r"hit_many takes a list of \(key, limit, window_s, cost\) tuples, got 'abc'"):
        r.hit_many("abc")
    assert r.hit_many([("k", 1, 60.0, 1)]).allowed
    r.close()


def test_a_counter_expires_after_its_ttl(region_path):
    import time

    r = shm.Region(region_path, capacity=1024)
    assert r.counter_add("short", 1, 1.0) == 1 and r.counter_add("forever", 1, 0.0) == 1
    time.sleep(2.1)
    assert r.counter_get("short") is None and r.counter_add("short", 1, 1.0) == 1, "it starts over"
    assert r.counter_get("forever") == 1
    r.close()


# A process that attaches, uses 5 of 5, says "ready", waits for a line, then reports what one
# more hit and its worker entry look like, or the error it got.
HOLDER = r"""
import faulthandler, json, sys
from fast_litellm import shm
r = shm.Region(sys.argv[1], capacity=1024)
if "late-faulthandler" in sys.argv:
    faulthandler.enable()  # installed after fast_litellm's handler, as pytest does
for _ in range(5):
    assert r.hit("k", 5, 60.0).allowed
print("ready", flush=True)
sys.stdin.readline()
try:
    d = r.hit("k", 5, 60.0)
    print(json.dumps({"allowed": d.allowed, "live": [w["pid"] for w in r.workers() if w["status"] == "live"]}))
except shm.RegionError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def _holder(path, *flags):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path, *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "FAST_LITELLM_DISABLE": "1"})
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _finish(proc):
    import json

    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    return json.loads(out)


def _attach_elsewhere(path):
    """What a fresh process gets when it attaches now: 'attached' or the error."""
    from subproc import run_python

    return run_python(f"""
        from fast_litellm import shm
        try:
            shm.Region({path!r})
            emit("attached")
        except shm.RegionError as e:
            emit([type(e).__name__, str(e)])
    """, env={"FAST_LITELLM_DISABLE": "1"})


def test_a_region_in_use_is_not_re_created_when_its_header_is_zeroed(region_path):
    holder = _holder(region_path)
    with open(region_path, "r+b") as f:
        f.write(bytes(4096))
    kind, message = _attach_elsewhere(region_path)
    assert kind == "RegionFormatError" and "in use by running processes" in message, message
    seen = _finish(holder)
    assert seen["allowed"] is False, "the holder's 5 of 5 still stand"
    assert holder.pid in seen["live"], "its worker entry is still there"
    assert _attach_elsewhere(region_path) == "attached", "with no user left, the erased file is re-created"


def test_a_region_emptied_under_a_process_is_an_error_in_it_and_not_re_created(region_path):
    holder = _holder(region_path, "late-faulthandler")
    os.truncate(region_path, 0)
    kind, message = _attach_elsewhere(region_path)
    assert kind == "RegionFormatError" and "in use by running processes" in message, message
    seen = _finish(holder)  # a SIGBUS would end it with -7 here
    assert seen["error"] == "RegionFormatError" and "truncated or emptied" in seen["message"], seen


def test_a_region_truncated_under_a_process_is_an_error_not_sigbus_and_the_inspector_exits_2(region_path):
    import subprocess
    import sys
    import time

    holder = _holder(region_path)
    inspector = os.path.join(os.path.dirname(sys.executable), "fl-shm-inspect")
    watch = subprocess.Popen([inspector, "--watch", "0.1", "--top", "5", region_path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert watch.poll() is None, watch.stderr.read()
    os.truncate(region_path, 4096)
    seen = _finish(holder)
    assert seen["error"] == "RegionFormatError" and "truncated or emptied" in seen["message"], seen
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 2 and "truncated or emptied" in err, (watch.returncode, err)
    again = subprocess.run([inspector, region_path], capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "truncated or extended" in again.stderr, again.stderr


def test_a_sigbus_outside_the_region_still_kills_as_before(tmp_path):
    import signal
    import subprocess
    import sys

    code = r"""
import mmap, os, sys
from fast_litellm import shm
r = shm.Region(sys.argv[1], capacity=1024)
assert r.hit("k", 1, 60.0).allowed
with open(sys.argv[2], "w+b") as f:
    f.truncate(8192)
    m = mmap.mmap(f.fileno(), 8192)
    f.truncate(0)
    m[4096]  # past the end of a file that is not the region
print("survived")
"""
    path = str(tmp_path / "region")
    proc = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "other")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "FAST_LITELLM_DISABLE": "1"})
    assert proc.returncode == -signal.SIGBUS and "survived" not in proc.stdout, (proc.returncode, proc.stderr)
