#!/usr/bin/env python3
"""A venv with one LiteLLM release, its proxy's own dependencies, the test tools and the
fast_litellm wheel: what the version matrix (scripts/matrix.sh) and `make compat` run in.

    litellm_env.py create VENV VERSION --lock FILE     exactly the pins in FILE (CI)
    litellm_env.py create VENV VERSION [--freeze FILE] resolve now; write the pins to FILE
                                                       (VERSION "newest": the newest on the index)
    litellm_env.py wheel VENV WHEEL                    install the built fast_litellm wheel
    litellm_env.py versions                            the matrix: "minor newest-patch" lines

The proxy's dependencies are its `proxy` extra less LiteLLM's own sub-packages
(litellm-proxy, litellm-enterprise, litellm-proxy-extras): from 1.108.8 on the extra pins
versions of them that the package index does not have, and the proxy imports and serves
without them. Uses uv (requirements-test.txt) when it is beside this Python, else pip.
Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The test tools every matrix venv gets, pinned as in requirements-test.txt.
TEST_TOOLS = ("pytest", "pytest-timeout", "prometheus_client")
SUB_PACKAGES = ("litellm-proxy", "litellm-enterprise", "litellm-proxy-extras")

#: Run inside the new venv: the installed litellm's proxy extra, one requirement a line.
PROXY_REQUIREMENTS = """
from importlib.metadata import distribution
from packaging.requirements import Requirement
for raw in distribution("litellm").requires or []:
    req = Requirement(raw)
    if req.marker is None or req.marker.evaluate({"extra": ""}) or not req.marker.evaluate({"extra": "proxy"}):
        continue
    if req.name not in %r:
        print(str(req).split(";")[0].strip())
""" % (SUB_PACKAGES,)


def _uv() -> List[str]:
    uv = shutil.which("uv", path=os.path.dirname(sys.executable))
    return [uv] if uv else []


def _pip(venv: str, *args: str) -> None:
    python = os.path.join(venv, "bin", "python")
    uv = _uv()
    if uv:
        subprocess.run([*uv, "pip", "install", "-q", "--python", python, *args], check=True)
    else:
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def _test_tool_pins() -> List[str]:
    pins = []
    with open(os.path.join(ROOT, "requirements-test.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.split("==")[0].lower() in TEST_TOOLS:
                pins.append(line)
    return pins


def create(venv: str, version: str, lock: str = "", freeze: str = "") -> None:
    if os.path.exists(venv):
        shutil.rmtree(venv)
    uv = _uv()
    if uv:
        subprocess.run([*uv, "venv", "-q", "--python", sys.executable, venv], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if lock:
        _pip(venv, "--no-deps", "-r", lock)
        return
    litellm = "litellm" if version == "newest" else f"litellm=={version}"
    _pip(venv, litellm, *_test_tool_pins())
    python = os.path.join(venv, "bin", "python")
    proxy = subprocess.run([python, "-c", PROXY_REQUIREMENTS], check=True, capture_output=True, text=True)
    _pip(venv, litellm, *_test_tool_pins(), *proxy.stdout.split())
    if freeze:
        if uv:
            out = subprocess.run([*uv, "pip", "freeze", "--python", python], check=True, capture_output=True, text=True)
        else:
            out = subprocess.run([python, "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
        pins = [line for line in out.stdout.splitlines() if line and not line.startswith(("fast_litellm", "-e"))]
        with open(freeze, "w") as f:
            f.write(f"# litellm=={version}, its proxy's own dependencies and the test tools, as CI installs them\n")
            f.write(f"# (scripts/litellm_env.py create VENV {version} --freeze {os.path.relpath(freeze, ROOT)})\n")
            f.write("\n".join(pins) + "\n")


def versions() -> List[str]:
    compat = runpy.run_path(os.path.join(ROOT, "python", "fast_litellm", "_compat.py"))
    return [f"{minor} {patch}" for minor, patch, _ in compat["TESTED"]]


def main(argv: List[str]) -> int:
    if argv[:1] == ["versions"]:
        print("\n".join(versions()))
        return 0
    if argv[:1] == ["wheel"] and len(argv) == 3:
        _pip(argv[1], "--no-deps", "--force-reinstall", argv[2])
        return 0
    if argv[:1] == ["create"] and len(argv) in (3, 5) and (len(argv) == 3 or argv[3] in ("--lock", "--freeze")):
        option = dict(zip(argv[3::2], argv[4::2]))
        create(argv[1], argv[2], lock=option.get("--lock", ""), freeze=option.get("--freeze", ""))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
