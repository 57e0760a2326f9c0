#!/usr/bin/env bash
# The version matrix: for the newest patch release of every LiteLLM minor in the tested range
# (python/fast_litellm/_compat.py, TESTED), a venv with exactly the pins of
# ci/locks/litellm-<version>.txt and the wheel built once from this commit, then the
# component tests there (`pytest -m matrix`, listed in tests/conftest.py). Two releases run
# at a time (MATRIX_JOBS): the tests hold with both cores busy, and CI stays within its time.
# Prints each release's output and a table, and fails if any release fails. Run by
# scripts/test.sh after the full suite; MATRIX_VERSIONS ("1.104.9 1.110.2") picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf target/wheels
.venv/bin/maturin build --release -q -o target/wheels
wheel=$(ls target/wheels/fast_litellm-*.whl)
versions=${MATRIX_VERSIONS:-$(.venv/bin/python scripts/litellm_env.py versions | awk '{print $2}')}
export LITELLM_LOCAL_MODEL_COST_MAP=True FL_TOKEN_CASES=${FL_TOKEN_CASES:-300}
mkdir -p .matrix

one() {  # one release: its venv, the wheel, pytest -m matrix; output in .matrix/<v>.log
    local version=$1 venv=.matrix/$1 start=$SECONDS rc=0
    # `|| rc=$?`: under set -e a failing group would end this subshell before the result is written.
    {
        .venv/bin/python scripts/litellm_env.py create "$venv" "$version" --lock "ci/locks/litellm-$version.txt" &&
            .venv/bin/python scripts/litellm_env.py wheel "$venv" "$wheel" &&
            # The repository's tests against the installed wheel (python/ is not on sys.path there).
            "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=5 -m matrix tests
    } > ".matrix/$version.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - start))" > ".matrix/$version.result"
}

for version in $versions; do
    rm -f ".matrix/$version.result"
    one "$version" &
    while [ "$(jobs -rp | wc -l)" -ge "${MATRIX_JOBS:-2}" ]; do
        wait -n || true
    done
done
wait

failed=0
summary=()
for version in $versions; do
    echo "== LiteLLM $version: pytest -m matrix"
    cat ".matrix/$version.log"
    read -r rc seconds < ".matrix/$version.result" || { rc=1; seconds=?; }
    if [ "$rc" = 0 ]; then
        summary+=("$(printf '  litellm %-10s passed in %s s' "$version" "$seconds")")
    else
        summary+=("$(printf '  litellm %-10s FAILED after %s s' "$version" "$seconds")")
        failed=1
    fi
done
echo
echo "version matrix (pytest -m matrix, FL_TOKEN_CASES=$FL_TOKEN_CASES, ${MATRIX_JOBS:-2} at a time):"
printf '%s\n' "${summary[@]}"
exit $failed
