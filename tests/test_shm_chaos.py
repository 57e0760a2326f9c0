"""Workers SIGKILLed at random moments while they insert keys, count and hold slots: the
region must keep its invariants. No key gets two live entries, no window passes its limit,
and once every holder is dead and reaped no slot stays taken."""

import os
import random
import signal
import time
from collections import Counter

from fast_litellm import shm

KEYS = [f"{{api_key:k{i}}}:requests" for i in range(40)]
LIMIT = 50


def worker(path, seed):
    r = shm.Region(path)
    rng = random.Random(seed)
    held = []
    while True:
        op = rng.random()
        if op < 0.5:
            r.hit(rng.choice(KEYS), LIMIT, 3600.0)
        elif op < 0.7:
            r.hit_many([(rng.choice(KEYS), LIMIT, 3600.0, 1), (rng.choice(KEYS), LIMIT, 3600.0, 2)])
        elif op < 0.85 or not held:
            key = f"pool{rng.randrange(4)}"
            if r.acquire(key, 3):
                held.append(key)
        else:
            r.release(held.pop(rng.randrange(len(held))))


def test_random_sigkills_keep_the_invariants(region_path):
    r = shm.Region(region_path, capacity=1024, max_workers=16)
    rng = random.Random(42)
    children = []

    def spawn(seed):
        pid = os.fork()
        if pid == 0:
            try:
                worker(region_path, seed)
            finally:
                os._exit(1)
        return pid

    children = [spawn(i) for i in range(4)]
    deadline = time.monotonic() + 6.0
    seed = 100
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.001, 0.05))
        victim = children.pop(rng.randrange(len(children)))
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        kills += 1
        seed += 1
        children.append(spawn(seed))
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert kills > 20

    r.reap()
    keys = r.top_keys(10_000)
    live = Counter((k["kind"], k["key"]) for k in keys)
    assert [k for k, n in live.items() if n > 1] == [], "a key has two live entries"
    windows = [k for k in keys if k["kind"] == "window"]
    assert windows and all(k["count"] <= LIMIT for k in windows), "a window passed its limit"
    assert all(r.peek(k, LIMIT, 3600.0).current <= LIMIT for k in KEYS)
    for i in range(4):
        assert r.slots_in_use(f"pool{i}") == 0, f"pool{i} still taken after every holder died"
    stats = r.stats()
    assert stats["dead_workers"] == 0 and stats["workers"] == 1
