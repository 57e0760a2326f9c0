"""The shared patching core: flags, fallback on the same call, the breaker, restore."""

import asyncio
import logging
import sys
import types

import pytest

from fast_litellm import ConfigError, _acceleration as acc


@pytest.fixture
def target():
    """A real module with a sync and an async function, and a second module that copied the
    sync function's name at import (`from target import count`)."""
    mod = types.ModuleType("fl_test_target")
    exec(
        "def count(text):\n    return len(text)\n"
        "async def acount(text):\n    return len(text)\n"
        "class Limiter:\n    def check(self, n):\n        return n <= 10\n",
        mod.__dict__,
    )
    copy = types.ModuleType("fl_test_caller")
    copy.counter = mod.count
    sys.modules[mod.__name__] = mod
    sys.modules[copy.__name__] = copy
    yield mod, copy
    del sys.modules[mod.__name__], sys.modules[copy.__name__]
    acc._components.clear()


def make(env=None, default=acc.Flag("on")):
    return acc.component("tokens", "FAST_LITELLM_RUST_TOKEN_COUNTING", default, env=env or {})


def test_a_patch_covers_copied_names_and_restores_every_original(target):
    mod, copy = target
    originals = (mod.count, mod.acount, mod.__dict__["Limiter"].__dict__["check"])
    c = make()
    assert c.patch(mod, "count", lambda text: -1)
    assert c.patch(mod, "acount", lambda text: asyncio.sleep(0, result=-2))
    assert c.patch(mod.Limiter, "check", lambda self, n: "fast")
    assert mod.count("abc") == -1 and copy.counter("abc") == -1, "the early copy is covered"
    assert asyncio.run(mod.acount("abc")) == -2
    assert mod.Limiter().check(3) == "fast"
    assert c.status()["state"] == "on" and c.status()["calls"] == 4
    acc.remove_acceleration()
    assert (mod.count, mod.acount, mod.Limiter.__dict__["check"]) == originals
    assert mod.count is originals[0] and copy.counter is originals[0]
    assert acc.status()["tokens"]["state"] == "off"


def test_a_missing_name_is_a_named_warning_not_a_silent_no_op(target, caplog):
    mod, _ = target
    c = make()
    with caplog.at_level(logging.WARNING, logger="fast_litellm"):
        assert not c.patch(mod, "no_such_function", lambda: None)
    assert "fl_test_target.no_such_function" in caplog.text
    assert c.status()["state"] == "off" and "not found" in c.status()["reason"]


def test_an_error_falls_back_on_the_same_call_and_the_breaker_opens_at_the_threshold(target, caplog):
    mod, _ = target
    c = make({"FAST_LITELLM_BREAKER_THRESHOLD": "3"})

    def broken(text):
        raise RuntimeError("boom")

    c.patch(mod, "count", broken)
    with caplog.at_level(logging.WARNING, logger="fast_litellm"):
        assert [mod.count("abcd") for _ in range(5)] == [4] * 5, "every call still answers"
    s = c.status()
    assert (s["errors"], s["fallbacks"], s["breaker"], s["state"]) == (3, 3, "open", "off")
    assert s["calls"] == 3, "after the breaker opened the accelerated path is not tried"
    assert "breaker open after 3 errors" in s["reason"]
    assert caplog.text.count("turned off for this process") == 1


def test_async_fallback(target):
    mod, _ = target
    c = make()

    async def broken(text):
        raise ValueError("no")

    c.patch(mod, "acount", broken)
    assert asyncio.run(mod.acount("xy")) == 2
    assert c.errors == 1


def test_an_error_of_the_original_the_accelerated_path_ran_itself_reaches_the_caller_once(target):
    """A path that handles part of a call and runs the original for the rest (the host tier's
    post-call increments) passes the original's error on: it is not run a second time."""
    mod, _ = target
    runs = []

    async def failing_original(text):
        runs.append(text)
        raise ConnectionError("redis gone")

    mod.acount = failing_original
    c = make()

    async def partly(text):
        try:
            await failing_original(text[1:])
        except Exception as error:
            raise acc.OriginalRaised(error) from error

    c.patch(mod, "acount", partly)
    with pytest.raises(ConnectionError, match="redis gone"):
        asyncio.run(mod.acount("xyz"))
    assert runs == ["yz"], "the original ran once, on the part left to it"
    assert (c.errors, c.fallbacks) == (0, 0)


