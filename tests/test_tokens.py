"""Token counting: fast_litellm's counts against the unpatched LiteLLM's, on thousands of
generated calls, each side in its own fresh interpreter (FAST_LITELLM_DISABLE=1 for LiteLLM
alone); plus the GIL, fork, the batch API, flags and fallback."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from subproc import run_python
from token_cases import cases

HERE = os.path.dirname(os.path.abspath(__file__))

#: Generated cases per parity run: FL_TOKEN_CASES (the CI version matrix sets a few hundred),
#: 4000 when unset; the chunking test runs a sixth of it (600 by default).
N_CASES = int(os.environ.get("FL_TOKEN_CASES", "") or 4000)
N_CHUNKING_CASES = max(1, N_CASES // 6) if os.environ.get("FL_TOKEN_CASES") else 600

# The child: counts every case of a JSON file with litellm.token_counter and reports each
# result (or the exception's type) and whether fast_litellm declined it.
COUNT_CASES = r"""
import json, os, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
if os.environ.get("FAST_LITELLM_DISABLE") != "1":
    import fast_litellm
import inspect
import litellm
from litellm.litellm_core_utils import token_counter as core
from litellm.types.utils import Message

# 1.106 on; before, there is nothing to compare.
messages_reach_token_count = getattr(core, "messages_reach_token_count", None)

# A name LiteLLM maps to p50k_base once it is a known chat model; the same in both children.
litellm.open_ai_chat_completion_models.add("text-davinci-003")

def revive(value):
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(revive(v) for v in value["__tuple__"])
        if "__pydantic_message__" in value:
            return Message(**value["__pydantic_message__"])
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value

component = None
if os.environ.get("FAST_LITELLM_DISABLE") != "1":
    from fast_litellm import _acceleration
    component = _acceleration._components["token_counting"]

with open(os.environ["CASES_FILE"]) as f:
    all_cases = json.load(f)
results = []
for case in all_cases:
    kwargs = revive(case["kwargs"])
    declined = component.declined if component else 0
    try:
        value = ["ok", litellm.token_counter(**kwargs)]
    except Exception as e:
        value = ["error", type(e).__name__]
    reach = None
    if messages_reach_token_count and "messages" in kwargs and "text" not in kwargs and isinstance(kwargs.get("model"), str):
        try:
            reach = messages_reach_token_count(kwargs["model"], kwargs["messages"], 50, tools=kwargs.get("tools"))
        except Exception as e:
            reach = type(e).__name__
    results.append({"id": case["id"], "value": value, "reach": reach,
                    "declined": bool(component and component.declined > declined)})
