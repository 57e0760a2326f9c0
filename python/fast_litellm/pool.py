"""connection_pool: LiteLLM's upstream connection limits, host-wide.

What LiteLLM does, per process
    Every async upstream request of LiteLLM 1.106.2 goes through an `httpx.AsyncClient` whose
    transport is a `LiteLLMAiohttpTransport` (llms/custom_httpx/aiohttp_transport.py:167): the
    OpenAI and Azure SDK clients (`BaseOpenAILLM._get_async_http_client`,
    llms/openai/common_utils.py:305) and every `AsyncHTTPHandler` (the other providers, the
    logging callbacks). The transport sends over an aiohttp `TCPConnector(limit=
    AIOHTTP_CONNECTOR_LIMIT, limit_per_host=AIOHTTP_CONNECTOR_LIMIT_PER_HOST)`
    (http_handler.py:1335-1347, proxy_server.py:1312-1320; constants.py:331-332, defaults 1000
    and 500). A connector holds its limits in one process, so with N workers a host sends up
    to N x 500 requests at once to one upstream.

What this component does
    Each of those requests holds one slot of its upstream, key `fast_litellm:upstream:<scheme>://
    <host>:<port>` (at most AIOHTTP_CONNECTOR_LIMIT_PER_HOST), and one slot of
    `fast_litellm:upstream:*` (at most AIOHTTP_CONNECTOR_LIMIT), in the shared region: taken
    before the request is sent, given back when its response body is closed, read to its end,
    or garbage-collected unclosed (aiohttp gives its connection back at the same points), and
    at once when the request fails or is cancelled. A streamed completion holds its slots until
    the stream ends. The limits are LiteLLM's own variables, so the host as a whole allows what
    one worker allowed before; a value <= 0 means what it means to LiteLLM (then aiohttp's
    default applies: no per-host cap, 100 in total). Slots of a killed worker come back by
    themselves (the region reaps dead holders within about a second).

Waiting
    A pool queues, it does not refuse: when no slot is free (or other requests already wait
    for one) the request waits, in arrival order among the requests of its process. A slot
    that a process gives back goes at once to that process's waiters when no other process
    waits; otherwise the waiting processes' pollers, which try every 10 ms, share the freed
    slots about evenly, so no worker starves while another has a queue. The wait is bounded by
    the request's pool timeout (httpx `Timeout.pool`), the bound LiteLLM gives aiohttp's own
    wait for a free connection (`ClientTimeout(connect=timeout.pool)`,
    aiohttp_transport.py:395), else by `litellm.request_timeout`. Then `UpstreamPoolTimeout`, an
    `httpx.PoolTimeout` whose message names the upstream and the limit: the OpenAI SDK and
    LiteLLM handle it as they handle aiohttp's timeout today (a retried timeout). A full region
    table (`RegionFullError`) follows FAST_LITELLM_SHM_FULL_POLICY: `open` sends the request
    untracked, `closed` fails it with that error.

Where it hooks, and why there
    `httpx.AsyncClient._transport_for_url` (httpx 0.28 _client.py:1474) is called once per
    request, right before `transport.handle_async_request`. Its stand-in returns, for LiteLLM's
    aiohttp transport, a thin transport that holds the slots around the same transport; any
    other transport (LiteLLM on httpx, a caller's own `litellm.aclient_session`, other
    libraries' clients) is declined and used as before. The request itself thus runs outside
    the accelerated call: the guard of `_acceleration` re-runs the original on an exception,
    which must never send a request twice.

Not covered
    Sync calls (`litellm.completion`: httpx.Client, no aiohttp limit); LiteLLM on its httpx
    transport (DISABLE_AIOHTTP_TRANSPORT, LITELLM_HTTP2, litellm.force_ipv4), where LiteLLM sets
    no per-host limit either; websockets. Per-deployment caps are the router component's
    (`max_parallel_requests` slots). LiteLLM keeps no connection state in Redis, so this
    component works the same with Redis configured.

FAST_LITELLM_RUST_CONNECTION_POOL=false restores LiteLLM's per-process limits.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Deque, Dict, List, Optional, Tuple

import httpx

from . import shm
from ._acceleration import Component, Decline

if TYPE_CHECKING:
    from .shm import Region

__all__ = ["UpstreamPool", "UpstreamPoolTimeout", "TOTAL_KEY", "install", "upstream_key"]

KEY_PREFIX = "fast_litellm:upstream:"
TOTAL_KEY = KEY_PREFIX + "*"
WAITING_SUFFIX = ":waiting"
#: How often a process with waiting requests tries for slots freed by other processes.
POLL_S = 0.01
#: Max slots of a waiting key: one per waiting process and event loop, never a limit.
_WAITING_MAX = 1 << 30
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: (region key, max slots) pairs a request holds together.
Slots = Tuple[Tuple[str, int], ...]


class UpstreamPoolTimeout(httpx.PoolTimeout):
    """No host-wide slot of the upstream came free within the request's pool timeout."""


