"""Regressions for defects found by probing the library as a new user would (issue 11)."""

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