errors = component.errors if component else 0
emit({"results": results, "errors": errors, "parameters": list(inspect.signature(litellm.token_counter).parameters)})
"""


def _count(tmp_path, case_list, env):
    path = tmp_path / f"cases-{len(case_list)}.json"
    path.write_text(json.dumps(case_list))
    child_env = {"CASES_FILE": str(path), "TESTS_DIR": HERE, **env}
    return run_python(COUNT_CASES, env=child_env, timeout=900)


def _short(case):
    text = json.dumps(case["kwargs"], ensure_ascii=True)
    return text if len(text) < 600 else text[:600] + f"... ({len(text)} chars)"


def _assert_parity(tmp_path, case_list, env=None):
    env = env or {}
    litellm_alone = _count(tmp_path, case_list, {**env, "FAST_LITELLM_DISABLE": "1"})
    accelerated = _count(tmp_path, case_list, env)
    mismatches = []
    for case, want, got in zip(case_list, litellm_alone["results"], accelerated["results"]):
        if want["value"] != got["value"] or want["reach"] != got["reach"]:
            mismatches.append(f"case {case['id']}: LiteLLM {want['value']} {want['reach']}, "
                              f"fast_litellm {got['value']} {got['reach']}\n  {_short(case)}")
    assert not mismatches, f"{len(mismatches)} of {len(case_list)} differ:\n" + "\n".join(mismatches[:20])
    # The accelerated side must really have counted: every plain case in the native call
    # (one with a parameter this LiteLLM lacks is refused by LiteLLM itself).
    parameters = set(accelerated["parameters"])
    fast = [c["fast"] and set(c.get("needs", ())) <= parameters for c in case_list]
    slow = [c["id"] for c, f, r in zip(case_list, fast, accelerated["results"]) if f and r["declined"]]
    assert not slow, f"cases declined that fast_litellm must count itself: {slow[:20]}"
    assert accelerated["errors"] == 0
    return accelerated


def test_parity_with_unpatched_litellm_on_generated_cases(tmp_path):
    case_list = cases(seed=20261130, n=N_CASES)
    accelerated = _assert_parity(tmp_path, case_list)
    handled = sum(1 for r in accelerated["results"] if not r["declined"])
    assert handled >= 0.75 * len(case_list), f"only {handled} of {len(case_list)} counted natively"
    assert sum(1 for c in case_list if not c["fast"]) >= len(case_list) // 40  # the declines are exercised too


def test_parity_with_litellm_chunking_constants_changed(tmp_path):
    """LiteLLM reads its chunk size and exact-count limit from the environment; with small
    values every long text is chunked many times and extrapolated from samples."""
    env = {"TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS": "37", "TOKEN_COUNTER_MAX_EXACT_CHARS": "500"}
    _assert_parity(tmp_path, cases(seed=7, n=N_CHUNKING_CASES), env)


def test_huge_inputs_and_lone_surrogates(tmp_path):
    long_text = "".join(f"token {i} é 字 🙂\n" for i in range(260_000))  # > 4,000,000 chars
    assert len(long_text) > 4_000_000
    case_list = [
        {"id": 0, "kwargs": {"model": "gpt-4o", "text": long_text}, "fast": True},
        {"id": 1, "kwargs": {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": long_text[:3_000_000]}]}, "fast": True},
        {"id": 2, "kwargs": {"model": "gpt-4o", "text": "a\ud800b\udfffc\ud83d\ude00" * 700}, "fast": True},
        {"id": 3, "kwargs": {"model": "gpt-4o", "text": ""}, "fast": True},
        {"id": 4, "kwargs": {"model": "gpt-4o", "messages": []}, "fast": True},
    ]
    _assert_parity(tmp_path, case_list)


GIL_CHECK = r"""
import threading, time
import fast_litellm, litellm
text = "lorem ipsum dolor sit amet, 字 é 🙂 " * 100_000   # ~3.4 M chars
litellm.token_counter(model="gpt-4o", text="warm up the encoder")
inside = {}
def count():
    inside["start"] = time.perf_counter()
    inside["tokens"] = litellm.token_counter(model="gpt-4o", text=text)
    inside["end"] = time.perf_counter()
worker = threading.Thread(target=count)
ticks = []
worker.start()
while worker.is_alive():
    ticks.append(time.perf_counter())
worker.join()
during = sum(1 for t in ticks if inside["start"] < t < inside["end"])
emit({"during": during, "seconds": inside["end"] - inside["start"], "tokens": inside["tokens"]})
"""


def test_gil_is_released_while_a_long_text_is_counted():
    """While one thread counts a long text, another thread keeps running Python: with the GIL
    held through the count it would run not at all until the count ends."""
    got = run_python(GIL_CHECK, env={"FAST_LITELLM_SHM": "off"})
    assert got["tokens"] > 100_000
    assert got["seconds"] > 0.05
    assert got["during"] > 1000, got


FORK_CHECK = r"""
import os
import fast_litellm, litellm
text = "Hello, world! Fork safety. " * 50
before = litellm.token_counter(model="gpt-4o", text=text)   # the parent loads the encoder
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    import threading
    got = []
    t = threading.Thread(target=lambda: got.append(litellm.token_counter(model="gpt-4o", text=text)))
    t.start(); t.join(30)
    os.write(w, str(got[0] if got else -1).encode()); os._exit(0)
