"""A small OpenAI-compatible upstream on 127.0.0.1, for the demo and the end-to-end tests:
no API key, no internet.

    python deploy/mock_upstream.py [--port 8901] [--delay 0.0]

Endpoints: POST /v1/chat/completions (and /chat/completions; "stream": true answers as
server-sent events), GET /v1/models, GET /stats (requests, in flight now, most in flight at
once, per model), POST /reset. What a deployment gets is chosen by its model name:
"...slow..." answers after --delay seconds (default 1.0 for those), "...fail..." answers 500,
anything else answers at once with a fixed reply and its usage.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_model: Dict[str, Dict[str, int]] = {}

    def reset(self) -> None:
        with self.lock:
            self._clear()

    def enter(self, model: str) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            m = self.by_model.setdefault(model, {"requests": 0, "in_flight": 0, "max_in_flight": 0})
            m["requests"] += 1
            m["in_flight"] += 1
            m["max_in_flight"] = max(m["max_in_flight"], m["in_flight"])

    def leave(self, model: str) -> None:
        with self.lock:
            self.in_flight -= 1
            self.by_model[model]["in_flight"] -= 1

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "by_model": json.loads(json.dumps(self.by_model)),
            }


STATS = Stats()
SLOW_DELAY_S = 1.0


def completion(model: str, content: str) -> Dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _json(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "mock"}]})
        elif self.path == "/stats":
            self._json(200, STATS.snapshot())
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/reset":
            STATS.reset()
            self._json(200, {"ok": True})
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        model = str(body.get("model", "mock"))
        STATS.enter(model)
        try:
            if "slow" in model:
                time.sleep(SLOW_DELAY_S)
            if "fail" in model:
                self._json(500, {"error": {"message": "mock upstream failure", "type": "server_error"}})
                return
            reply = completion(model, "Hello from the mock upstream on 127.0.0.1.")
            if body.get("stream"):
                self._stream(reply)
            else:
                self._json(200, reply)
        finally:
            STATS.leave(model)

    def _stream(self, reply: Dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {k: reply[k] for k in ("id", "created", "model")}
        words = reply["choices"][0]["message"]["content"].split(" ")
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": word if i == 0 else " " + word}
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {**base, "object": "chat.completion.chunk", "usage": reply["usage"],
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True


class Server(ThreadingHTTPServer):
    #: socketserver's listen backlog is 5: a burst of new connections overflows it and waits
    #: for the kernel's 1 s SYN retry, which would show as the upstream's own latency.
    request_queue_size = 128


def serve(port: int) -> ThreadingHTTPServer:
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    global SLOW_DELAY_S
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8901)
    p.add_argument("--delay", type=float, default=1.0, help="seconds a 'slow' model waits before answering")
    args = p.parse_args()
    SLOW_DELAY_S = args.delay
    server = serve(args.port)
    print(f"mock upstream: http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
