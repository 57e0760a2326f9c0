"""fl-shm-inspect, run as the installed console script against real regions."""

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from fast_litellm import _native, shm

INSPECT = shutil.which("fl-shm-inspect") or os.path.join(os.path.dirname(os.sys.executable), "fl-shm-inspect")


def inspect(*args, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run([INSPECT, *args], capture_output=True, text=True, env=full_env, timeout=60)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def busy_region(region_path):
    r = shm.Region(region_path, capacity=1024)
    for i in range(5):
        for _ in range(i + 1):
            r.hit(f"{{api_key:key-{i}}}:requests", 100, 60.0)
    r.hit("a-very-long-key-name-that-does-not-fit-in-the-slot", 10)
    assert r.acquire("deployment:gpt-4o", 4) and r.acquire("deployment:gpt-4o", 4)
    return r


def test_json_shows_header_table_workers_and_top_keys(region_path, busy_region):
    out = inspect(region_path, "--json", "--top", "3")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["header"]["layout_version"] == _native.LAYOUT_VERSION and snap["header"]["capacity"] == 1024
    assert snap["stats"]["used"] == 7
    assert [w["pid"] for w in snap["workers"] if w["status"] == "live"] == [os.getpid()]
    top = snap["top_keys"]
    assert [k["count"] for k in top] == [5, 4, 3]
    assert top[0]["key"] == "{api_key:key-4}:requests" and top[0]["window_s"] == 60.0
    slots = json.loads(inspect(region_path, "--json", "--top", "100").stdout)["top_keys"]
    held = next(k for k in slots if k["kind"] == "slots")
    assert held["holders"] == [[os.getpid(), 2]]
    long = next(k for k in slots if k["key"].startswith("a-very-long"))
    assert long["key_truncated"] and long["key"] == "a-very-long-…-in-the-slot"
    assert len(long["fingerprint"]) == 32 and int(long["fingerprint"], 16)


def test_the_text_view_and_that_it_never_changes_the_region(region_path, busy_region):
    before = digest(region_path)
    out = inspect(region_path)
    assert out.returncode == 0, out.stderr
    assert digest(region_path) == before, "the inspector wrote to the region"
    text = out.stdout
    assert f"layout v{_native.LAYOUT_VERSION}" in text and "capacity 1024" in text
    assert "{api_key:key-4}:requests" in text and "deployment:gpt-4o" in text
    assert f"{os.getpid()}:2" in text
    # The path may also come from the environment.
    from_env = inspect(FAST_LITELLM_SHM=region_path).stdout
    assert from_env.splitlines()[0] == f"region {region_path}" and "{api_key:key-4}:requests" in from_env


def test_a_dead_worker_is_shown_as_dead(region_path, busy_region):
    pid = os.fork()
    if pid == 0:
        busy_region.register()
        os.kill(os.getpid(), 9)
    os.waitpid(pid, 0)
    snap = json.loads(inspect(region_path, "--json").stdout)
    assert {w["pid"]: w["status"] for w in snap["workers"]}[pid] == "dead"
    assert snap["stats"]["dead_workers"] == 1


def test_watch_refreshes(region_path, busy_region):
    p = subprocess.Popen([INSPECT, region_path, "--json", "--watch", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        busy_region.hit("{api_key:key-0}:requests", 100, 60.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            snap = json.loads(p.stdout.readline())
            if snap["stats"]["inserts"] == first["stats"]["inserts"] and any(
                k["key"] == "{api_key:key-0}:requests" and k["count"] == 2 for k in snap["top_keys"]
            ):
                break
        else:
            pytest.fail("--watch did not show the new count")
    finally:
        p.terminate()
        p.wait()


def test_missing_or_invalid_regions_exit_non_zero_with_a_message(region_path):
    out = inspect(region_path)
    assert out.returncode == 2 and "No such file" in out.stderr
    with open(region_path, "wb") as f:
        f.write(b"not a region" * 1000)
    out = inspect(region_path)
    assert out.returncode == 2 and "magic" in out.stderr
    out = inspect(FAST_LITELLM_SHM="")
    assert out.returncode == 2 and "FAST_LITELLM_SHM" in out.stderr


def test_the_inspector_imports_no_litellm(region_path, busy_region):
    """A debug tool for a live region: it neither patches nor imports LiteLLM (whose import
    is slow and, without LITELLM_LOCAL_MODEL_COST_MAP, reaches for the network)."""
    code = (
        "import sys; sys.argv = ['fl-shm-inspect', sys.argv[1], '--json']; import fl_shm_inspect;"
        " rc = fl_shm_inspect.main(); print('litellm' in sys.modules, rc)"
    )
    out = subprocess.run([os.sys.executable, "-c", code, region_path], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False 0", out.stdout + out.stderr


@pytest.mark.parametrize("args, message", [
    (["--top", "-1"], "--top takes a whole number"),
    (["--watch", "nan"], "--watch takes a positive, finite number"),
    (["--watch", "inf"], "--watch takes a positive, finite number"),
    (["--watch", "0"], "--watch takes a positive, finite number"),
])
def test_bad_arguments_are_a_usage_error_not_a_traceback(region_path, busy_region, args, message):
    out = inspect(region_path, *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_reader_that_goes_away_ends_it_quietly(region_path, busy_region):
    # `fl-shm-inspect --json --watch 0.05 | head -1`: the pipe closes after the first line,
    # and the next refresh writes to it.
    proc = subprocess.Popen([INSPECT, region_path, "--json", "--watch", "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_a_symlink_is_refused_with_the_reason(region_path, busy_region, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(region_path)
    out = inspect(str(link))
    assert out.returncode == 2 and "is a symbolic link" in out.stderr and region_path in out.stderr, out.stderr
    assert "os error" not in out.stderr


def test_litellm_keys_stay_apart_and_one_is_found_by_its_full_text(region_path):
    """LiteLLM's keys share a long head ({api_key:<64 hex>}) and differ in the hash and the
    suffix: the listing keeps both ends and the fingerprint; --key finds one by its text."""
    r = shm.Region(region_path, capacity=1024)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2)]
    for h in hashes:
        r.window_add(f"{{api_key:{h}}}:window", f"{{api_key:{h}}}:requests", int(time.time()), 60, 3)
        r.counter_add(f"{{api_key:{h}}}:tokens", 7, 60.0)
    r.counter_add("never-expires", 1, 0.0)
    keys = json.loads(inspect(region_path, "--json", "--top", "100").stdout)["top_keys"]
    shown = {k["key"] for k in keys}
    for h in hashes:
        for suffix in ("window", "requests", "tokens"):
            text = f"{{api_key:{h}}}:{suffix}"
            assert text[:12] + "…" + text[-12:] in shown, (text, shown)
    assert len({k["fingerprint"] for k in keys}) == len(keys) == 7
    tokens = next(k for k in keys if k["key"].endswith(":tokens") and k["key"].startswith("{api_key:" + hashes[0][:3]))
    assert tokens["window_s"] == 60.0 and 0 < tokens["resets_in_s"] <= 61
    window = next(k for k in keys if k["key"].endswith("}:window"))
    assert window["window_s"] == 60.0, "a LiteLLM window shows its length, not 0s"
    text = inspect(region_path).stdout
    never = next(line for line in text.splitlines() if line.rstrip().endswith("never-expires"))
    assert " 0s " not in never and never.split()[2:4] == ["-", "-"], never

    wanted = f"{{api_key:{hashes[1]}}}:requests"
    found = inspect(region_path, "--key", wanted)
    assert found.returncode == 0 and wanted in found.stdout and " 3 " in found.stdout, found.stdout
    one = json.loads(inspect(region_path, "--key", wanted, "--json").stdout)
    assert one["key"] == wanted and [(e["kind"], e["count"]) for e in one["entries"]] == [("counter", 3)]
    assert one["entries"][0]["fingerprint"] in {k["fingerprint"] for k in keys}
    missing = inspect(region_path, "--key", wanted + "x")
    assert missing.returncode == 1 and "no live entry" in missing.stdout
    r.close()
