"""connection_pool: real LiteLLM sends real requests to a local OpenAI-compatible server that
counts how many it serves at once. LiteLLM's per-connector aiohttp limit
(AIOHTTP_CONNECTOR_LIMIT_PER_HOST) becomes one limit for all the processes of the region.

Each scenario is a fresh interpreter that imports fast_litellm and LiteLLM once and then
forks its workers, as `gunicorn --preload` does."""

import asyncio
import json
import os
import textwrap
import threading
import uuid

import pytest
from aiohttp import web

from subproc import run_python

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def sse_chunk(content, finish_reason=None):
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


class FakeUpstream:
    """POST /<mode>/v1/chat/completions, mode: seconds to wait before answering, `fail` (500)
    or `stream` (5 chunks, 0.1 s apart). Counts the requests it serves at once, per mode."""

    def __init__(self):
        self.in_flight = {}
        self.max_in_flight = {}
        self.served = {}
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10)

    def _run(self, ready):
        app = web.Application()
        app.router.add_post("/{mode}/v1/chat/completions", self._handle)
        # A client that goes away (cancelled, killed) cancels its handler, and so its count.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def base(self, mode):
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    async def _handle(self, request):
        await request.read()
        mode = request.match_info["mode"]
        self.in_flight[mode] = self.in_flight.get(mode, 0) + 1
        self.served[mode] = self.served.get(mode, 0) + 1
        self.max_in_flight[mode] = max(self.max_in_flight.get(mode, 0), self.in_flight[mode])
        try:
            if mode == "fail":
                return web.json_response({"error": {"message": "upstream broke", "type": "server_error"}}, status=500)
            if mode == "stream":
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                for i in range(5):
                    await response.write(sse_chunk(f"part{i} "))
                    await asyncio.sleep(0.1)
                # A stream ends with a finish_reason (LiteLLM 1.110 raises on one without).
                await response.write(sse_chunk("", finish_reason="stop"))
                await response.write(b"data: [DONE]\n\n")
                return response
            await asyncio.sleep(float(mode))
            return web.json_response(COMPLETION)
        finally:
            self.in_flight[mode] -= 1

    def close(self):
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def upstream():
    server = FakeUpstream()
    yield server
    server.close()


# Loaded by every scenario: LiteLLM and fast_litellm imported once, then workers forked.
PRELUDE = """
import asyncio, json, os, signal, time, traceback
import fast_litellm, httpx, litellm
from fast_litellm import pool, shm

def ask(base, **kwargs):
    return litellm.acompletion(model="openai/gpt-4o", api_base=base, api_key="sk-test",
                               messages=[{"role": "user", "content": "hi"}], **kwargs)

def in_use(base):
    region = shm.region()
    return [region.slots_in_use(pool.upstream_key(httpx.URL(base))), region.slots_in_use(pool.TOTAL_KEY)]

class Worker:
    '''A forked process that runs `work(worker)`, a coroutine, and hands back its JSON result.
    Inside, `worker.signal()` tells the parent it is ready and `await worker.wait()` waits
    for the parent's `go()`.'''

    def __init__(self, work):
        self._to_child_r, self._to_child = os.pipe()
        self._from_child, self._from_child_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._to_child)
            os.close(self._from_child)
            code = 1
            try:
                result = asyncio.run(work(self))
                os.write(self._from_child_w, b"R" + json.dumps(result).encode())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(self._to_child_r)
        os.close(self._from_child_w)

    def signal(self):
        os.write(self._from_child_w, b"S")

    async def wait(self):
        await asyncio.get_running_loop().run_in_executor(None, os.read, self._to_child_r, 1)

    def wait_for_signal(self):
        assert os.read(self._from_child, 1) == b"S", "worker failed before signalling"

    def go(self):
        os.write(self._to_child, b"G")

    def result(self):
        data = b""
        while chunk := os.read(self._from_child, 65536):
            data += chunk
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 and data.startswith(b"R"), "worker failed"
        return json.loads(data[1:])

def together(*works):
    '''A worker per `work`, all started at the same moment, once each has signalled.'''
    workers = [Worker(work) for work in works]
    for worker in workers:
        worker.wait_for_signal()
    for worker in workers:
        worker.go()
    return [worker.result() for worker in workers]
"""

