#!/usr/bin/env bash
# Creates .venv (if missing), installs the pinned test dependencies and builds the extension
# into it. Needs only python3 (3.9+) and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --release -q
