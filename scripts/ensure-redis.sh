#!/usr/bin/env bash
# redis-server for the benchmarks' Redis rows, from Debian's packages (the only source this
# project uses besides PyPI and crates.io). The benchmark starts and stops its own server.
set -euo pipefail
if command -v redis-server >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "redis-server missing and no apt-get: install redis-server (>= 6) yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get install -y -q redis-server >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
# The package may start a system service; the benchmark runs its own on a free port.
