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
# Another apt or dpkg may hold the lock (unattended upgrades, a parallel job): wait for it.
APT="$SUDO apt-get -o DPkg::Lock::Timeout=300"
$APT install -y -q redis-server >/dev/null || { $APT update -q >/dev/null && $APT install -y -q redis-server >/dev/null; }
# The package may start a system service; the benchmark runs its own on a free port.
