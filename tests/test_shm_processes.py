"""The region across real processes: forked workers, independent attachers, SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fast_litellm import shm
from forked import run_forked


@pytest.mark.parametrize("backing", ["file", "anonymous"])
@pytest.mark.parametrize("algorithm", ["fixed", "gcra"])
def test_four_forked_processes_admit_exactly_the_limit_on_one_key(region_path, backing, algorithm):
    r = shm.Region(region_path if backing == "file" else None, capacity=4096)
    # A window long enough that GCRA gives nothing back during the test (one unit per 6 s).
    limit, window = 1000, 6000.0

    def child(_):
        return sum(r.hit("api_key:hot", limit, window, algorithm=algorithm).allowed for _ in range(600))

    admitted = run_forked(4, child)
    assert sum(admitted) == limit
    assert r.peek("api_key:hot", limit, window, algorithm=algorithm).current == limit


def test_four_forked_processes_admit_exactly_the_limit_on_each_of_1000_keys(region_path):
    r = shm.Region(region_path, capacity=8192)
    keys = [f"{{api_key:sk-{i:04d}}}:requests" for i in range(1000)]
    limit = 3

    def child(_):
        return sum(r.hit(k, limit, 600.0).allowed for _ in range(2) for k in keys)

    assert sum(run_forked(4, child)) == limit * len(keys)
    assert {r.peek(k, limit, 600.0).current for k in keys} == {limit}
    assert r.stats()["used"] == len(keys)


def test_a_forked_child_registers_itself(region_path):
    r = shm.Region(region_path, capacity=1024)
    parent_worker = r.register()

    def child(_):
        worker = r.register()
        live = {w["pid"] for w in r.workers() if w["status"] == "live"}
        assert os.getpid() in live and os.getppid() in live, live
        return worker

    # (A child that has exited may be reaped and its entry reused by the next: only the
    # parent's entry, alive throughout, must never be taken.)
    assert parent_worker not in run_forked(2, child)


def _child_holding_slots(path, key, n):
    """A separate process that takes n slots, says so, and waits to be killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from fast_litellm import shm
        r = shm.Region({path!r})
        assert all(r.acquire({key!r}, {n}) for _ in range({n}))
        print("held", flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, FAST_LITELLM_SHM="off")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("wait_for_child", [True, False], ids=["reaped", "zombie"])
def test_slots_of_a_sigkilled_process_come_back(region_path, wait_for_child):
    r = shm.Region(region_path, capacity=1024)
    p = _child_holding_slots(region_path, "deployment:gpt-4o", 3)
    assert not r.acquire("deployment:gpt-4o", 3)
    assert r.slots_in_use("deployment:gpt-4o") == 3
    p.send_signal(signal.SIGKILL)
    if wait_for_child:
        p.wait()
    else:
        while open(f"/proc/{p.pid}/stat").read().split(") ")[1][0] != "Z":
            time.sleep(0.01)
    start = time.monotonic()
    while not r.acquire("deployment:gpt-4o", 3):
        assert time.monotonic() - start < 2.5, "a dead holder's slots must come back within the reap interval"
        time.sleep(0.05)
    assert r.slots_in_use("deployment:gpt-4o") == 1
    assert r.stats()["reaped_workers"] >= 1
    p.wait()


def test_explicit_reap_gives_slots_back_at_once(region_path):
    r = shm.Region(region_path, capacity=1024)
    p = _child_holding_slots(region_path, "pool", 2)
    p.kill()
    p.wait()
    assert r.stats()["dead_workers"] == 1
    assert r.reap() == 1
    assert r.slots_in_use("pool") == 0
    assert r.stats()["dead_workers"] == 0


def test_independent_processes_attaching_at_once_share_one_region(region_path):
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from fast_litellm import shm
        start = float(sys.argv[1])
        while time.time() < start:
            pass
        r = shm.Region({region_path!r}, capacity=2048)
        admitted = sum(r.hit("key:shared", 50, 600.0).allowed for _ in range(20))
        print(admitted, r.header()["created_unix_s"], os.stat({region_path!r}).st_ino)
        """
    )
    env = dict(os.environ, FAST_LITELLM_SHM="off")
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(start)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(o[0]) for o in outputs) == 50
    assert len({(o[1], o[2]) for o in outputs}) == 1, "one creation, one file"


def test_a_region_is_reused_after_a_restart_and_dead_workers_are_cleaned(region_path):
    first = shm.Region(region_path, capacity=1024)
    assert first.attach == "created"
    for _ in range(3):
        assert first.hit("key:a", 10, 600.0).allowed
    p = _child_holding_slots(region_path, "pool", 1)
    p.kill()
    p.wait()
    first.close()
    del first
    again = shm.Region(region_path)
    assert again.attach == "reused"
    assert again.hit("key:a", 10, 600.0).current == 4, "the window's count survives the restart"
    stats = again.stats()
    assert stats["dead_workers"] == 0 and stats["reaped_workers"] == 1
    assert again.slots_in_use("pool") == 0


def test_the_slot_context_manager_never_leaks(region_path):
    r = shm.Region(region_path, capacity=1024)
    with pytest.raises(ZeroDivisionError):
        with r.slot("k", 1):
            assert r.slots_in_use("k") == 1
            1 / 0
    assert r.slots_in_use("k") == 0
    with r.slot("k", 1):
        with pytest.raises(shm.SlotUnavailable):
            with r.slot("k", 1):
                pass
    assert r.slots_in_use("k") == 0
    with pytest.raises(shm.SlotNotHeldError):
        r.release("k")


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_full_table_gives_a_distinct_counted_result(region_path, fail_open):
    r = shm.Region(region_path, capacity=64, fail_open=fail_open)
    decisions = [r.hit(f"k{i}", 5, 600.0) for i in range(80)]
    full = [d for d in decisions if d.table_full]
    assert len(full) == 16
    assert all(d.allowed == fail_open for d in full)
    assert r.stats()["full_events"] == 16
    m = r.hit_many([("k0", 5, 600.0, 1), ("brand-new", 5, 600.0, 1)])
    assert m.table_full and m.allowed == fail_open
    if not fail_open:
        assert r.peek("k0", 5, 600.0).current == 1, "a refused multi-hit gives its units back"
    assert r.acquire("new-slot-key", 1) == fail_open
    if fail_open:
        r.release("new-slot-key")  # the untracked admission is released without error


def test_hit_many_never_pushes_a_limit_over_across_processes(region_path):
    r = shm.Region(region_path, capacity=1024)
    limits = [("key", 40, 600.0, 1), ("user", 25, 600.0, 1), ("team", 1000, 600.0, 1)]
    admitted = run_forked(4, lambda _: sum(r.hit_many(limits).allowed for _ in range(30)))
    assert sum(admitted) == 25
    assert [r.peek(k, lim, w).current for k, lim, w, _ in limits] == [25, 25, 25]


def test_bad_arguments_raise_clear_errors(region_path):
    r = shm.Region(region_path, capacity=1024)
    with pytest.raises(ValueError, match="window_s"):
        r.hit("k", 1, 0.0)
    with pytest.raises(ValueError, match="algorithm"):
        r.hit("k", 1, 60.0, algorithm="leaky")
    with pytest.raises(OverflowError):
        r.hit("k", -1)
    with pytest.raises(shm.RegionConfigError, match="exists with capacity 1024"):
        shm.Region(region_path, capacity=2048)
    with pytest.raises(ValueError, match="capacity"):
        shm.Region(region_path + "-x", capacity=0)
