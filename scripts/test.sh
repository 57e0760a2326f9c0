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
.venv/bin/python -m pytest -q --durations=15 tests
if [ "${MATRIX:-1}" != 0 ]; then
    scripts/matrix.sh
fi