@pytest.mark.parametrize(
    "raw, flag",
    [
        (None, acc.Flag("on")),
        ("true", acc.Flag("on")),
        ("FALSE", acc.Flag("off")),
        ("canary:5", acc.Flag("canary", 5.0)),
        ("rollout:37.5", acc.Flag("rollout", 37.5)),
    ],
)
def test_flag_grammar(raw, flag):
    assert acc.parse_flag("FAST_LITELLM_RUST_ROUTING", raw, acc.Flag("on")) == flag


@pytest.mark.parametrize("raw", ["maybe", "rollout:101", "canary:", "canary:-1", "rollout:x", "half"])
def test_a_bad_flag_names_the_variable(raw):
    with pytest.raises(ConfigError, match="FAST_LITELLM_RUST_ROUTING"):
        acc.parse_flag("FAST_LITELLM_RUST_ROUTING", raw, acc.Flag("on"))


def test_rollout_takes_its_share_of_calls(target):
    mod, _ = target
    for raw, low, high in [("rollout:0", 0, 0), ("rollout:100", 2000, 2000), ("canary:25", 350, 650)]:
        acc._components.clear()
        c = make({"FAST_LITELLM_RUST_TOKEN_COUNTING": raw})
        c.patch(mod, "count", lambda text: -1)
        fast = sum(mod.count("a") == -1 for _ in range(2000))
        assert low <= fast <= high, (raw, fast)
        c.restore()


def test_a_stateful_component_takes_its_rollout_share_per_process(target):
    mod, _ = target
    seen = []
    for _ in range(40):
        acc._components.clear()
        c = acc.component("limiter", "FAST_LITELLM_RUST_RATE_LIMITING",
                          env={"FAST_LITELLM_RUST_RATE_LIMITING": "rollout:50"}, per_process=True)
        c.patch(mod, "count", lambda text: -1)
        answers = {mod.count("a") for _ in range(50)}
        assert len(answers) == 1, "every call of one process goes the same way"
        seen.append(answers.pop())
        c.restore()
    assert set(seen) == {-1, 1}, "each new process chooses: some accelerated, some not"


def test_a_canary_stops_at_its_first_error_a_rollout_does_not(target):
    mod, _ = target

    def broken(text):
        raise RuntimeError("boom")

    for raw, breaker in [("canary:100", "open"), ("rollout:100", "closed")]:
        acc._components.clear()
        c = make({"FAST_LITELLM_RUST_TOKEN_COUNTING": raw})
        c.patch(mod, "count", broken)
        assert [mod.count("ab") for _ in range(3)] == [2, 2, 2]
        assert (c.status()["breaker"], c.errors) == (breaker, 1 if breaker == "open" else 3), raw
        c.restore()


def test_disable_turns_every_component_off(target):
    mod, _ = target
    c = make({"FAST_LITELLM_DISABLE": "1", "FAST_LITELLM_RUST_TOKEN_COUNTING": "true"})
    c.patch(mod, "count", lambda text: -1)
    assert mod.count("abc") == 3
    assert c.status()["reason"] == "FAST_LITELLM_DISABLE=1"
    with pytest.raises(ConfigError, match="FAST_LITELLM_DISABLE"):
        make({"FAST_LITELLM_DISABLE": "sometimes"})
    with pytest.raises(ConfigError, match="FAST_LITELLM_BREAKER_THRESHOLD"):
        make({"FAST_LITELLM_BREAKER_THRESHOLD": "0"})


def test_the_startup_line_is_logged_exactly_once(target, caplog, monkeypatch):
    mod, _ = target
    monkeypatch.setattr(acc, "_announced", False)
    make().patch(mod, "count", lambda text: -1)
    with caplog.at_level(logging.INFO, logger="fast_litellm"):
        acc.announce()
        acc.announce()
    lines = [r.getMessage() for r in caplog.records if "active components" in r.getMessage()]
    assert lines == ["fast_litellm: active components = ['tokens']"]
