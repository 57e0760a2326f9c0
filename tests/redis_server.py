"""A real redis-server on loopback for the host-tier tests: started per test on a free port,
no persistence, stopped (or found dead) at the end."""

import shutil
import socket
import subprocess
import time
from typing import Dict

import pytest


class RedisServer:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def calls(self) -> Dict[str, int]:
        """Commands run so far, by name (INFO commandstats): scripts count as evalsha/eval."""
        stats = self.client().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def scripts_run(self) -> int:
        calls = self.calls()
        return calls.get("evalsha", 0) + calls.get("eval", 0)


def start() -> RedisServer:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: scripts/ensure-redis.sh installs it (make test runs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, process)
    deadline = time.time() + 30
    while True:
        try:
            if server.client().ping():
                return server
        except Exception:
            if process.poll() is not None or time.time() > deadline:
                raise
            time.sleep(0.05)