os.close(w)
child = int(os.read(r, 64).decode())
os.waitpid(pid, 0)
emit({"parent": before, "child": child})
"""


def test_a_forked_child_counts_in_a_thread_after_the_parent_loaded_the_encoder():
    got = run_python(FORK_CHECK, env={"FAST_LITELLM_SHM": "off"}, timeout=60)
    assert got["child"] == got["parent"] > 0


FORK_DURING_LOAD = r"""
import os, threading, time
import fast_litellm
from fast_litellm import _native
counter = _native.TokenCounter("o200k_base")
loader = threading.Thread(target=counter.preload)   # the load runs with the GIL released
loader.start()
time.sleep(0.005)                                    # fork while it loads (~50 ms)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, str(counter.count("Hello from the child of a fork during a load")).encode())
    os._exit(0)
os.close(w)
child = int(os.read(r, 64).decode() or -1)
os.waitpid(pid, 0)
loader.join()
emit({"child": child, "parent": counter.count("Hello from the child of a fork during a load")})
"""


def test_a_fork_while_another_thread_loads_an_encoder_leaves_the_child_able_to_count():
    """bpe-openai builds encoders in a LazyLock; a child forked mid-build would wait on it
    forever, so a fork waits for the load to finish (the timeout is the failure)."""
    for _ in range(3):
        got = run_python(FORK_DURING_LOAD, env={"FAST_LITELLM_SHM": "off"}, timeout=60)
        assert got["child"] == got["parent"] > 0


BATCH_CHECK = r"""
import random
import fast_litellm, litellm
from fast_litellm import _acceleration, tokens
rng = random.Random(3)
texts = ["".join(rng.choice(["word ", "é", "字", "🙂", "\n", "<|endoftext|>", "  "]) for _ in range(rng.randint(0, 3000)))
         for _ in range(1000)]
texts += ["x" * 5000, ""]
out = {}
for model in ["gpt-4o", "gpt-3.5-turbo", "unknown", None, "claude-haiku-4-5"]:
    one_by_one = [litellm.token_counter(model=model, text=t) for t in texts]
    out[str(model)] = fast_litellm.count_tokens_batch(model, texts) == one_by_one
component = _acceleration._components["batch_token_counting"]
out["calls"], out["declined"] = component.calls, component.declined
out["tuple"] = fast_litellm.count_tokens_batch("gpt-4o", ("a b", "c")) == [litellm.token_counter(model="gpt-4o", text=t) for t in ("a b", "c")]
for bad in ("one string", ["ok", 3]):
    try:
        fast_litellm.count_tokens_batch("gpt-4o", bad)
        out[repr(bad)] = "no error"
    except TypeError as e:
        out[repr(bad)] = str(e)
litellm.disable_token_counter = True
out["disabled"] = fast_litellm.count_tokens_batch("gpt-4o", ["a", "b"])
emit(out)
"""


@pytest.mark.parametrize("flag", ["true", "false"])
def test_count_tokens_batch_equals_token_counter_one_at_a_time(flag):
    got = run_python(BATCH_CHECK, env={"FAST_LITELLM_SHM": "off", "FAST_LITELLM_BATCH_TOKEN_COUNTING": flag})
    for model in ["gpt-4o", "gpt-3.5-turbo", "unknown", "None", "claude-haiku-4-5"]:
        assert got[model] is True, model
    assert got["tuple"] is True
    if flag == "true":
        assert got["calls"] >= 4 and got["declined"] == 1  # the Hugging Face model went one at a time
    else:
        assert got["calls"] == 0
    assert "not one str" in got["'one string'"]
    assert "texts[1] is int" in got["['ok', 3]"]
    assert got["disabled"] == [0, 0]


FLAG_CHECK = r"""
import fast_litellm, litellm
from fast_litellm import _acceleration
msgs = [{"role": "user", "content": "Hello there, how are you?"}]
values = [litellm.token_counter(model="gpt-4o", messages=msgs) for _ in range(200)]
c = _acceleration._components["token_counting"]
emit({"values": sorted(set(values)), "calls": c.calls, "state": fast_litellm.status()["token_counting"]["state"],
      "patched": litellm.token_counter is not litellm.token_counter.__dict__.get("__fast_litellm_original__")})
