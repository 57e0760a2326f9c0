"""Runs a function in N forked children that start together and report an integer each."""

import os
import struct


def run_forked(n, fn):
    go_r, go_w = os.pipe()
    results = []
    pids = []
    for i in range(n):
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(go_w)
                os.read(go_r, 1)  # blocks until the parent closes the write end: a start barrier
                value = fn(i)
                os.write(res_w, struct.pack("<q", value))
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(res_w)
        pids.append(pid)
        results.append(res_r)
    os.close(go_r)
    os.close(go_w)
    values = []
    for pid, res_r in zip(pids, results):
        data = b""
        while len(data) < 8:
            chunk = os.read(res_r, 8 - len(data))
            if not chunk:
                break
            data += chunk
        os.close(res_r)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"child {pid} failed"
        values.append(struct.unpack("<q", data)[0])
    return values
