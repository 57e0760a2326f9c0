"""The environment read at `import fast_litellm`: each variable changes what the import does,
and a bad value stops the import with an error that names it."""

import os

import pytest

from subproc import run_python

STATUS = """
import fast_litellm
from fast_litellm import _acceleration
status = fast_litellm.status()
status.pop("litellm")  # the version, not a component
emit({"status": status, "host_region": _acceleration._host_region is not None})
"""

COMPONENT_FLAGS = [
    "FAST_LITELLM_RUST_RATE_LIMITING",
    "FAST_LITELLM_RUST_ROUTER",
    "FAST_LITELLM_RUST_CONNECTION_POOL",
    "FAST_LITELLM_RUST_ROUTING",
    "FAST_LITELLM_RUST_TOKEN_COUNTING",
    "FAST_LITELLM_BATCH_TOKEN_COUNTING",
    "FAST_LITELLM_AUTH_OTEL_IMPORT",
]


@pytest.mark.timeout(120)
def test_disable_maps_nothing_and_patches_nothing(region_path):
    out = run_python(STATUS, {"FAST_LITELLM_SHM": region_path, "FAST_LITELLM_DISABLE": "1"})
    assert not os.path.exists(region_path), "no region is created"
    assert out["host_region"] is False
    for name, s in out["status"].items():
        assert (s["state"], s["patched"]) == ("off", []), name
        if name != "routing":
            assert s["reason"] == "FAST_LITELLM_DISABLE=1"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "variable, value",
    [(v, "sometimes") for v in COMPONENT_FLAGS]
    + [("FAST_LITELLM_DISABLE", "maybe"), ("FAST_LITELLM_BREAKER_THRESHOLD", "0"), ("FAST_LITELLM_SHM_CAPACITY", "x")],
)
def test_a_bad_value_stops_the_import_naming_the_variable(variable, value):
    with pytest.raises(AssertionError) as failed:
        run_python(STATUS, {variable: value})
    assert "ConfigError" in str(failed.value) and variable in str(failed.value)


@pytest.mark.timeout(120)
def test_routing_is_not_shipped_and_its_flag_says_so_loudly():
    code = """
import logging, io
stream = io.StringIO()
logging.getLogger("fast_litellm").addHandler(logging.StreamHandler(stream))
logging.getLogger("fast_litellm").setLevel(logging.INFO)
import fast_litellm
emit({"log": stream.getvalue(), "routing": fast_litellm.status()["routing"]})
"""
    on = run_python(code, {"FAST_LITELLM_RUST_ROUTING": "true", "FAST_LITELLM_SHM": "off"})
    assert "FAST_LITELLM_RUST_ROUTING=on has no effect" in on["log"]
    assert on["routing"]["state"] == "off" and "not shipped" in on["routing"]["reason"]
    default = run_python(code, {"FAST_LITELLM_SHM": "off"})
    assert "FAST_LITELLM_RUST_ROUTING" not in default["log"]


ORDER = """
import importlib
first, second = {order}
importlib.import_module(first)
importlib.import_module(second)
import fast_litellm
from litellm.proxy.hooks.parallel_request_limiter_v3 import _PROXY_MaxParallelRequestsHandler_v3 as Limiter
from litellm.router_utils.client_initalization_utils import MaxParallelRequestsLimit
status = fast_litellm.status()
status.pop("litellm")
patched = {{
    "limiter": hasattr(Limiter.__dict__["in_memory_cache_sliding_window"], "__fast_litellm_original__"),
    "slots": hasattr(MaxParallelRequestsLimit.__dict__["acquire"], "__fast_litellm_original__"),
}}
fast_litellm.remove_acceleration()
restored = not any(hasattr(v, "__fast_litellm_original__")
                   for cls in (Limiter, MaxParallelRequestsLimit) for v in vars(cls).values())
emit({{"states": {{k: v["state"] for k, v in status.items()}}, "patched": patched, "restored": restored}})
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("order", [("fast_litellm", "litellm"), ("litellm", "fast_litellm")])
def test_import_order_does_not_matter_and_remove_restores(order, region_path):
    out = run_python(ORDER.format(order=order), {"FAST_LITELLM_SHM": region_path})
    assert out["states"] == {
        "rate_limiter": "on", "router": "on", "connection_pool": "on",
        "token_counting": "on", "batch_token_counting": "on", "auth_otel_import": "on", "gc_freeze": "on",
        "routing": "off",
    }
    assert out["patched"] == {"limiter": True, "slots": True}
    assert out["restored"], "remove_acceleration() put every original back"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variable, component", [
    ("FAST_LITELLM_RUST_RATE_LIMITING", "rate_limiter"),
    ("FAST_LITELLM_RUST_ROUTER", "router"),
    ("FAST_LITELLM_RUST_CONNECTION_POOL", "connection_pool"),
    ("FAST_LITELLM_RUST_TOKEN_COUNTING", "token_counting"),
    ("FAST_LITELLM_BATCH_TOKEN_COUNTING", "batch_token_counting"),
    ("FAST_LITELLM_AUTH_OTEL_IMPORT", "auth_otel_import"),
    ("FAST_LITELLM_GC_FREEZE", "gc_freeze"),
])
def test_each_component_flag_turns_its_component_off_alone(variable, component, region_path):
    out = run_python(STATUS, {"FAST_LITELLM_SHM": region_path, variable: "false"})
    states = {k: v["state"] for k, v in out["status"].items()}
    assert states.pop(component) == "off" and out["status"][component]["patched"] == []
    assert set(states.values()) - {"off"} == {"on"} and states["routing"] == "off"
