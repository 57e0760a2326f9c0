#!/usr/bin/env bash
# The version matrix: for the newest patch release of every LiteLLM minor in the tested range
# (python/fast_litellm/_compat.py, TESTED), a venv with exactly the pins of
# ci/locks/litellm-<version>.txt and the wheel built once from this commit, then the
# component tests there (`pytest -m matrix`, listed in tests/conftest.py). Prints a table and
# fails if any version fails. Run by scripts/test.sh after the full suite; MATRIX_VERSIONS
# ("1.104.9 1.110.2") picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf target/wheels
.venv/bin/maturin build --release -q -o target/wheels
wheel=$(ls target/wheels/fast_litellm-*.whl)
versions=${MATRIX_VERSIONS:-$(.venv/bin/python scripts/litellm_env.py versions | awk '{print $2}')}
export LITELLM_LOCAL_MODEL_COST_MAP=True FL_TOKEN_CASES=${FL_TOKEN_CASES:-300}
declare -A result
failed=0
for version in $versions; do
    venv=.matrix/$version
    start=$SECONDS
    .venv/bin/python scripts/litellm_env.py create "$venv" "$version" --lock "ci/locks/litellm-$version.txt"
    .venv/bin/python scripts/litellm_env.py wheel "$venv" "$wheel"
    echo "== LiteLLM $version: pytest -m matrix"
    # The repository's tests against the installed wheel (python/ is not on sys.path there).
    if "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=5 -m matrix tests; then
        result[$version]="passed in $((SECONDS - start)) s"
    else
        result[$version]="FAILED after $((SECONDS - start)) s"
        failed=1
    fi
done
echo
echo "version matrix (pytest -m matrix, FL_TOKEN_CASES=$FL_TOKEN_CASES):"
for version in $versions; do
    printf '  litellm %-10s %s\n' "$version" "${result[$version]}"
done
exit $failed
