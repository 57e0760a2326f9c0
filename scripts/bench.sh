#!/usr/bin/env bash
# Every benchmark: criterion over the engine, then the Python side-by-sides against LiteLLM
# (counters, then the proxy limiter in-memory and with Redis, then whole proxies sharing a
# Redis, then the whole proxy and a py-spy profile of one worker). Arguments (--quick) go to
# the Python benchmarks but the profile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-bench.txt
scripts/ensure-redis.sh
cargo bench --bench table
export LITELLM_LOCAL_MODEL_COST_MAP=True FAST_LITELLM_SHM=off
.venv/bin/python benches/bench_shm.py "$@"
.venv/bin/python benches/bench_limiter.py "$@"
.venv/bin/python benches/bench_host_tier.py "$@"
.venv/bin/python benches/bench_host_tier_proxy.py "$@"
.venv/bin/python benches/bench_tokens.py "$@"
.venv/bin/python benches/bench_proxy.py "$@"
.venv/bin/python benches/profile_proxy.py