def upstream_key(url: httpx.URL) -> str:
    """The region key of an upstream: scheme, host and port, as aiohttp pools connections."""
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
    return f"{KEY_PREFIX}{url.scheme}://{url.host}:{port}"


class _Waiters:
    """This process's requests waiting for the slots of one upstream on one event loop, oldest
    first. While any wait, the process holds a slot of `waiting_key`: other processes see it
    waits (and the region reaps it with the process)."""

    __slots__ = ("slots", "waiting_key", "futures", "poller")

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.waiting_key = slots[0][0] + WAITING_SUFFIX
        self.futures: Deque["asyncio.Future[None]"] = deque()
        self.poller: Optional["asyncio.Task[None]"] = None

    def head(self) -> Optional["asyncio.Future[None]"]:
        while self.futures and self.futures[0].done():  # timed out or cancelled
            self.futures.popleft()
        return self.futures[0] if self.futures else None


class _Lease:
    """The slots one request holds; `release` gives them back once, whoever calls it first."""

    __slots__ = ("_pool", "_slots")

    def __init__(self, pool: "UpstreamPool", slots: Slots) -> None:
        self._pool = pool
        self._slots: Optional[Slots] = slots

    def release(self, hand_over: bool = True) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            self._pool.release(slots, hand_over)


class _SlotStream(httpx.AsyncByteStream):
    """A response body that gives its request's slots back when it ends or is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, lease: _Lease) -> None:
        self._stream = stream
        self._lease = lease
        # A body dropped unread and unclosed: aiohttp's ClientResponse.__del__ frees its
        # connection, this frees the slots. Without handing them over: a collection can run
        # in the middle of the event loop's own use of the wait queues; the pollers see them.
        weakref.finalize(self, lease.release, False)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        finally:
            self._lease.release()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._lease.release()


class _SlotTransport(httpx.AsyncBaseTransport):
    """LiteLLM's transport for one request, with the request's slots held around it."""

    def __init__(self, pool: "UpstreamPool", transport: httpx.AsyncBaseTransport) -> None:
        self._pool = pool
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lease = await self._pool.acquire(request)
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException:
            lease.release()
            raise
        response.stream = _SlotStream(response.stream, lease)  # type: ignore[arg-type]
        return response


class UpstreamPool:
    """Host-wide slots per upstream and in total, with an async queue per process."""

    def __init__(self, region: "Region", per_host: int, total: int, default_wait_s: Callable[[], float]) -> None:
        """per_host, total: slots host-wide (0: no cap); default_wait_s: the wait of a request
        without a pool timeout, read at each wait (LiteLLM's may be set after start-up)."""
        self.region = region
        self.per_host = per_host
        self.total = total
        self.default_wait_s = default_wait_s
        self._waiting: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, _Waiters]]" = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def slots_for(self, url: httpx.URL) -> Slots:
        slots: List[Tuple[str, int]] = []
        if self.per_host > 0:
            slots.append((upstream_key(url), self.per_host))
        if self.total > 0:
            slots.append((TOTAL_KEY, self.total))
        return tuple(slots)

    def _try_acquire(self, slots: Slots) -> bool:
        taken: List[str] = []
        try:
            for key, limit in slots:
                if not self.region.acquire(key, limit):
                    break
                taken.append(key)
            else:
                return True
        except BaseException:
            self._release_keys(taken)
            raise
        self._release_keys(taken)
        return False

    def _release_keys(self, keys: List[str]) -> None:
        for key in reversed(keys):
            self.region.release(key)

    def _loop_waiters(self, loop: asyncio.AbstractEventLoop) -> Dict[str, _Waiters]:
        with self._lock:
            waiting = self._waiting.get(loop)
            if waiting is None:
                waiting = self._waiting[loop] = {}
            return waiting

    async def acquire(self, request: httpx.Request) -> _Lease:
        """The slots of the request's upstream, waiting for them in arrival order up to the
        request's pool timeout."""
        slots = self.slots_for(request.url)
        loop = asyncio.get_running_loop()
        waiting = self._loop_waiters(loop)
        name = slots[0][0]
        waiters = waiting.get(name)
        if waiters is None:
            waiters = waiting[name] = _Waiters(slots)
        # Straight in only when nobody on the host waits: a free slot is theirs to take.
        if waiters.head() is None and not self.region.slots_in_use(waiters.waiting_key) and self._try_acquire(slots):
            return _Lease(self, slots)
        if waiters.poller is None:
            self.region.acquire(waiters.waiting_key, _WAITING_MAX)
            waiters.poller = loop.create_task(self._poll(waiters))
        granted: "asyncio.Future[None]" = loop.create_future()
        waiters.futures.append(granted)
        wait_s = self._wait_s(request)
        timer = loop.call_later(wait_s, self._expire, granted, request.url, slots, wait_s)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.release(slots)  # granted just as the wait ended
            raise
        finally:
            timer.cancel()
        return _Lease(self, slots)

    def _wait_s(self, request: httpx.Request) -> float:
        timeout = request.extensions.get("timeout")
        pool = timeout.get("pool") if isinstance(timeout, dict) else None
        return float(pool) if pool is not None else self.default_wait_s()

    def _expire(self, granted: "asyncio.Future[None]", url: httpx.URL, slots: Slots, wait_s: float) -> None:
        if granted.done():
            return
        # Which limit was the bottleneck, as it stands now.
        full = [f"all {limit} slots of {key!r}" for key, limit in slots if self.region.slots_in_use(key) >= limit]
        origin = upstream_key(url)[len(KEY_PREFIX):]
        granted.set_exception(
            UpstreamPoolTimeout(
                f"fast_litellm: no free upstream slot for {origin} within the pool timeout of {wait_s:g} s: "
                f"{' and '.join(full) or 'the slots'} in use by this host's workers "
                "(AIOHTTP_CONNECTOR_LIMIT_PER_HOST, AIOHTTP_CONNECTOR_LIMIT)"
            )
        )

    def _grant(self, waiters: _Waiters) -> bool:
        """Gives the slots to the oldest waiter if they are free; whether it did."""
        head = waiters.head()
        if head is None or not self._try_acquire(waiters.slots):
            return False
        head.set_result(None)
        waiters.futures.popleft()
        return True

    async def _poll(self, waiters: _Waiters) -> None:
        """Takes free slots for this process's waiters while any wait. The pollers of all
        waiting processes try at the same pace, so they share the freed slots about evenly."""
        try:
            while waiters.head() is not None:
                if not self._grant(waiters):
                    await asyncio.sleep(POLL_S)
        finally:
            waiters.poller = None
            self.region.release(waiters.waiting_key)

    def release(self, slots: Slots, hand_over: bool = True) -> None:
        """Gives the slots back and, with hand_over, at once to the requests of this thread's
        event loop that wait for them, unless other processes wait too (then the pollers
        share them)."""
        self._release_keys([key for key, _ in slots])
        if not hand_over:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside any loop: the pollers will see the slots
            return
        waiting = self._waiting.get(loop)
        if waiting:
            for waiters in list(waiting.values()):
                if waiters.head() is None or self.region.slots_in_use(waiters.waiting_key) > 1:
                    continue
                while self._grant(waiters):
                    pass


