"""Region dimensions, from the environment and from `shm.Region`: a bad value is an error that
names the variable or argument and the allowed range; a dimension not asked for is not
checked against an existing region (issue 11, items 5, 6 and 10)."""

import pytest

from fast_litellm import ConfigError, _config, _native, shm


@pytest.mark.parametrize("variable, raw", [
    ("FAST_LITELLM_SHM_CAPACITY", "1"),
    ("FAST_LITELLM_SHM_CAPACITY", "3"),
    ("FAST_LITELLM_SHM_CAPACITY", str(2**40)),
    ("FAST_LITELLM_SHM_WORKERS", "100000"),
    ("FAST_LITELLM_SHM_WORKERS", "2"),
])
def test_an_out_of_range_dimension_names_the_variable_and_the_range(variable, raw):
    with pytest.raises(ConfigError) as error:
        _config.region_settings({variable: raw})
    message = str(error.value)
    assert message.startswith(f"{variable}={raw!r}") and "not a power of two" not in message
    if variable.endswith("CAPACITY"):
        assert f"{_native.MIN_CAPACITY:,} to {_native.MAX_CAPACITY:,}" in message
    else:
        assert f"{_native.MIN_WORKERS} to {_native.MAX_WORKERS:,}" in message


def test_the_limits_are_the_engines():
    assert (_native.MIN_CAPACITY, _native.MAX_CAPACITY, _native.MIN_WORKERS, _native.MAX_WORKERS) == (64, 2**26, 4, 4096)
    assert _config.region_settings({"FAST_LITELLM_SHM_CAPACITY": "64", "FAST_LITELLM_SHM_WORKERS": "4096"}).capacity == 64


def test_only_the_dimensions_asked_for_are_checked_against_an_existing_region(region_path, monkeypatch):
    first = shm.Region(region_path, capacity=1024)
    again = shm.Region(region_path, max_workers=_native.DEFAULT_MAX_WORKERS)  # no capacity asked for
    assert again.capacity == 1024
    monkeypatch.setenv("FAST_LITELLM_SHM_WORKERS", str(_native.DEFAULT_MAX_WORKERS))
    assert shm.Region(region_path).capacity == 1024
    with pytest.raises(shm.RegionConfigError) as error:
        shm.Region(region_path, capacity=2048)
    assert "but capacity 2048 (it has 1024) was asked for" in str(error.value)
    first.close()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"capacity": 1.5}, TypeError, "capacity must be a whole number, not 1.5"),
    ({"max_workers": "8"}, TypeError, "max_workers must be a whole number"),
    ({"capacity": 0}, ValueError, "capacity must be positive"),
    ({"capacity": 3}, shm.RegionConfigError, "capacity=3 asks for 3 counters: a region holds 64"),
    ({"max_workers": 100000}, shm.RegionConfigError, "max_workers=100000 asks for 100000 worker entries"),
])
def test_bad_region_arguments_say_which_and_why(region_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        shm.Region(region_path, **kwargs)


def test_an_empty_path_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="path must name a region file"):
        shm.Region("")


def test_a_slot_refused_by_a_full_table_says_so_not_that_its_slots_are_taken(region_path):
    r = shm.Region(region_path, capacity=64)
    for i in range(2000):
        if r.hit(f"filler-{i}", 10, 3600.0).table_full:
            break
    else:
        pytest.fail("the 64-slot table never filled")
    with pytest.raises(shm.SlotUnavailable) as refused:
        with r.slot("deployment:x", 8):
            pass
    assert refused.value.table_full and "table is full (0 of 8 in use)" in str(refused.value)
    assert "FAST_LITELLM_SHM_CAPACITY" in str(refused.value)
    r.close()


@pytest.mark.parametrize("variable, raw", [
    ("FAST_LITELLM_HOST_TIER", "sometimes"),
    ("FAST_LITELLM_REDIS_HOSTS", "0"),
    ("FAST_LITELLM_REDIS_HOSTS", "three"),
    ("FAST_LITELLM_REDIS_HOSTS", "20000"),
    ("FAST_LITELLM_REDIS_DOWN_POLICY", "maybe"),
    ("FAST_LITELLM_REDIS_TIMEOUT_MS", "0"),
    ("FAST_LITELLM_REDIS_FLUSH_MS", "-1"),
    ("FAST_LITELLM_REDIS_FLUSH_MS", "soon"),
    ("FAST_LITELLM_REDIS_REFILL_AHEAD", "early"),
    ("FAST_LITELLM_REDIS_GAUGE_LINGER_MS", "70000"),
    ("FAST_LITELLM_REDIS_GAUGE_LINGER_MS", "1s"),
])
def test_a_bad_host_tier_setting_is_a_config_error_at_import_naming_it(variable, raw):
    from subproc import run_python

    kind, message = run_python(f"""
        try:
            import fast_litellm
            emit(["imported", ""])
        except Exception as e:
            emit([type(e).__name__, str(e)])
    """, env={variable: raw, "FAST_LITELLM_SHM": "off"})
    assert kind == "ConfigError" and message.startswith(f"{variable}={raw!r}"), (kind, message)
    with pytest.raises(ConfigError, match=f"^{variable}={raw!r}"):
        _config.host_tier_settings({variable: raw})
    assert _config.host_tier_settings({}) == _config.HostTierSettings(True, 1, "local-share", 0.25)
    assert _config.host_tier_settings({"FAST_LITELLM_HOST_TIER": "off", "FAST_LITELLM_REDIS_HOSTS": "3",
                                       "FAST_LITELLM_REDIS_DOWN_POLICY": "closed",
                                       "FAST_LITELLM_REDIS_TIMEOUT_MS": "50",
                                       "FAST_LITELLM_REDIS_FLUSH_MS": "0",
                                       "FAST_LITELLM_REDIS_REFILL_AHEAD": "off",
                                       "FAST_LITELLM_REDIS_GAUGE_LINGER_MS": "0"}) == _config.HostTierSettings(
        False, 3, "closed", 0.05, 0.0, False, 0.0)