FOUR_AT_ONCE = """
async def four_at_once(worker):
    await ask(WARM)  # LiteLLM's lazy imports and client cache, before the start line
    worker.signal()
    await worker.wait()
    responses = await asyncio.gather(*(ask(BASE) for _ in range(4)))
    return {"contents": [r.choices[0].message.content for r in responses],
            "pool": fast_litellm.status()["connection_pool"]}

emit(together(four_at_once, four_at_once, four_at_once))
"""


def three_workers_four_requests_each(upstream, delay, env):
    code = PRELUDE + f"WARM, BASE = {upstream.base('0')!r}, {upstream.base(delay)!r}\n" + FOUR_AT_ONCE
    return run_python(code, {"AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "2", **env}, timeout=60)


@pytest.mark.timeout(60)
def test_the_per_host_limit_holds_for_all_workers_together(upstream, region_path):
    workers = three_workers_four_requests_each(upstream, "0.4", {"FAST_LITELLM_SHM": region_path})
    # 12 requests queued for 2 host-wide slots: served 2 at a time, none refused.
    assert upstream.served["0.4"] == 12
    assert upstream.max_in_flight["0.4"] == 2
    for worker in workers:
        assert worker["contents"] == ["hello"] * 4
        assert worker["pool"]["state"] == "on"
        assert worker["pool"]["calls"] == 5  # the warm-up and 4
        assert worker["pool"]["patched"] == ["AsyncClient._transport_for_url"]


@pytest.mark.timeout(60)
def test_flag_false_restores_per_process_limits(upstream, region_path):
    env = {"FAST_LITELLM_SHM": region_path, "FAST_LITELLM_RUST_CONNECTION_POOL": "false"}
    workers = three_workers_four_requests_each(upstream, "0.6", env)
    # Each worker's own aiohttp connector allows 2: the 3 workers send 6 at once.
    assert upstream.served["0.6"] == 12
    assert upstream.max_in_flight["0.6"] == 6
    for worker in workers:
        assert worker["contents"] == ["hello"] * 4
        assert worker["pool"]["state"] == "off"
        assert worker["pool"]["patched"] == []


@pytest.mark.timeout(60)
def test_slots_come_back_after_errors_cancellations_timeouts_and_streams(upstream, region_path):
    code = f"""
    SLOW, FAIL, STREAM = {upstream.base('0.6')!r}, {upstream.base('fail')!r}, {upstream.base('stream')!r}
    QUICK, HOLD = {upstream.base('0.2')!r}, {upstream.base('0.61')!r}
    CLOSED_PORT = "http://127.0.0.1:9/v1"

    def chain(error):
        messages = []
        while error is not None:
            messages.append(f"{{type(error).__name__}}: {{error}}")
            error = error.__cause__ or error.__context__
        return messages

    async def failing(base, **kwargs):
        try:
            await ask(base, max_retries=0, **kwargs)
        except Exception as error:
            return chain(error)
        raise AssertionError("no error")

    async def started(base):
        task = asyncio.ensure_future(ask(base))
        while in_use(base)[0] == 0:
            await asyncio.sleep(0.01)
        return task

    async def main():
        seen = {{}}
        seen["server_error"] = await failing(FAIL)
        seen["after_server_error"] = in_use(FAIL)
        seen["refused"] = await failing(CLOSED_PORT)
        seen["after_refused"] = in_use(CLOSED_PORT)

        task = await started(SLOW)
        seen["during_request"] = in_use(SLOW)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        seen["after_cancel"] = in_use(SLOW)

        stream = await ask(STREAM, stream=True)
        parts = [chunk.choices[0].delta.content async for chunk in stream]
        seen["streamed"] = "".join(p for p in parts if p)
        seen["after_stream_read"] = in_use(STREAM)

        stream = await ask(STREAM, stream=True)
        await stream.__anext__()
        seen["during_stream"] = in_use(STREAM)
        await stream.aclose()
        seen["after_stream_closed"] = in_use(STREAM)

        holder = await started(HOLD)  # same host as SLOW, its own count at the upstream
        began = time.monotonic()
        seen["waited_too_long"] = await failing(HOLD, timeout=0.3)
        seen["waited_s"] = time.monotonic() - began
        await holder
        seen["after_timeout"] = in_use(HOLD)

        responses = await asyncio.gather(*(ask(QUICK) for _ in range(3)))
        seen["queued"] = [r.choices[0].message.content for r in responses]
        seen["after_queue"] = in_use(QUICK)
        return seen

    emit(asyncio.run(main()))
    """
    seen = run_python(PRELUDE + textwrap.dedent(code), {"FAST_LITELLM_SHM": region_path, "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "1"})

    assert any("upstream broke" in message for message in seen["server_error"])
    assert seen["after_server_error"] == [0, 0]
    assert any("ConnectError" in message for message in seen["refused"])
    assert seen["after_refused"] == [0, 0]
    assert seen["during_request"] == [1, 1]
    assert seen["after_cancel"] == [0, 0]
    assert seen["streamed"] == "part0 part1 part2 part3 part4 "
    assert seen["after_stream_read"] == [0, 0]
    assert seen["during_stream"] == [1, 1]  # a stream holds its slot until it ends
    assert seen["after_stream_closed"] == [0, 0]
    # The second request waited its 0.3 s pool timeout for the one slot, then failed as a
    # timeout that says why, and never reached the server (served: the holder only; a
    # cancelled SLOW request may or may not have reached it, so it counts apart).
    assert "Timeout" in seen["waited_too_long"][0].split(":")[0]
    assert any(m.startswith("UpstreamPoolTimeout: fast_litellm: no free upstream slot") for m in seen["waited_too_long"])
    assert 0.3 <= seen["waited_s"] < 1.0
    assert upstream.served["0.61"] == 1
    assert seen["after_timeout"] == [0, 0]
    # Three at once for one slot: queued, served one at a time, none refused.
    assert seen["queued"] == ["hello"] * 3
    assert upstream.max_in_flight["0.2"] == 1
    assert seen["after_queue"] == [0, 0]


ONE_SLOT = """
async def hog(worker):
    await ask(QUICK)
    worker.signal()
    await worker.wait()
    await asyncio.gather(*(ask(SHORT) for _ in range(20)))  # a queue of 20 x 0.1 s for the slot
    return None

async def late(worker):
    await ask(QUICK)
    worker.signal()
    await worker.wait()
    while in_use(SHORT)[0] == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    began = time.monotonic()
    try:
        response = await ask(SHORT, timeout=1.5, max_retries=0)
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"content": response.choices[0].message.content, "waited_s": time.monotonic() - began}

async def holder(worker):
    await ask(QUICK)
    asyncio.ensure_future(ask(HANG))
    while in_use(HANG)[0] == 0:
        await asyncio.sleep(0.01)
    worker.signal()
    await asyncio.sleep(60)

async def after_the_kill(worker):
    await ask(QUICK)
    worker.signal()
    await worker.wait()
    began = time.monotonic()
    response = await ask(QUICK, timeout=10)
    return {"content": response.choices[0].message.content, "waited_s": time.monotonic() - began}

_, late_result = together(hog, late)

waiter = Worker(after_the_kill)
waiter.wait_for_signal()
killed = Worker(holder)
killed.wait_for_signal()
held = in_use(HANG)
os.kill(killed.pid, signal.SIGKILL)
os.waitpid(killed.pid, 0)
waiter.go()
emit({"late": late_result, "held": held, "after_the_kill": waiter.result()})
"""


@pytest.fixture(scope="module")
def one_slot():
    """Workers sharing one host-wide slot, in one interpreter: a worker with a long queue and one
    that comes later; then a worker killed while it holds the slot, and one that waits for it."""
    server = FakeUpstream()
    path = f"/dev/shm/fl-test-{uuid.uuid4().hex[:12]}"
    try:
        bases = f"QUICK, SHORT, HANG = {server.base('0')!r}, {server.base('0.1')!r}, {server.base('30')!r}\n"
        result = run_python(PRELUDE + bases + ONE_SLOT, {"FAST_LITELLM_SHM": path, "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "1"})
        yield result, server
    finally:
        server.close()
        if os.path.lexists(path):
            os.unlink(path)


@pytest.mark.timeout(60)
def test_a_worker_with_a_queue_does_not_starve_another(one_slot):
    result, server = one_slot
    # The hog's 20 queued requests take 2 s. Had it kept handing its freed slot to its own
    # queue, the late worker's request would have timed out after 1.5 s.
    assert result["late"].get("content") == "hello", result["late"]
    assert result["late"]["waited_s"] < 1.5
    assert server.served["0.1"] == 21
    assert server.max_in_flight["0.1"] == 1


@pytest.mark.timeout(60)
def test_a_killed_workers_slot_comes_back(one_slot):
    result, _ = one_slot
    assert result["held"] == [1, 1]
    assert result["after_the_kill"]["content"] == "hello"
    # The dead holder's slot is reaped by the first refused acquire, at most once a second.
    assert result["after_the_kill"]["waited_s"] < 3
