#!/usr/bin/env bash
# The README's main command: sets up .venv (the build, LiteLLM with the proxy extras), then
# runs the accelerated LiteLLM proxy under gunicorn --preload with several workers sharing one
# region, the demo config, and the bundled mock OpenAI-compatible upstream on 127.0.0.1 (no API
# key, no internet). Ctrl-C stops everything it started.
#   FL_DEMO_PORT (4000), FL_DEMO_UPSTREAM_PORT (8901), WEB_CONCURRENCY (3 workers),
#   FAST_LITELLM_SHM (/dev/shm/fl-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

port=${FL_DEMO_PORT:-4000}
upstream_port=${FL_DEMO_UPSTREAM_PORT:-8901}
export LITELLM_LOCAL_MODEL_COST_MAP=True
export FAST_LITELLM_SHM=${FAST_LITELLM_SHM:-/dev/shm/fl-demo}
export WEB_CONCURRENCY=${WEB_CONCURRENCY:-3}
export FL_BIND=127.0.0.1:$port
export FL_DEMO_UPSTREAM=http://127.0.0.1:$upstream_port/v1
export CONFIG_FILE_PATH=$PWD/deploy/demo-config.yaml

pids=()
stop() {
    trap - EXIT INT TERM
    echo
    echo "stopping the proxy and the mock upstream"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT INT TERM

.venv/bin/python deploy/mock_upstream.py --port "$upstream_port" &
pids+=($!)
.venv/bin/gunicorn --chdir deploy app:app -c deploy/gunicorn.conf.py &
pids+=($!)

# Ready when the proxy answers its liveness route (about 10 s on 2 cores).
.venv/bin/python - "$port" <<'EOF'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/health/liveliness"
deadline = time.time() + 120
while time.time() < deadline:
    try:
        urllib.request.urlopen(url, timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("the proxy did not become ready within 120 s")
EOF

cat <<EOF

The accelerated LiteLLM proxy is up on http://127.0.0.1:$port ($WEB_CONCURRENCY workers, region $FAST_LITELLM_SHM),
its upstream is the mock on $FL_DEMO_UPSTREAM. A key sk-<name>-rpm<N> is limited to N requests a minute.

  Send a request:
    curl -s http://127.0.0.1:$port/v1/chat/completions -H 'Authorization: Bearer sk-demo-rpm10' \\
         -H 'Content-Type: application/json' -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}'

  See the limit hold across all $WEB_CONCURRENCY workers (10 x 200, then 429):
    for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$port/v1/chat/completions \\
         -H 'Authorization: Bearer sk-demo-rpm10' -H 'Content-Type: application/json' \\
         -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}'; done; echo

  Look inside the shared region (read-only):
    .venv/bin/fl-shm-inspect $FAST_LITELLM_SHM --top 10

Ctrl-C stops the proxy and the mock upstream.
EOF
wait "${pids[@]}"