"""


# Calls counted by the component: each token_counter call taken, plus, for one not taken,
# the `_get_count_function` call of LiteLLM's own function when that one is taken (rollout).
@pytest.mark.parametrize(
    "flag, calls",
    [("true", (200, 200)), ("false", (0, 0)), ("rollout:50", (40, 190)), ("canary:0", (0, 0))],
)
def test_token_counting_flag(flag, calls):
    got = run_python(FLAG_CHECK, env={"FAST_LITELLM_SHM": "off", "FAST_LITELLM_RUST_TOKEN_COUNTING": flag})
    assert len(got["values"]) == 1  # the same count whichever way each call went
    assert calls[0] <= got["calls"] <= calls[1]


def test_bad_flag_value_is_refused_at_import():
    for variable in ("FAST_LITELLM_RUST_TOKEN_COUNTING", "FAST_LITELLM_BATCH_TOKEN_COUNTING"):
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", FAST_LITELLM_SHM="off", **{variable: "mostly"})
        proc = subprocess.run([sys.executable, "-c", "import fast_litellm"], env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        assert "ConfigError" in proc.stderr and variable in proc.stderr


FALLBACK_CHECK = r"""
import fast_litellm, litellm
from fast_litellm import _acceleration, tokens
msgs = [{"role": "user", "content": "Hello there, how are you?"}]
want = litellm.token_counter(model="gpt-4o", messages=msgs)
def broken(self, model, custom_tokenizer):
    raise RuntimeError("injected")
# An accelerated path that raises: the original counts the same call; the breaker opens.
tokens._LiteLLM.plan = broken
c = _acceleration._components["token_counting"]
got = [litellm.token_counter(model="gpt-4o", messages=msgs) for _ in range(12)]
emit({"want": want, "got": sorted(set(got)), "errors": c.errors, "breaker": c.breaker_open,
      "state": fast_litellm.status()["token_counting"]["state"]})
"""


def test_an_error_in_the_fast_path_falls_back_on_the_same_call_and_trips_the_breaker():
    got = run_python(FALLBACK_CHECK, env={"FAST_LITELLM_SHM": "off", "FAST_LITELLM_BREAKER_THRESHOLD": "5"})
    assert got["got"] == [got["want"]]
    assert got["errors"] == 5 and got["breaker"] is True and got["state"] == "off"


REMOVE_CHECK = r"""
import litellm
import litellm.utils
from litellm.litellm_core_utils import token_counter as core
before = (litellm.utils.token_counter, core.token_counter, core._get_count_function)
import fast_litellm
# litellm.token_counter is LiteLLM's own utils function, which calls the (patched) core one.
patched = (litellm.utils.token_counter is before[0], core.token_counter is not before[1],
           core._get_count_function is not before[2], litellm.token_counter is litellm.utils.token_counter,
           # get_token_counter_new from 1.106 on, _get_token_counter_new before
           (getattr(litellm.utils, "get_token_counter_new", None) or litellm.utils._get_token_counter_new)()
           is core.token_counter)
fast_litellm.remove_acceleration()
after = (litellm.utils.token_counter, core.token_counter, core._get_count_function)
emit({"patched": patched, "restored": [a is b for a, b in zip(after, before)]})
"""


def test_import_after_litellm_patches_every_copy_and_remove_restores():
    got = run_python(REMOVE_CHECK, env={"FAST_LITELLM_SHM": "off"})
    assert got["patched"] == [True, True, True, True, True]
    assert got["restored"] == [True, True, True]


# Inputs JSON cannot carry, built afresh in each child: iterators (which reading would use
# up), objects whose __bool__ / __str__ / model_dump raise, LiteLLM settings changed at run
# time. Each case is a function returning the call's kwargs, called right before the count.
ODD_CASES = r"""
import itertools
import litellm
import litellm.litellm_core_utils.token_counter as core
from litellm.types.utils import Message

IMAGE = {"role": "user", "content": [{"type": "text", "text": "what is this?"},
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}
SYSTEM = {"role": "system", "content": "You are helpful"}
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]

