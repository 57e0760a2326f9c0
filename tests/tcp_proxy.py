"""A TCP forwarder on 127.0.0.1 that a test can cut, to take one host off Redis while the
others still reach it: `hang` keeps every connection open and forwards nothing (a partition
that drops packets), `refuse` closes the listener and resets every connection (a host whose
route is gone). `restore()` forwards again on the same port. `reply_delay_s` holds each reply
that long before it reaches the client: a Redis across a network instead of on loopback
(benches/bench_host_tier.py --redis-rtt-ms)."""

import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream_port, reply_delay_s=0.0):
        self.upstream_port = upstream_port
        self.reply_delay_s = reply_delay_s
        self.port = None
        self.mode = "forward"
        self._lock = threading.Lock()
        self._conns = []
        self._listener = None
        self._listen()

    def _listen(self, port=0):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by cut("refuse") or close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.reply_delay_s), daemon=True).start()

    def _pipe(self, src, dst, delay_s=0.0):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self.mode == "forward":  # a hang drops what it reads: nothing reaches either side
                if delay_s:
                    time.sleep(delay_s)
                try:
                    dst.sendall(data)
                except OSError:
                    break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_all(self):
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                s.close()
            except OSError:
                pass

    def cut(self, how):
        assert how in ("hang", "refuse"), how
        self.mode = how
        if how == "refuse":
            self._listener.close()
            self._close_all()

    def restore(self):
        if self.mode == "refuse":
            self._listen(self.port)
        else:  # connections that saw a hang have lost bytes: the client reconnects
            self._close_all()
        self.mode = "forward"

    def close(self):
        self._listener.close()
        self._close_all()