def _aiohttp_defaults() -> Tuple[int, int]:
    """(limit, limit_per_host) of a TCPConnector built without them."""
    from aiohttp import TCPConnector

    parameters = inspect.signature(TCPConnector.__init__).parameters
    return int(parameters["limit"].default), int(parameters["limit_per_host"].default)


def limits_from_litellm() -> Tuple[int, int]:
    """(per_host, total) host-wide: the limits LiteLLM gives each aiohttp connector."""
    from litellm import constants

    default_total, default_per_host = _aiohttp_defaults()
    per_host = int(constants.AIOHTTP_CONNECTOR_LIMIT_PER_HOST)
    total = int(constants.AIOHTTP_CONNECTOR_LIMIT)
    return (per_host if per_host > 0 else default_per_host, total if total > 0 else default_total)


def install(c: Component) -> None:
    region = shm.region()
    if region is None:
        raise Decline("no shared region (FAST_LITELLM_SHM=off)")
    import litellm
    from litellm.llms.custom_httpx.aiohttp_transport import LiteLLMAiohttpTransport

    per_host, total = limits_from_litellm()
    if per_host <= 0 and total <= 0:
        raise Decline("LiteLLM's aiohttp connector has no connection limit to share")
    pool = UpstreamPool(region, per_host, total, lambda: float(getattr(litellm, "request_timeout")))
    transport_for_url: Callable[[httpx.AsyncClient, httpx.URL], httpx.AsyncBaseTransport] = (
        httpx.AsyncClient._transport_for_url
    )

    def slot_transport_for_url(client: httpx.AsyncClient, url: httpx.URL) -> Any:
        transport = transport_for_url(client, url)
        if not isinstance(transport, LiteLLMAiohttpTransport):
            raise Decline("not LiteLLM's aiohttp transport")
        return _SlotTransport(pool, transport)

    c.patch(httpx.AsyncClient, "_transport_for_url", slot_transport_for_url)
