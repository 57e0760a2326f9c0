#!/usr/bin/env bash
# `make compat`: the maintainer's first look at a new LiteLLM release. Installs the newest
# LiteLLM on the index (with its proxy's own dependencies) into .compat/, beside the wheel
# built from the current code, and prints each component: on, or off and why. Not part of CI
# (it follows the index, which moves). LITELLM_VERSION=1.110.2 looks at another release.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf target/wheels
.venv/bin/maturin build --release -q -o target/wheels
.venv/bin/python scripts/litellm_env.py create .compat "${LITELLM_VERSION:-newest}"
.venv/bin/python scripts/litellm_env.py wheel .compat target/wheels/fast_litellm-*.whl
LITELLM_LOCAL_MODEL_COST_MAP=True FAST_LITELLM_SHM= .compat/bin/python scripts/compat_table.py