class Raises:
    def __bool__(self): raise RuntimeError("no bool")
    def __str__(self): raise RuntimeError("no str")

recursive = {"type": "object"}
recursive["properties"] = {"x": recursive}

def set_default_image(n):
    core.DEFAULT_IMAGE_TOKEN_COUNT = n
    return {"model": "gpt-4o", "use_default_image_token_count": True,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "high"}}]}]}

def swap_model_lists():
    s = litellm.open_ai_chat_completion_models
    s.discard("gpt-4"); s.add("text-davinci-002")   # same size, another encoding for this name
    return {"model": "text-davinci-002", "text": "  indented\n\tcode  with   spaces " * 5}

CASES = [
    lambda: {"model": "gpt-4o", "messages": itertools.chain([SYSTEM], [IMAGE])},
    lambda: {"model": "gpt-4o", "messages": (m for m in [{"role": "user", "content": "hello there"}, "notadict"])},
    lambda: {"model": "gpt-4o", "messages": iter([SYSTEM, {"role": "user", "content": "hi"}]), "tools": TOOLS},
    lambda: {"model": "gpt-4o", "messages": map(dict, [SYSTEM]), "tools": iter(TOOLS)},
    lambda: {"model": "gpt-4o", "messages": [SYSTEM], "tools": iter(TOOLS)},
    lambda: {"model": "gpt-4o", "messages": (Message(role="user", content="hi"),)},
    lambda: {"model": "gpt-4o", "messages": [SYSTEM], "tools": [{"type": "function", "function": {"name": "f", "parameters": recursive}}]},
    lambda: {"model": "gpt-4o", "messages": [SYSTEM], "tool_choice": {"function": {"name": Raises()}}},
    lambda: {"model": "gpt-4o", "messages": [SYSTEM], "tools": Raises()},
    lambda: {"model": "gpt-4o", "messages": [SYSTEM], "use_default_image_token_count": Raises()},
    lambda: {"model": "text-davinci-002", "text": "  indented\n\tcode  with   spaces " * 5},
    swap_model_lists,
    lambda: set_default_image(100),
]
results = []
for make in CASES:
    try:
        results.append(["ok", litellm.token_counter(**make())])
    except Exception as e:
        results.append(["error", type(e).__name__])
errors = 0
if os.environ.get("FAST_LITELLM_DISABLE") != "1":
    from fast_litellm import _acceleration
    errors = _acceleration._components["token_counting"].errors
emit({"results": results, "errors": errors})
"""


def test_iterators_raising_objects_and_settings_changed_at_run_time():
    alone = run_python("import os\n" + ODD_CASES, env={"FAST_LITELLM_DISABLE": "1", "FAST_LITELLM_SHM": "off"})
    accelerated = run_python("import os, fast_litellm\n" + ODD_CASES, env={"FAST_LITELLM_SHM": "off"})
    assert accelerated["results"] == alone["results"]
    assert accelerated["errors"] == 0  # declined, not failed: the breaker is not fed by callers' inputs


SHAPE_CHANGED = r"""
import logging
from litellm.litellm_core_utils import token_counter as core
warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("fast_litellm").addHandler(Keep(logging.WARNING))
# A LiteLLM whose _count_extra takes a parameter no release in the range has.
def _count_extra(count_function, tools, tool_choice, includes_system_message, tool_section=None, something_new=None):
    return 3
core._count_extra = _count_extra
import fast_litellm
status = fast_litellm.status()
emit({"states": [status[n]["state"] for n in ("token_counting", "batch_token_counting")],
      "reason": status["token_counting"]["reason"], "warnings": [w for w in warnings if "_count_extra" in w]})
"""


def test_a_changed_litellm_shape_leaves_token_counting_off_with_a_warning_naming_it():
    got = run_python(SHAPE_CHANGED, env={"FAST_LITELLM_SHM": "off"})
    assert got["states"] == ["off", "off"]
    assert "_count_extra" in got["reason"] and "something_new" in got["reason"]
    assert len(got["warnings"]) == 2 and all("something_new" in w for w in got["warnings"])
