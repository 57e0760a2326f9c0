#!/usr/bin/env bash
# Every test: the engine's cargo tests, pytest against the built extension and the pinned
# LiteLLM (requirements-test.txt), then the version matrix (scripts/matrix.sh: the component
# tests in every LiteLLM minor of the tested range). MATRIX=0 skips the matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ensure-redis.sh
cargo test --release
export LITELLM_LOCAL_MODEL_COST_MAP=True
# Two pytest workers, a file each at a time (a file's tests share its fixtures and helpers):
# 696 s against 1,158 s one after another on this 2-core machine, where the suite kept about
# one core busy. The tests hold with both cores busy, which is what this makes them.
.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15 tests
if [ "${MATRIX:-1}" != 0 ]; then
    scripts/matrix.sh
fi
