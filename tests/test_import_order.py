"""The import-order trap: what LiteLLM objects made before `import fast_litellm` kept of
LiteLLM's own functions is logged at ERROR, by name, and so is a server worker that imported
fast_litellm on its own with an anonymous region (its limits would be its own)."""

import os
import subprocess
import sys
import textwrap

from subproc import run_python

CAPTURE = """
import io, logging
stream = io.StringIO()
logging.getLogger("fast_litellm").addHandler(logging.StreamHandler(stream))
logging.getLogger("fast_litellm").setLevel(logging.INFO)
"""

EARLY_OBJECTS = CAPTURE + """
import litellm
from litellm.router import Router
keep = {keep}
if keep:
    from litellm.litellm_core_utils import token_counter as core
    counters = [core.token_counter]           # a callback list filled before the import
    router = Router(model_list=[{{"model_name": "m", "litellm_params": {{
        "model": "openai/x", "api_key": "k", "api_base": "http://127.0.0.1:9/v1"}}}}])
    on_failure = router.async_deployment_callback_on_failure   # a bound method kept aside
import fast_litellm
emit([line for line in stream.getvalue().splitlines() if "IMPORT ORDER" in line])
"""


def test_litellm_first_with_nothing_kept_is_not_reported(region_path):
    assert run_python(EARLY_OBJECTS.format(keep=False), {"FAST_LITELLM_SHM": region_path}) == []


def test_objects_made_before_the_import_that_keep_originals_are_named(region_path):
    lines = run_python(EARLY_OBJECTS.format(keep=True), {"FAST_LITELLM_SHM": region_path})
    assert any("litellm.litellm_core_utils.token_counter.token_counter is still held by a list" in line
               for line in lines), lines
    assert any("Router.async_deployment_callback_on_failure is still held by a bound method of a Router" in line
               for line in lines), lines
    assert len(lines) == 2, lines


WORKER = CAPTURE + """
import fast_litellm
emit([line for line in stream.getvalue().splitlines() if "IMPORT ORDER" in line])
"""


def _as_child_of(parent_name, env):
    """Runs WORKER as the child of a Python process whose argv[0] is `parent_name` next to
    this interpreter (how a worker sees a master started as .venv/bin/gunicorn)."""
    launcher = textwrap.dedent(f"""
        import sys
        sys.executable = {sys.executable!r}  # argv[0] made it look like the server's script
        from subproc import run_python
        print(repr(run_python({WORKER!r}, env={env!r})))
    """)
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), parent_name), "-c", launcher],
        executable=sys.executable,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr


def test_a_worker_with_its_own_anonymous_region_is_reported():
    lines = _as_child_of("gunicorn", {"FAST_LITELLM_SHM": ""})
    assert len(lines) == 1 and "imported in a worker of" in lines[0] and "FAST_LITELLM_SHM" in lines[0], lines


def test_a_worker_on_a_shared_region_file_or_a_plain_child_is_not(region_path):
    assert _as_child_of("gunicorn", {"FAST_LITELLM_SHM": region_path}) == []
    assert _as_child_of("python3", {"FAST_LITELLM_SHM": ""}) == []
