#!/usr/bin/env bash
# Creates .venv (if missing), installs the pinned test dependencies and builds the extension
# into it. Needs only python3 (3.9+) and a Rust toolchain. Each step is skipped when nothing
# it depends on changed since it last ran, so a running test process never has its loaded
# extension rewritten by a later `make demo` or `make test` (and repeated calls are quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
installed=.venv/.requirements-installed
if [ ! -e "$installed" ] || [ requirements-test.txt -nt "$installed" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
    touch "$installed"
fi
extension=python/fast_litellm/_native.abi3.so
built=.venv/.extension-built
if [ ! -e "$extension" ] || [ ! -e "$built" ] || [ -n "$(find src Cargo.toml Cargo.lock pyproject.toml -newer "$built" -print -quit)" ]; then
    VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --release -q
    touch "$built"
fi
