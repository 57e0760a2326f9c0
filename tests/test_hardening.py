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
