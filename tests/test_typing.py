"""The package is typed: the native module's stub matches the real module, and the Python
sources type-check strictly against it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, FAST_LITELLM_SHM="off")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_stub_matches_the_native_module():
    out = run("mypy.stubtest", "fast_litellm._native")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_type_checks_strictly():
    out = run("mypy", "--strict", "--cache-dir", os.path.join(ROOT, ".mypy_cache"),
              os.path.join(ROOT, "python", "fast_litellm"), os.path.join(ROOT, "python", "fl_shm_inspect"),
              os.path.join(ROOT, "python", "fast_litellm_proxy"))
    assert out.returncode == 0, out.stdout + out.stderr
