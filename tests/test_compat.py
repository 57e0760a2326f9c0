"""The installed LiteLLM, whichever it is: every component turns on, and `status()` names the
version and whether it is inside the tested range (the version matrix runs this in each
minor). Outside the range, a component whose shape is unchanged turns on with a WARNING."""

import pytest

from subproc import run_python

pytestmark = pytest.mark.timeout(300)

STATUS = """
import io, logging
stream = io.StringIO()
logging.getLogger("fast_litellm").addHandler(logging.StreamHandler(stream))
{before}
import fast_litellm
emit({{"status": fast_litellm.status(), "log": stream.getvalue()}})
"""


def test_every_component_is_on_with_this_litellm(region_path):
    from importlib.metadata import version

    out = run_python(STATUS.format(before=""), {"FAST_LITELLM_SHM": region_path})
    status = out["status"]
    assert status.pop("litellm") == {"litellm": version("litellm"), "tested": True,
                                      "tested_range": "1.104 to 1.110 (not 1.107)"}
    states = {name: (s["state"], s["reason"]) for name, s in status.items()}
    assert states.pop("routing")[0] == "off"
    assert all(state == "on" for state, _ in states.values()), states
    assert "does not match" not in out["log"] and "outside the tested range" not in out["log"]


def test_an_untested_version_with_an_unchanged_shape_turns_on_with_a_warning(region_path):
    # The same LiteLLM reporting another version: every shape check still passes.
    before = ("import importlib.metadata as md\n_real = md.version\n"
              "md.version = lambda name: '1.199.0' if name == 'litellm' else _real(name)")
    out = run_python(STATUS.format(before=before), {"FAST_LITELLM_SHM": region_path})
    status = out["status"]
    assert status.pop("litellm") == {"litellm": "1.199.0", "tested": False, "tested_range": "1.104 to 1.110 (not 1.107)"}
    for name in ("rate_limiter", "router", "connection_pool", "token_counting"):
        assert status[name]["state"] == "on", status[name]
        assert f"fast_litellm: {name} on with LiteLLM 1.199.0, which is outside the tested range" in out["log"]
