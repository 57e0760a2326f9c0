#!/usr/bin/env bash
# Every benchmark: criterion over the engine, then the Python side-by-side against LiteLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo bench --bench table
export LITELLM_LOCAL_MODEL_COST_MAP=True FAST_LITELLM_SHM=off
.venv/bin/python benches/bench_shm.py "$@"
