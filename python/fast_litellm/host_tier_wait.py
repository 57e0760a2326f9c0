"""The host tier's timeout on a Redis call, counted in the event loop's responsive time.

A plain `asyncio.wait_for` also counts the time the worker's own loop was too busy to read a
reply that had arrived: on a loaded host (a worker with dozens of requests in flight, more
workers than cores) a call Redis answered in a millisecond "outlasts" 250 ms, and the down
policy then admits beside Redis's grants (seen in CI: 31 admitted at rpm 30 over three
hosts). Here a wait that expires first measures how late the loop is running; while the loop
lags, the wait is extended, up to `MAX_EXTENSIONS` times the timeout in all, so a hung Redis
still never stalls a request for long."""

import asyncio
from typing import Awaitable, Callable, Optional, TypeVar

T = TypeVar("T")

#: A loop that runs later than timeout / LAG_FRACTION is lagging: the wait is extended.
LAG_FRACTION = 8
#: The longest wait, in timeouts, however late the loop runs.
MAX_EXTENSIONS = 8


async def within_timeout(call: Awaitable[T], timeout_s: Optional[float],
                         on_extended: Optional[Callable[[], None]] = None) -> T:
    """`call`'s result, or `asyncio.TimeoutError` (the call cancelled) once it has had
    `timeout_s` of a responsive loop, or MAX_EXTENSIONS × timeout_s in all. `on_extended` is
    called for each extension. `timeout_s` None waits without limit, as `wait_for` does."""
    if timeout_s is None:
        return await call
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(call)
    begun = loop.time()
    deadline = begun + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=max(0.0, deadline - loop.time()))
            if done:
                return task.result()
            woke = loop.time()
            # One more turn of the loop: how long it takes is how busy the loop is, and a reply
            # read in the turn that fired the timer resumes the call in it.
            await asyncio.sleep(0)
            if task.done():
                return task.result()
            now = loop.time()
            lag = max(woke - deadline, now - woke)
            if lag < timeout_s / LAG_FRACTION or now - begun >= timeout_s * MAX_EXTENSIONS:
                raise asyncio.TimeoutError()
            if on_extended is not None:
                on_extended()
            deadline = min(now + timeout_s, begun + timeout_s * MAX_EXTENSIONS)
    finally:
        if not task.done():
            task.cancel()
