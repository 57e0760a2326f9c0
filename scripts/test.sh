#!/usr/bin/env bash
# Every test: the engine's cargo tests, then pytest against the built extension.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ensure-redis.sh
cargo test --release
export LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/python -m pytest -q tests
