#!/usr/bin/env bash
# The README's main command: sets up .venv (the build, LiteLLM with the proxy extras), then
# runs LiteLLM's own proxy CLI through the launcher, `fast-litellm --run_gunicorn
# --num_workers 3`: several workers sharing one region, the demo config, and the bundled mock
# OpenAI-compatible upstream on 127.0.0.1 (no API key, no internet). Ctrl-C stops everything
# it started.
#   FL_DEMO_PORT (4000), FL_DEMO_UPSTREAM_PORT (8901), WEB_CONCURRENCY (3 workers),
#   FAST_LITELLM_SHM (unset: the launcher's /dev/shm/fast_litellm-proxy.<pid>, removed on exit)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

port=${FL_DEMO_PORT:-4000}
upstream_port=${FL_DEMO_UPSTREAM_PORT:-8901}
workers=${WEB_CONCURRENCY:-3}
export LITELLM_LOCAL_MODEL_COST_MAP=True
export FL_DEMO_UPSTREAM=http://127.0.0.1:$upstream_port/v1

# The proxy and the mock run in sessions of their own, so a terminal's Ctrl-C reaches only this
# script, which stops them with SIGTERM: gunicorn's graceful stop, not SIGINT in every worker
# (which gunicorn logs as errors). The demo then exits 0, so make reports no error.
pids=()
stop() {
    trap - EXIT INT TERM
    echo
    echo "stopping the proxy and the mock upstream (gunicorn logs each worker's graceful exit as" \
         "'[ERROR] Worker ... was sent SIGTERM!', and uvicorn 'Error while closing socket [Errno 9]':" \
         "their normal stop, the same with plain \`litellm --run_gunicorn\`)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # gunicorn stops gracefully; a worker still starting can hold that up (on a loaded
    # machine), so after 20 s whatever is left of their sessions is killed.
    for _ in $(seq 200); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    if [ "$alive" = 1 ]; then
        echo "still running after 20 s: killing the proxy's and the mock's process groups"
        for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    fi
    wait "${pids[@]}" 2>/dev/null || true
    if [ -n "${region:-}" ] && [ -e "$region" ]; then
        echo "stopped; the region file $region stays (FAST_LITELLM_SHM names it): rm it while no proxy uses it"
    else
        echo "stopped; the region file is removed"
    fi
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

setsid .venv/bin/python deploy/mock_upstream.py --port "$upstream_port" &
mock_pid=$!
pids+=($mock_pid)
setsid .venv/bin/fast-litellm --config deploy/demo-config.yaml --run_gunicorn --num_workers "$workers" \
    --host 127.0.0.1 --port "$port" &
proxy_pid=$!
pids+=($proxy_pid)
region=${FAST_LITELLM_SHM:-/dev/shm/fast_litellm-proxy.$proxy_pid}  # the launcher becomes litellm: same pid

# Ready when the proxy answers its liveness route (about 10 s on 2 cores); not if it or the
# mock exited (a port taken, a bad setting: the reason is in the output above).
.venv/bin/python - "$port" "$proxy_pid" "$mock_pid" "$upstream_port" <<'EOF'
import os, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/health/liveliness"
deadline = time.time() + 120
while time.time() < deadline:
    for pid, what in ((sys.argv[2], "the proxy"), (sys.argv[3], f"the mock upstream on port {sys.argv[4]}")):
        try:  # an exited child of the script stays a zombie until the script waits for it
            with open(f"/proc/{pid}/stat") as f:
                exited = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            exited = True
        if exited:
            sys.exit(f"{what} exited at start; its output is above")
    try:
        urllib.request.urlopen(url, timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("the proxy did not become ready within 120 s")
EOF

cat <<EOF

The accelerated LiteLLM proxy is up on http://127.0.0.1:$port ($workers workers, region $region),
its upstream is the mock on $FL_DEMO_UPSTREAM. A key sk-<name>-rpm<N> is limited to N requests a minute.

  Send a request:
    curl -s http://127.0.0.1:$port/v1/chat/completions -H 'Authorization: Bearer sk-demo-hello' \\
         -H 'Content-Type: application/json' -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}'

  See the limit hold across all $workers workers (10 x 200, then 429):
    for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$port/v1/chat/completions \\
         -H 'Authorization: Bearer sk-demo-rpm10' -H 'Content-Type: application/json' \\
         -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}'; done; echo

  Look inside the shared region (read-only):
    .venv/bin/fl-shm-inspect $region --top 10

Ctrl-C stops the proxy and the mock upstream.
EOF
wait "${pids[@]}"
